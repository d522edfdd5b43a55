#!/usr/bin/env bash
# `make test`'s floor run: the core tests again with the oldest transformers pyproject.toml admits
# (.venv/floor, scripts/floor_env.sh) in front of .venv: the losses, the patch, the exactness against
# LLaMA-Factory's own losses, real `llamafactory-cli train` runs of the tiny text and VL models at
# every level, the fused head against the unfused one, and one ZeRO-3 run. Fails `make test` if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/floor_env.sh
export PYTHONPATH="$PWD/.venv/floor${PYTHONPATH:+:$PYTHONPATH}"
.venv/bin/python -c "import torch, transformers, llamafactory; print(f'floor run: transformers {transformers.__version__}, torch {torch.__version__}, llamafactory {llamafactory.__version__}')"
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=5 \
  tests/test_losses.py tests/test_patch.py tests/test_objectives.py tests/test_train_e2e.py \
  tests/test_fused_integration.py "tests/test_engines.py::test_fused_dft_under_each_engine_equals_the_unfused_head[zero3]"
