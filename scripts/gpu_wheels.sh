#!/usr/bin/env bash
# scripts/gpu_wheels.sh [DIR]: download (into DIR, default .whl/) the wheels scripts/gpu_check.sh needs
# on a GPU machine with no network whose image has torch, triton, numpy, pandas, accelerate, peft and
# the other common packages but not LLaMA-Factory and its own needs (Python 3.12, x86_64; PyAV, for
# videos only, is left out: 40 MB of the 64 MiB a call may carry). The
# versions are the ones this project is tested with (pyproject.toml and its resolved dev set).
# Run it where the package index is reachable; gpu_check.sh installs DIR into a private folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
mkdir -p "$DIR"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PACKAGES=(
  llamafactory==0.9.5 transformers==5.5.4 tokenizers==0.22.2 accelerate==1.11.0 peft==0.18.1
  datasets==4.0.0 trl==0.24.0 liger-kernel==0.8.5 dill==0.3.8 multiprocess==0.70.16 torchdata==0.11.0
  omegaconf==2.4.0 antlr4-python3-runtime==4.13.2 fire==0.7.1 termcolor==3.3.0 tyro==0.8.14 docstring-parser==0.18.0 shtab==1.13.0
)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DIR" "${PACKAGES[@]}"
du -sh "$DIR"
