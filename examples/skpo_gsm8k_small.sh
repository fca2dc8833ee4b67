#!/usr/bin/env bash
# A small SKPO run to see it work in about an hour: Qwen2.5-1.5B-Instruct on GSM8K.
# Hardware: one GPU with >= 40 GB (A100-40GB/A6000/L40S/H100); for a 24 GB GPU use
# MODEL_PATH=Qwen/Qwen2.5-0.5B-Instruct.
# Data: skpo-prepare-data --source gsm8k_train --output-dir $DATA_DIR (and gsm8k_test).
# Not the paper's settings: 100 steps x 32 prompts, G = 8, answers up to 512 tokens.
set -euo pipefail
BASE_MODEL=custom
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-1.5B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/skpo}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/gsm8k_train.parquet}
VAL_FILES=${VAL_FILES:-$DATA_DIR/gsm8k_test.parquet}
N_GPUS=${N_GPUS:-1}
NNODES=1
EXPERIMENT=${EXPERIMENT:-skpo_gsm8k_small}
LOGGER=${LOGGER:-[console]}
TRAIN_STEPS=${STEPS:-100}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# Smaller than the paper's budgets (common.sh): GSM8K problems and answers are short.
PROMPTS_PER_STEP=32
MINI_BATCH_PROMPTS=16
MAX_PROMPT_LENGTH=256
MAX_RESPONSE_LENGTH=512
add_paper_settings
# L_q starts at the answer budget (the paper's 1024 is above it), so t_q <= 256 and the
# downstream prompt [s, q] <= 256 + 256 tokens.
add_skpo_settings "$MAX_RESPONSE_LENGTH"
MAX_TOKEN_LEN_PER_GPU=8192
add actor_rollout_ref.rollout.gpu_memory_utilization=0.4
add trainer.save_freq=-1 trainer.test_freq=25
run_verl "$@"
