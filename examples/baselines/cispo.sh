#!/usr/bin/env bash
# CISPO baseline of Table 1 with the paper's shared settings (SKPO.md §6); what is specific to
# CISPO is in add_baseline_settings in examples/common.sh (docs/reproduction.md explains it).
# BASE_MODEL=qwen2.5-math-7b or llama3.2-3b-instruct (default) picks the model preset.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100).
# Extra arguments are passed to verl last.
set -euo pipefail
BASE_MODEL=${BASE_MODEL:-llama3.2-3b-instruct}
# MODEL_PATH: defaults to the BASE_MODEL preset in examples/common.sh; set it to use a local copy.
DATA_DIR=${DATA_DIR:-$HOME/data/skpo}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
EXPERIMENT=${EXPERIMENT:-cispo_$BASE_MODEL}

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
add_paper_settings
add_baseline_settings cispo
run_verl "$@"
