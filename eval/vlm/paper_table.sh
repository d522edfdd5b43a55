#!/usr/bin/env bash
# The paper's multimodal table (MathVerse Vision Only / Intensive / Dominant / Overall, MathVision,
# WeMath) for Qwen2.5-VL-3B base / SFT / DFT, end to end on one GPU, with VLMEvalKit itself:
#   1. predictions with the kit's Qwen2VLChat (greedy, the paper's pixel bounds),
#   2. a local judge (vLLM, OpenAI-compatible) and the kit's judged scoring,
#   3. dft-mm report: the three rows beside eval/reference/vlm.csv.
# Run from the repository root after `make setup` and the two trainings:
#   dft-mm train data_configs/qwen2_5vl_3b_wethink_sft.yaml
#   dft-mm train data_configs/qwen2_5vl_3b_wethink_dft.yaml
# Settings (environment variables, defaults below): BASE, SFT, DFT (checkpoints), JUDGE_MODEL
# (served by vLLM; or JUDGE_MODEL=gpt-4o-mini with OPENAI_API_KEY and JUDGE_URL= for the paper's
# own judge), WORK, OUT, ATTN (sdpa without flash-attn), LMUData (the benchmark TSVs).
set -euo pipefail

BASE=${BASE:-Qwen/Qwen2.5-VL-3B-Instruct}
SFT=${SFT:-outputs/qwen2_5vl_3b_wethink/sft}
DFT=${DFT:-outputs/qwen2_5vl_3b_wethink/dft}
JUDGE_MODEL=${JUDGE_MODEL:-Qwen/Qwen2.5-72B-Instruct-AWQ}
JUDGE_URL=${JUDGE_URL-http://127.0.0.1:8000/v1}
WORK=${WORK:-vlmeval_work}
OUT=${OUT:-paper_table}
ATTN=${ATTN:-sdpa}
DATASETS=MathVerse_MINI,MathVision,WeMath
export LMUData=${LMUData:-$HOME/LMUData}
DFT_MM=(.venv/bin/python -m dft_mm)

# the benchmark TSVs, as VLMEvalKit stores them (checked against its MD5s on load)
mkdir -p "$LMUData"
fetch() { [ -f "$LMUData/$1.tsv" ] || wget -O "$LMUData/$1.tsv" "$2"; }
fetch MathVerse_MINI http://opencompass.openxlab.space/utils/benchmarks/MathVerse/MathVerse_MINIV.tsv
fetch MathVision https://opencompass.openxlab.space/utils/VLMEval/MathVision.tsv
fetch WeMath https://opencompass.openxlab.space/utils/VLMEval/WeMath.tsv

# name=checkpoint=system prompt: SFT/DFT were trained with the WeThink prompt; the base model
# is asked with its own default (no system turn)
MODELS=("qwen2_5vl_3b_base=$BASE=none" "qwen2_5vl_3b_sft=$SFT=wethink" "qwen2_5vl_3b_dft=$DFT=wethink")

# 1. predictions (the GPU holds only the policy model)
for entry in "${MODELS[@]}"; do
  IFS== read -r name model prompt <<<"$entry"
  "${DFT_MM[@]}" eval vlm vlmevalkit --model "$model" --model-name "$name" --datasets "$DATASETS" \
    --work-dir "$WORK" --mode infer --system-prompt "$prompt" --attn-implementation "$ATTN"
done

# 2. the judge, then the kit's judged scoring of those predictions (no policy model loaded)
judge_flags=(--judge "$JUDGE_MODEL")
if [ -n "$JUDGE_URL" ]; then
  .venv/vlmeval-kit/bin/python -m vllm.entrypoints.openai.api_server --model "$JUDGE_MODEL" --port 8000 \
    --max-model-len 16384 > "$WORK/judge_server.log" 2>&1 &
  judge_pid=$!
  trap 'kill $judge_pid' EXIT
  until curl -sf "${JUDGE_URL%/v1}/v1/models" > /dev/null; do sleep 10; done
  judge_flags+=(--judge-base-url "$JUDGE_URL")
fi
runs=()
for entry in "${MODELS[@]}"; do
  IFS== read -r name model prompt <<<"$entry"
  "${DFT_MM[@]}" eval vlm vlmevalkit --model "$model" --model-name "$name" --datasets "$DATASETS" \
    --work-dir "$WORK" --mode eval --system-prompt "$prompt" "${judge_flags[@]}" --out "$OUT/$name"
  runs+=(--run "$name=$OUT/$name")
done

# 3. one report: the three rows and the paper's
"${DFT_MM[@]}" report "${runs[@]}" --out "$OUT/report"
