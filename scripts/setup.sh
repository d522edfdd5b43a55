#!/usr/bin/env bash
# Sets up everything `make demo` and `make test` need, idempotently:
#   1. apt toolchains + bubblewrap (scripts/install-toolchains.sh),
#   2. .venv with this project installed editable (with its dev extra) at the exact versions of
#      constraints.txt (pyproject.toml declares ranges),
#   3. the pinned TypeScript compiler for MultiPL-E TS, project-local in .toolchains/ (npm, with its
#      cache there too: no global npm state),
#   4. VLMEvalKit's own environment .venv/vlmeval-kit (the [vlmeval] extra; dft-mm eval vlm install-kit),
#   5. the floor environment .venv/floor: the oldest transformers pyproject.toml admits (scripts/floor_env.sh).
# A stamp keyed on the install inputs makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.dft_mm_setup
key=$(cat pyproject.toml constraints.txt scripts/setup.sh scripts/install-toolchains.sh scripts/hatch_build.py scripts/floor_env.sh | sha256sum | cut -c1-16)
typescript=5.9.3  # MultiPL-E installs the npm release of its day; 5.x has the ES2023 library
tsc_dir=.toolchains/typescript
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -f "$tsc_dir/node_modules/typescript/package.json" ]; then
  exit 0
fi

bash scripts/install-toolchains.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]' -c constraints.txt  # ranges in pyproject, exact versions here
if ! grep -qs "\"version\": \"$typescript\"" "$tsc_dir/node_modules/typescript/package.json"; then
  npm install --silent --no-audit --no-fund --prefix "$tsc_dir" --cache "$tsc_dir/.npm-cache" "typescript@$typescript"
fi
# VLMEvalKit in its own environment (.venv/vlmeval-kit): its pins differ from LlamaBoard's
.venv/bin/python -m dft_mm eval vlm install-kit --quiet
bash scripts/floor_env.sh  # the floor environment of make test (.venv/floor)
echo "$key" > "$stamp"
echo "setup: .venv ready"
