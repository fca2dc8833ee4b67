#!/usr/bin/env bash
# SKPO on Qwen2.5-Math-7B with the paper's settings (Table 1; docs/algorithm.md, Training setup): dapo-math-17k,
# 500 steps x 128 prompts, G = 8, lr 1e-6.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100); FSDP actor, vLLM rollout with TP=2.
# Base model: prompts are rendered plain (no chat roles). Its context is 4096 tokens, less
# than the longest [s, q] (2560) plus a 3072-token answer, so answers are capped at the
# context left after their [s, q] (at least 1536 tokens; docs/reproduction.md).
# Extra arguments are passed to verl last, e.g. `trainer.total_training_steps=10`.
set -euo pipefail
# Variables of examples/common.sh (BASE_MODEL, MODEL_PATH, DATA_DIR, N_GPUS, NNODES, ...) can be set in the environment.
BASE_MODEL=qwen2.5-math-7b
EXPERIMENT=${EXPERIMENT:-skpo_qwen2.5_math_7b}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
add_paper_settings
add_skpo_settings
add +algorithm.skpo.clamp_answers_to_context=true
run_verl "$@"
