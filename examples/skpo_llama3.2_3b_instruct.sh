#!/usr/bin/env bash
# SKPO on Llama-3.2-3B-Instruct with the paper's settings (Table 1, SKPO.md §6): dapo-math-17k,
# 500 steps x 128 prompts, G = 8, lr 1e-6.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100); 4 x 80 GB also fits (set N_GPUS=4).
# Instruct model: prompts go through the model's own chat template.
# Extra arguments are passed to verl last, e.g. `trainer.total_training_steps=10`.
set -euo pipefail
BASE_MODEL=llama3.2-3b-instruct
MODEL_PATH=${MODEL_PATH:-meta-llama/Llama-3.2-3B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/skpo}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
EXPERIMENT=${EXPERIMENT:-skpo_llama3.2_3b_instruct}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
add_paper_settings
add_skpo_settings
run_verl "$@"
