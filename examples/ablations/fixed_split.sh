#!/usr/bin/env bash
# Table 2 ablation "fixed split (alternate L/6 and L/2 by step instead of U[L/6, L/2])": SKPO with +algorithm.skpo.split_rule=fixed, all else as the paper's SKPO run.
# BASE_MODEL=llama3.2-3b-instruct (default) or qwen2.5-math-7b picks the model preset.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100).
# Extra arguments are passed to verl last.
set -euo pipefail
# Variables of examples/common.sh (BASE_MODEL, MODEL_PATH, DATA_DIR, N_GPUS, NNODES, ...) can be set in the environment.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
EXPERIMENT=${EXPERIMENT:-skpo_fixed_split_$BASE_MODEL}
add_paper_settings
add_skpo_settings
add +algorithm.skpo.split_rule=fixed
run_verl "$@"
