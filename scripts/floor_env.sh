#!/usr/bin/env bash
# The floor environment of `make test`: the oldest transformers pyproject.toml admits (with the
# huggingface-hub and tokenizers it needs, and trl 0.22.2: LLaMA-Factory 0.9.5's trl 0.24 needs
# transformers >= 4.56.1, 0.22.x accepts 4.55), installed into .venv/floor and put in front of .venv
# with PYTHONPATH. Everything else (torch, LLaMA-Factory, ...) is .venv's. Idempotent: a second run
# installs nothing. Run by scripts/setup.sh; scripts/floor_test.sh runs the core tests there.
set -euo pipefail
cd "$(dirname "$0")/.."

floor=.venv/floor
pins=(transformers==4.55.0 huggingface-hub==0.36.2 tokenizers==0.21.4 trl==0.22.2)  # the floor (see pyproject.toml)
stamp="$floor/.pins"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pins[*]}" ]; then
  exit 0
fi
started=$(date +%s)
rm -rf "$floor"
.venv/bin/python -m pip install --quiet --no-deps --target "$floor" "${pins[@]}"
echo "${pins[*]}" > "$stamp"
echo "floor environment: ${pins[*]} in $floor ($(( $(date +%s) - started )) s, $(du -sh "$floor" | cut -f1))"
