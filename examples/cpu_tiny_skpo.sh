#!/usr/bin/env bash
# Train the bundled tiny model on the bundled chain-sum task ("Add 3, 5, 4." -> "3+5=8. 8+4=12.
# Answer: 12") with verl's own entry point (python -m verl.trainer.main_ppo) on a CPU-only
# machine, validating on held-out problems before training and every VAL_EVERY steps; at the
# end print the learning curve and write it as CSV and PNG. See docs/cpu_backend.md.
#   bash examples/cpu_tiny_skpo.sh                      # SKPO
#   ALGO=grpo bash examples/cpu_tiny_skpo.sh            # GRPO, stock single-turn agent loop
#   bash examples/cpu_tiny_skpo.sh trainer.total_training_steps=10   # extra Hydra overrides
#   NUM_SPLITS=2 bash examples/cpu_tiny_skpo.sh         # multi-split (docs/algorithm.md): K kept segments
set -euo pipefail

ALGO=${ALGO:-skpo}                    # skpo | grpo
ROLLOUT=${ROLLOUT:-hf_cpu}            # the CPU rollout server (docs/cpu_backend.md)
WORKDIR=${WORKDIR:-$HOME/.cache/skpo_verl/cpu_tiny}   # tiny model + data are built here once
TASK=${TASK:-demo}                    # demo | benchmark | long (the learning benchmark's tasks)
TRAIN_STEPS=${STEPS:-30}              # training steps
VAL_EVERY=${VAL_EVERY:-5}             # held-out validation (greedy) every VAL_EVERY steps, and before training
PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-8}
GROUP_SIZE=${GROUP_SIZE:-8}           # G: answers per prompt (rollout.n)
# The task's token budgets (64 / 32 tokens; the long task answers in up to 46, so 64 / 64).
eval "$(python3 -m skpo_verl.demo.prepare --task "$TASK" --lengths)"
MAX_PROMPT_LENGTH=${PROMPT_LENGTH:-$TASK_PROMPT_LENGTH}
MAX_RESPONSE_LENGTH=${RESPONSE_LENGTH:-$TASK_RESPONSE_LENGTH}
LR=${LR:-2e-4}                        # both algorithms; SKPO was unstable at 5e-4 (docs/algorithm.md)
RANKS=${RANKS:-1}                     # FSDP2 ranks (gloo), each a Ray "GPU" slot
RUN_DIR=${RUN_DIR:-skpo_cpu_tiny/$ALGO}   # metrics.jsonl, curve.csv and curve.png go here
PROJECT=skpo_cpu_tiny
EXPERIMENT=$ALGO

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ "${PRINT_OVERRIDES:-0}" != 1 ]]; then
  eval "$(python3 -m skpo_verl.demo.prepare --task "$TASK" "$WORKDIR")"
  # verl's file logger (trainer.logger) writes every step's metrics here; the curve is read back from it.
  export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$RUN_DIR/metrics.jsonl}
  mkdir -p "$(dirname "$VERL_FILE_LOGGER_PATH")"
fi

add_cpu_settings
# (PRINT_OVERRIDES=1 builds nothing: the paths are then where prepare would put them.)
add data.train_files="${TRAIN_FILE:-$WORKDIR/$TASK/data/train.parquet}"
add data.val_files="${VAL_FILE:-$WORKDIR/$TASK/data/val.parquet}"
add actor_rollout_ref.model.path="${MODEL_PATH:-$WORKDIR/$TASK/model}"
add_cpu_algorithm_settings

train_verl "$@"
python3 -m skpo_verl.demo.report "$VERL_FILE_LOGGER_PATH" --title "$ALGO on the chain-sum task (tiny model, CPU)"
