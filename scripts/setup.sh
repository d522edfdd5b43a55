#!/usr/bin/env bash
# Sets up everything `make demo` and `make test` need, idempotently:
#   1. apt toolchains + bubblewrap (scripts/install-toolchains.sh),
#   2. .venv with this project installed editable (with its dev extra),
#   3. the pinned TypeScript compiler for MultiPL-E TS, project-local in .toolchains/ (npm, with its
#      cache there too: no global npm state),
#   4. VLMEvalKit's own environment .venv/vlmeval-kit (the [vlmeval] extra; dft-mm eval vlm install-kit).
# A stamp keyed on the install inputs makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.dft_mm_setup
key=$(cat pyproject.toml scripts/setup.sh scripts/install-toolchains.sh scripts/hatch_build.py | sha256sum | cut -c1-16)
typescript=5.9.3  # MultiPL-E installs the npm release of its day; 5.x has the ES2023 library
tsc_dir=.toolchains/typescript
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -f "$tsc_dir/node_modules/typescript/package.json" ]; then
  exit 0
fi

bash scripts/install-toolchains.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
if ! grep -qs "\"version\": \"$typescript\"" "$tsc_dir/node_modules/typescript/package.json"; then
  npm install --silent --no-audit --no-fund --prefix "$tsc_dir" --cache "$tsc_dir/.npm-cache" "typescript@$typescript"
fi
# VLMEvalKit in its own environment (.venv/vlmeval-kit): its pins differ from LlamaBoard's
.venv/bin/python -m dft_mm eval vlm install-kit --quiet
echo "$key" > "$stamp"
echo "setup: .venv ready"
