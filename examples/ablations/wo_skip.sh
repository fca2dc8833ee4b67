#!/usr/bin/env bash
# Table 2 ablation "w/o skip (the segment is a hard prefix: q then s, the answer continues s)": SKPO with +algorithm.skpo.conditioning=continual, all else as the paper's SKPO run.
# BASE_MODEL=llama3.2-3b-instruct (default) or qwen2.5-math-7b picks the model preset.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100).
# Extra arguments are passed to verl last.
set -euo pipefail
# Variables of examples/common.sh (BASE_MODEL, MODEL_PATH, DATA_DIR, N_GPUS, NNODES, ...) can be set in the environment.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
EXPERIMENT=${EXPERIMENT:-skpo_wo_skip_$BASE_MODEL}
add_paper_settings
add_skpo_settings
add +algorithm.skpo.conditioning=continual
run_verl "$@"
