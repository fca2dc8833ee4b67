#!/usr/bin/env bash
# Table 2 ablation "w/o MC (the upstream segment is rewarded by its own candidate's answer)": SKPO with +algorithm.skpo.upstream_reward=single, all else as the paper's SKPO run.
# BASE_MODEL=llama3.2-3b-instruct (default) or qwen2.5-math-7b picks the model preset.
# Hardware: one node with 8 x 80 GB GPUs (A100/H100).
# Extra arguments are passed to verl last.
set -euo pipefail
BASE_MODEL=${BASE_MODEL:-llama3.2-3b-instruct}
# MODEL_PATH: defaults to the BASE_MODEL preset in examples/common.sh; set it to use a local copy.
DATA_DIR=${DATA_DIR:-$HOME/data/skpo}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
EXPERIMENT=${EXPERIMENT:-skpo_wo_mc_$BASE_MODEL}

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
add_paper_settings
add_skpo_settings
add +algorithm.skpo.upstream_reward=single
run_verl "$@"
