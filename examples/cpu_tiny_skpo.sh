#!/usr/bin/env bash
# Train the bundled tiny model on the bundled chain-sum task ("Add 3, 5, 4." -> "3+5=8. 8+4=12.
# Answer: 12") with verl's own entry point (python -m verl.trainer.main_ppo) on a CPU-only
# machine, validating on held-out problems before training and every VAL_EVERY steps; at the
# end print the learning curve and write it as CSV and PNG. See docs/cpu_backend.md.
#   bash examples/cpu_tiny_skpo.sh                      # SKPO
#   ALGO=grpo bash examples/cpu_tiny_skpo.sh            # GRPO, stock single-turn agent loop
#   bash examples/cpu_tiny_skpo.sh trainer.total_training_steps=10   # extra Hydra overrides
set -euo pipefail

ALGO=${ALGO:-skpo}                    # skpo | grpo
WORKDIR=${WORKDIR:-$HOME/.cache/skpo_verl/cpu_tiny}   # tiny model + data are built here once
TASK=${TASK:-demo}                    # demo | benchmark (the learning benchmark's larger task)
STEPS=${STEPS:-30}                    # training steps
VAL_EVERY=${VAL_EVERY:-5}             # held-out validation (greedy) every VAL_EVERY steps, and before training
PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-8}
GROUP_SIZE=${GROUP_SIZE:-8}           # G: answers per prompt (rollout.n)
RESPONSE_LENGTH=${RESPONSE_LENGTH:-32}
LR=${LR:-2e-4}                        # both algorithms; SKPO was unstable at 5e-4 (docs/algorithm.md)
RANKS=${RANKS:-1}                     # FSDP2 ranks (gloo), each a Ray "GPU" slot
RUN_DIR=${RUN_DIR:-skpo_cpu_tiny/$ALGO}   # metrics.jsonl, curve.csv and curve.png go here

# The CPU backend is opt-in: verl's platform override selects skpo_verl's `cpu` platform.
export VERL_PLATFORM=cpu
# TransferQueue asks for 8 threads and warns on every transfer when there are fewer physical cores.
export TQ_NUM_THREADS=${TQ_NUM_THREADS:-$(python -c "import psutil; print(min(8, psutil.cpu_count(logical=False) or 1))")}
# Memory (the whole run must fit in 4 GB): one math-verify judge process in the reward worker
# instead of two (the answers are short integers), and no idle Ray workers started ahead of need.
export SKPO_REWARD_JUDGE_PROCESSES=${SKPO_REWARD_JUDGE_PROCESSES:-1}
export RAY_prestart_worker_first_driver=${RAY_prestart_worker_first_driver:-0}
eval "$(python -m skpo_verl.cpu.prepare --task "$TASK" "$WORKDIR")"
# verl's file logger (trainer.logger below) writes every step's metrics here; the curve is read back from it.
export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$RUN_DIR/metrics.jsonl}
mkdir -p "$(dirname "$VERL_FILE_LOGGER_PATH")"

case "$ALGO" in
  skpo) ALGO_ARGS=(
          algorithm.adv_estimator=skpo
          actor_rollout_ref.actor.policy_loss.loss_mode=skpo
          actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent
          # L_q starts at the answer budget (the paper's 1024 would split past it): t_q ~ U[L/6, L/2].
          +algorithm.skpo.tracker.initial_length="$RESPONSE_LENGTH") ;;
  grpo) ALGO_ARGS=(
          algorithm.adv_estimator=grpo
          actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent) ;;
  *) echo "ALGO must be skpo or grpo, got '$ALGO'" >&2; exit 2 ;;
esac

python -m verl.trainer.main_ppo \
  "${ALGO_ARGS[@]}" \
  algorithm.use_kl_in_reward=False \
  actor_rollout_ref.actor.use_kl_loss=False \
  data.train_files="$TRAIN_FILE" \
  data.val_files="$VAL_FILE" \
  data.train_batch_size="$PROMPTS_PER_STEP" \
  data.max_prompt_length=64 \
  data.max_response_length="$RESPONSE_LENGTH" \
  data.dataloader_num_workers=0 \
  reward.custom_reward_function.path="$REWARD_PATH" \
  reward.custom_reward_function.name="$REWARD_NAME" \
  reward.num_workers=1 \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.model.use_remove_padding=False \
  actor_rollout_ref.model.enable_gradient_checkpointing=False \
  +actor_rollout_ref.model.override_config.attn_implementation=eager \
  actor_rollout_ref.actor.strategy=fsdp2 \
  actor_rollout_ref.actor.use_torch_compile=False \
  actor_rollout_ref.actor.optim.lr="$LR" \
  actor_rollout_ref.actor.ppo_mini_batch_size="$PROMPTS_PER_STEP" \
  actor_rollout_ref.actor.use_dynamic_bsz=True \
  +actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32 \
  +actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=fp32 \
  actor_rollout_ref.rollout.name=hf_cpu \
  actor_rollout_ref.rollout.n="$GROUP_SIZE" \
  actor_rollout_ref.rollout.prompt_length=$((64 + RESPONSE_LENGTH)) \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.calculate_log_probs=True \
  actor_rollout_ref.rollout.agent.num_workers=1 \
  transfer_queue.backend.SimpleStorage.num_data_storage_units=1 \
  trainer.v1.sampler.custom_sampler.path=pkg://skpo_verl.patches.cpu_replay_buffer \
  trainer.v1.sampler.custom_sampler.name=ShortPollReplayBuffer \
  trainer.device=cpu \
  trainer.nnodes=1 \
  trainer.n_gpus_per_node="$RANKS" \
  +ray_kwargs.ray_init.num_gpus="$RANKS" \
  ray_kwargs.ray_init.num_cpus=32 \
  +ray_kwargs.ray_init.include_dashboard=False \
  trainer.val_before_train=True \
  trainer.test_freq="$VAL_EVERY" \
  trainer.save_freq=-1 \
  trainer.total_training_steps="$STEPS" \
  trainer.logger='[console,file]' \
  trainer.project_name=skpo_cpu_tiny \
  trainer.experiment_name="$ALGO" \
  "$@"

python -m skpo_verl.cpu.report "$VERL_FILE_LOGGER_PATH" --title "$ALGO on the chain-sum task (tiny model, CPU)"
