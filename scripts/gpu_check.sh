#!/usr/bin/env bash
# scripts/gpu_check.sh OUT_DIR: everything dft_mm claims on a GPU, measured in one run.
#
# For a machine with one NVIDIA GPU and no network (about 8 minutes on an H200). Uses the
# machine's own torch; Python packages it lacks travel as wheels in .whl/ (scripts/gpu_wheels.sh
# downloads them) and are installed into a private folder, nothing system-wide. Writes under
# OUT_DIR: one JSON(L) file per section, the section logs, and summary.md (tables plus every
# target of docs/benchmarks.md checked). Each section has its own time limit; a failed section
# is recorded and the others still run. Without CUDA it stops at once with exit code 3.
#
#   1. pytest -m gpu tests/test_fused_gpu.py (the fused head on CUDA, both backends)
#   2. dft-mm bench head, N = 16384 and 65536, H = 3584, V = 152064, bf16: triton, chunked torch,
#      naive (16k only), Liger fused CE plain and with token scaling, the bare GEMMs
#   3. both fused backends at 16k with fp32 logits (--fp32-logits), and a chunk-size sweep
#   4. dft-mm bench step: a whole training step of a Qwen2.5-Coder-3B-shaped model, 8k and 16k
#      tokens, gradient checkpointing, bf16: HF CE, LLaMA-Factory use_dft_loss, Liger fused CE,
#      dft_mm fused (torch and triton backends)
#   5. one real llamafactory-cli train of a tiny model with use_liger_kernel: true and sft_loss: dft,
#      fused against dft_fused: false
#   6. vLLM generation smoke (code and VLM) when vllm is importable
set -uo pipefail

OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DISABLE_VERSION_CHECK=1 WANDB_DISABLED=true
STATUS="$OUT/sections.jsonl"
: > "$STATUS"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  SITE=${GPU_CHECK_SITE:-/tmp/dft_mm_gpu_site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    > "$OUT/wheels.log" 2>&1 || { echo "gpu_check: installing .whl/ failed (see $OUT/wheels.log)"; exit 2; }
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
  export PATH="$SITE/bin:$PATH"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"

if ! "$PY" - <<'EOF' > "$OUT/env.json" 2> "$OUT/env.log"
import json, platform, sys
import torch
if not torch.cuda.is_available():
    sys.exit(3)
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0))}
for name in ("triton", "transformers", "liger_kernel", "llamafactory", "vllm"):
    try:
        info[name] = getattr(__import__(name), "__version__", "?")
    except Exception as err:  # a missing package is a fact to record, not a failure here
        info[name] = f"missing: {type(err).__name__}"
print(json.dumps(info))
EOF
then
  echo "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); this script needs one GPU." >&2
  echo "gpu_check: the CPU-side checks are in 'make test' (GPU tests are skipped there)." >&2
  exit 3
fi

# section NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, record the outcome
section() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  echo "gpu_check: $name (limit ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '{"section": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" $((SECONDS - start)) >> "$STATUS"
}

BENCH=("$PY" -m dft_mm bench head --device cuda --dtype bfloat16 --hidden 3584 --vocab 152064)
section gpu_tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" tests/test_fused_gpu.py
section head_16k 100 "${BENCH[@]}" --tokens 16384 --out "$OUT/head_16k.jsonl"
section head_16k_fp32_logits 60 "${BENCH[@]}" --tokens 16384 --methods triton,chunked_torch --fp32-logits \
  --out "$OUT/head_16k_fp32_logits.jsonl"
section head_64k 100 "${BENCH[@]}" --tokens 65536 --methods triton,chunked_torch,liger_ce,liger_dft,gemms \
  --out "$OUT/head_64k.jsonl"
section head_chunks 100 "${BENCH[@]}" --tokens 16384 --methods triton,chunked_torch --no-reference \
  --chunk-sizes 128,256,512,1024,2048 --out "$OUT/head_chunks.jsonl"
section step 150 "$PY" -m dft_mm bench step --device cuda --shape qwen2.5-coder-3b --tokens 8192,16384 \
  --out "$OUT/step.jsonl"
section llamafactory_liger 90 "$PY" -m dft_mm.bench.lf_check --out "$OUT/llamafactory_liger.json" \
  --use-liger-kernel --work /tmp/dft_mm_gpu_lf
section vllm 60 "$PY" -m dft_mm.bench.vllm_smoke --out "$OUT/vllm.json" --work /tmp/dft_mm_gpu_vllm

"$PY" -m dft_mm.bench.summary "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
