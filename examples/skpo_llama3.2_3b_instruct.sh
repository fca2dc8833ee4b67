#!/usr/bin/env bash
# SKPO on Llama-3.2-3B-Instruct with the paper's settings (Table 1; docs/algorithm.md, Training setup): dapo-math-17k,
# 500 steps x 128 prompts, G = 8, lr 1e-6.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100); 4 x 80 GB also fits (set N_GPUS=4).
# Instruct model: prompts go through the model's own chat template.
# Extra arguments are passed to verl last, e.g. `trainer.total_training_steps=10`.
set -euo pipefail
# Variables of examples/common.sh (BASE_MODEL, MODEL_PATH, DATA_DIR, N_GPUS, NNODES, ...) can be set in the environment.
BASE_MODEL=llama3.2-3b-instruct
EXPERIMENT=${EXPERIMENT:-skpo_llama3.2_3b_instruct}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
add_paper_settings
add_skpo_settings
run_verl "$@"
