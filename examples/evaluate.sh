#!/usr/bin/env bash
# Evaluate one checkpoint with the paper's protocol and add it to the Table 1 results file.
# Hardware: one GPU (vLLM) for `generate`; scoring and tables run on CPU.
# MODEL_PATH must be a Hugging Face checkpoint (merge a verl FSDP checkpoint first with
# `python -m verl.model_merger merge --backend fsdp --local_dir <ckpt>/actor --target_dir <out>`).
set -euo pipefail
MODEL_PATH=${MODEL_PATH:?set MODEL_PATH to a merged checkpoint or a model id}
DATA_DIR=${DATA_DIR:-$HOME/data/skpo}
BASE_MODEL_NAME=${BASE_MODEL_NAME:-Llama-3.2-3B-Instruct}   # table group
METHOD=${METHOD:-SKPO}                                      # table row
PROMPT_FORMAT=${PROMPT_FORMAT:-chat}                        # plain for Qwen2.5-Math-7B
OUT_DIR=${OUT_DIR:-eval}
TP=${TP:-1}

mkdir -p "$OUT_DIR"
generations="$OUT_DIR/${BASE_MODEL_NAME}_${METHOD}.jsonl"
skpo-evaluate generate --model "$MODEL_PATH" --data-dir "$DATA_DIR" --generations "$generations" \
  --prompt-format "$PROMPT_FORMAT" --tensor-parallel-size "$TP"
skpo-evaluate score --generations "$generations" --base-model "$BASE_MODEL_NAME" --method "$METHOD" \
  --results "$OUT_DIR/results.json"
