#!/usr/bin/env bash
# SAPO baseline of Table 1 with the paper's shared settings (docs/algorithm.md, Training setup); what is specific to
# SAPO is in add_baseline_settings in examples/common.sh (docs/reproduction.md explains it).
# BASE_MODEL=qwen2.5-math-7b or llama3.2-3b-instruct (default) picks the model preset.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100).
# Extra arguments are passed to verl last.
set -euo pipefail
# Variables of examples/common.sh (BASE_MODEL, MODEL_PATH, DATA_DIR, N_GPUS, NNODES, ...) can be set in the environment.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
EXPERIMENT=${EXPERIMENT:-sapo_$BASE_MODEL}
add_paper_settings
add_baseline_settings sapo
run_verl "$@"
