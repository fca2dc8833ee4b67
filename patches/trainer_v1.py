"""Shim: SKPO's driver side inside verl 0.9.1's V1 trainer (`verl/trainer/ppo/v1/trainer_base.py`).

Each wrapper below names the `PPOTrainer` method it adapts, which verl lines it still calls and
which it replaces; where it drops verl behaviour, the start-up check that refuses the settings
needing that behaviour (`skpo_verl.validation._config_problems`, run by the `__init__` wrapper
before verl builds anything). All of them are no-ops unless `algorithm.adv_estimator=skpo`, so
a GRPO run in the same process is untouched. In short:

- `__init__` (l.120): validate the config, create the `SKPOState` (trackers) it owns.
- `_init_dataloader` (l.708) and `create_rl_sampler` (imported by name, l.69, called l.749):
  check `extra_info.index`, swap in the prioritized sampler when it is on, load in the driver.
- `_next_train_batch` (l.1479): add each prompt's split length t_q before rollout (and t_2..t_K
  with `algorithm.skpo.num_splits` = K > 1).
- `_compute_advantage` (l.1743): replaced wholesale by SKPO's estimator on the row-contract
  fields (`skpo_verl.rows`); with `tracker.divergence=logprob` also re-scores returning prompts.
- `_get_required_batch_multiple` (l.1589) and `_update_actor` (l.1827): SKPO's rows per prompt,
  K x (n + 1) (K = `algorithm.skpo.num_splits`, 1 in the paper), or n + 2 with
  `algorithm.skpo.upstream_baseline=spatial`.
- `_save_checkpoint` (l.948) / `_load_checkpoint` (l.850): save and restore `SKPOState`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import logging
import os

import numpy as np
import torch

from skpo_verl import rows as R
from skpo_verl.config import SKPOConfig
from skpo_verl.patches.wrapping import wrap
from skpo_verl.verl_version import require_verl_version

logger = logging.getLogger(__name__)

# The SKPOState whose trainer is building its dataloader (read by create_rl_sampler).
_building_dataloader: contextvars.ContextVar = contextvars.ContextVar("skpo_dataloader_owner", default=None)


def install(trainer_base) -> None:
    require_verl_version("trainer_v1")
    cls = trainer_base.PPOTrainer
    wrap(cls, "__init__", ["self", "config"], _method(_init))
    wrap(cls, "_init_dataloader", ["self"], _method(_init_dataloader))
    wrap(cls, "_next_train_batch", ["self", "num_prompts"], _method(_next_train_batch))
    wrap(cls, "_compute_advantage", ["self", "batch", "metrics"], _method(_compute_advantage))
    wrap(cls, "_get_required_batch_multiple", ["self", "dp_size"], _method(_get_required_batch_multiple))
    wrap(cls, "_update_actor", ["self", "batch", "metrics"], _method(_update_actor))
    wrap(cls, "_save_checkpoint", ["self"], _method(_save_checkpoint))
    wrap(cls, "_load_checkpoint", ["self"], _method(_load_checkpoint))
    wrap(trainer_base, "create_rl_sampler", ["data_config", "dataset"], _create_rl_sampler)


def _method(replacement):
    """`wrap`'s make_wrapper for the replacements below, which take verl's method first: (original, self, ...)."""

    def make_wrapper(original):
        def method(self, *args, **kwargs):
            return replacement(original, self, *args, **kwargs)

        return method

    return make_wrapper


def _state(trainer):
    return getattr(trainer, "skpo_state", None)


def _init(original, self, config):
    """`PPOTrainer.__init__`: runs SKPO's start-up checks and builds the `SKPOState`, then calls verl's whole."""
    from skpo_verl.training.state import SKPOState
    from skpo_verl.validation import check_not_half_configured, is_skpo_run, validate_config

    check_not_half_configured(config)
    self.skpo_state = SKPOState(validate_config(config)) if is_skpo_run(config) else None
    original(self, config)


def _init_dataloader(original, self):
    """`PPOTrainer._init_dataloader`: calls verl's whole, with `create_rl_sampler` told the trainer.

    Changes one verl setting while it runs: with prioritized sampling on, the train dataloader is
    built with `data.dataloader_num_workers=0` (logged; restored afterwards). Worker processes
    prefetch `num_workers x prefetch_factor` batches, so their prompts would be drawn that many
    steps before the tracker updates they should see (docs/algorithm.md, Sampling).
    """
    state = _state(self)
    if state is None:
        return original(self)
    token = _building_dataloader.set(self)
    data_config = self.config.data
    workers = data_config.get("dataloader_num_workers", 0)
    in_driver = state.config.prioritized_sampling and workers > 0
    if in_driver:
        logger.warning(
            "algorithm.skpo.prioritized_sampling=true: the train dataloader loads in the driver "
            "(data.dataloader_num_workers=%s -> 0) so that each step's prompts are drawn with the tracker of the "
            "step before; worker prefetch would draw them from a tracker several steps old.",
            workers,
        )
        data_config.dataloader_num_workers = 0
    try:
        return original(self)
    finally:
        if in_driver:
            data_config.dataloader_num_workers = workers
        _building_dataloader.reset(token)


def _create_rl_sampler(real_create_rl_sampler):
    """`trainer_base.create_rl_sampler(data_config, dataset)` (`verl/trainer/ppo/utils.py`), called once
    with the training dataset: SKPO checks every prompt's `extra_info.index` there.

    With prioritized sampling on (the paper) verl's sampler is replaced by `PrioritizedSampler`,
    which drops what verl's reads, `data.shuffle` and `data.seed`: the prompts are drawn by
    tracker weight with `algorithm.skpo.seed`. No check refuses them (the prioritized sampler is
    SKPO's documented default); `algorithm.skpo.prioritized_sampling=false` calls verl's.
    """

    def create_rl_sampler(data_config, dataset, *args, **kwargs):
        trainer = _building_dataloader.get()
        if trainer is None:
            return real_create_rl_sampler(data_config, dataset, *args, **kwargs)
        from skpo_verl.validation import prompt_keys_from_extra_info

        frame = dataset.dataframe
        extra_infos = frame["extra_info"] if "extra_info" in frame.column_names else [None] * len(frame)
        keys = prompt_keys_from_extra_info(extra_infos, files=data_config.train_files)
        state = trainer.skpo_state
        if state.initial_values is not None:  # tracker.initial_values: every training prompt needs a value
            from skpo_verl.training.initial_values import check_covers

            check_covers(state.initial_values, keys)
        if not state.config.prioritized_sampling:
            return real_create_rl_sampler(data_config, dataset, *args, **kwargs)
        from skpo_verl.training.sampler import PrioritizedSampler

        return PrioritizedSampler(keys, state.values, eps=state.config.priority_eps, seed=state.config.seed)

    return create_rl_sampler


def _next_train_batch(original, self, *args, **kwargs):
    """`PPOTrainer._next_train_batch`: calls verl's whole, then adds the `skpo_split_length` column (t_q).

    With multi-split also `skpo_later_split_lengths` (t_2..t_K, [B, K - 1]), drawn after t_q.
    """
    batch = original(self, *args, **kwargs)
    state = _state(self)
    if state is not None:
        keys = _as_list(batch["index"])
        batch[R.PROMPT_SPLIT_LENGTH] = torch.as_tensor(state.split_lengths(keys, self.global_steps))
        if state.config.num_splits > 1:
            batch[R.PROMPT_LATER_SPLIT_LENGTHS] = torch.as_tensor(state.later_split_lengths(keys, self.global_steps))
    return batch


def _compute_advantage(original, self, batch, metrics):
    """`PPOTrainer._compute_advantage` (l.1743-1802), replaced wholesale for SKPO.

    verl's version fetches a fixed field list from TransferQueue (no roles), so SKPO fetches the
    row-contract fields and padding tags (`skpo_verl.rows.ESTIMATOR_FIELDS`), calls
    `compute_skpo_advantage` with the state built at start-up, and writes `advantages`, `returns`
    and `skpo_upstream_mask` back with verl's `response_to_nested`. None of verl's body runs, which
    drops:

    - step 1, the KL penalty in the reward (`apply_kl_penalty`): refused at start-up by the
      `algorithm.use_kl_in_reward` check;
    - step 2, rollout correction (`compute_rollout_correction_and_add_to_batch`: IS weights,
      rejection sampling): refused at start-up by the `algorithm.rollout_correction` check
      (rollout_is / rollout_rs / bypass_mode), and by the loss if weights arrive anyway;
    - step 3's estimator arguments `gamma`, `lam` (GAE, for a critic: refused by the `critic.enable`
      check) and `norm_adv_by_std_in_grpo` (refused when false: SKPO's downstream advantage
      divides by the group std, Eq. 5; `algorithm.skpo.downstream_norm` chooses the normalisation).
    """
    state = _state(self)
    if state is None:
        return original(self, batch, metrics)
    import transfer_queue as tq
    from tensordict import TensorDict
    from verl.workers.utils.padding import response_to_nested

    from skpo_verl.training.estimator import compute_skpo_advantage

    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=list(R.ESTIMATOR_FIELDS))
    response_mask_nested = data["response_mask"]
    padded = data.select("response_mask", "rm_scores").to_padded_tensor()
    skpo_rows = rows_from_fields(data, [bool(tag.get("is_padding", False)) for tag in batch.tags])

    divergences = None
    if state.config.tracker.divergence == "logprob":
        divergences = _measure_logprob_divergences(self, batch, skpo_rows, state, metrics)
    judged_clean = None
    if state.config.segment_judge is not None:
        judged_clean = _judge_segments(self, batch, skpo_rows, state.config.segment_judge)
    advantages, returns = compute_skpo_advantage(
        token_level_rewards=padded["rm_scores"].float(),
        response_mask=padded["response_mask"],
        skpo_rows=skpo_rows,
        skpo_state=state,
        global_step=self.global_steps,
        metrics=metrics,
        logprob_divergences=divergences,
        judged_clean=judged_clean,
    )
    if divergences is not None:
        _remember_segments(batch, skpo_rows, state)
    upstream_mask = torch.as_tensor(skpo_rows.is_upstream & ~skpo_rows.is_padding, dtype=torch.int64)
    output = TensorDict(
        {
            "advantages": response_to_nested(advantages, response_mask_nested),
            "returns": response_to_nested(returns, response_mask_nested),
            R.UPSTREAM_MASK: upstream_mask,
        },
        batch_size=len(batch),
    )
    return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)


def _upstream_keys(batch, skpo_rows):
    """TransferQueue keys and prompt keys of the stage-1 upstream rows of segment 0 (q -> s_1, or s_a with the
    spatial baseline): the prompt's divergence D is measured on that one segment and serves all its rows."""
    first = (skpo_rows.stage_of_rows() == 1) & (skpo_rows.segment_index_of_rows() == 0)
    real = skpo_rows.is_upstream & ~skpo_rows.is_padding & first
    return [key for key, keep in zip(batch.keys, real) if keep], skpo_rows.prompt_keys[real]


def _judge_segments(trainer, batch, skpo_rows, judge_path: str) -> np.ndarray:
    """The segment judge's verdict on each real upstream row (batch order): its prompt and kept segment, decoded."""
    import transfer_queue as tq

    from skpo_verl.training.segment_judge import judge_segments, load_segment_judge

    real = skpo_rows.is_upstream & ~skpo_rows.is_padding
    keys = [key for key, keep in zip(batch.keys, real) if keep]
    data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["prompts", "responses"])
    decode = functools.partial(trainer.tokenizer.decode, skip_special_tokens=True)
    prompts = [decode(row.tolist()) for row in data["prompts"].unbind()]
    segments = [decode(row.tolist()) for row in data["responses"].unbind()]
    return judge_segments(load_segment_judge(judge_path), prompts, segments)


def _remember_segments(batch, skpo_rows, state) -> None:
    """Store each upstream row's (q, s) and its old log-probs: the next visit re-scores them."""
    import transfer_queue as tq

    keys, prompt_keys = _upstream_keys(batch, skpo_rows)
    if not keys:
        return
    data = tq.kv_batch_get(
        keys=keys, partition_id=batch.partition_id, select_fields=["prompts", "responses", "old_log_probs"]
    )
    for prompt_key, prompt, response, log_probs in zip(
        prompt_keys, data["prompts"].unbind(), data["responses"].unbind(), data["old_log_probs"].unbind()
    ):
        state.remember_segment(prompt_key, prompt.tolist(), response.tolist(), log_probs.tolist())


def _measure_logprob_divergences(trainer, batch, skpo_rows, state, metrics) -> dict:
    """D per returning prompt: its stored segment's log-probs then against the current actor's now."""
    import time

    from skpo_verl.core.tracker import logprob_divergence

    started = time.perf_counter()
    keys, prompt_keys = _upstream_keys(batch, skpo_rows)
    returning = [(key, prompt_key) for key, prompt_key in zip(keys, prompt_keys) if prompt_key in state.segments]
    divergences: dict = {}
    if returning:
        segments = [state.segments[prompt_key] for _, prompt_key in returning]
        now = _rescore(trainer, batch.partition_id, [key for key, _ in returning], segments)
        for (_, prompt_key), segment, current in zip(returning, segments, now):
            divergences[prompt_key] = logprob_divergence(segment.log_probs, current)
    metrics["skpo/tracker/rescored_prompts"] = len(returning)
    metrics["skpo/tracker/divergence_mean"] = float(np.mean(list(divergences.values()))) if divergences else 0.0
    metrics["timing_s/skpo_divergence"] = time.perf_counter() - started
    return divergences


def _rescore(trainer, partition_id: str, template_keys: list, segments: list) -> list[list[float]]:
    """The current actor's log-probs of each stored (q, s), one extra pass through verl's `compute_log_prob`.

    The segments go in as temporary TransferQueue rows built on the prompts' current upstream
    rows (`template_keys`), padded to the data-parallel size with verl's padding helper, and are
    cleared afterwards.
    """
    import transfer_queue as tq
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict
    from verl.workers.utils.padding import response_from_nested

    templates = tq.kv_batch_get(keys=template_keys, partition_id=partition_id)
    fields = [_rescore_row(templates[i], segment) for i, segment in enumerate(segments)]
    tags = [
        {
            "status": "success",
            "seq_len": len(row["input_ids"]),
            "prompt_len": len(row["prompts"]),
            "response_len": len(row["responses"]),
        }
        for row in fields
    ]
    keys = [f"skporescore{trainer.global_steps}_{i}_0" for i in range(len(fields))]
    tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=list_of_dict_to_tensordict(fields), tags=tags)
    meta = tq.KVBatchMeta(partition_id=partition_id, keys=keys, tags=tags)
    meta = upsample_batch_to_divisible_size(meta, _actor_dp_size(trainer), trainer.tokenizer.eos_token_id)
    meta.extra_info.update(
        calculate_entropy=False,
        compute_loss=False,
        temperature=trainer.config.actor_rollout_ref.rollout.temperature,
    )
    try:
        trainer.actor_rollout_wg.compute_log_prob(meta)
        scored = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["log_probs", "response_mask"])
        return [row.tolist() for row in response_from_nested(scored["log_probs"], scored["response_mask"]).unbind()]
    finally:
        tq.kv_clear(keys=meta.keys, partition_id=partition_id)


def _rescore_row(template, segment) -> dict:
    """The prompt's current upstream row (same fields) with the stored sequence q + s swapped in."""
    from verl.utils.model import compute_position_id_with_mask

    row = {name: copy.deepcopy(template[name]) for name in template.keys()}
    if row["position_ids"].dim() != 1:
        raise RuntimeError("algorithm.skpo.tracker.divergence=logprob supports text-only models (1-D positions).")
    prompt = torch.tensor(segment.prompt_ids, dtype=torch.int64)
    response = torch.tensor(segment.response_ids, dtype=torch.int64)
    input_ids = torch.cat([prompt, response])
    attention_mask = torch.ones_like(input_ids)
    zeros = torch.zeros(len(response), dtype=torch.float32)
    for name, value in list(row.items()):
        # Other response-length fields (old log-probs, entropy, ...) would not match the stored length.
        if isinstance(value, torch.Tensor) and value.dim() == 1 and len(value) == len(row["responses"]):
            row[name] = zeros.to(value.dtype)
    row.update(
        prompts=prompt,
        responses=response,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=compute_position_id_with_mask(attention_mask),
        response_mask=torch.ones_like(response),
        loss_mask=torch.ones_like(response),
    )
    return row


def _actor_dp_size(trainer) -> int:
    """Data-parallel size of the actor, as `_balance_batch` reads it (trainer_base l.1610-1616)."""
    worker_group = trainer.actor_rollout_wg
    if "actor" not in worker_group._dispatch_info:
        worker_group._dispatch_info["actor"] = worker_group._query_dispatch_info("actor")
    return max(worker_group._dispatch_info["actor"]) + 1


def rows_from_fields(data, is_padding) -> R.SKPORows:
    """Row-contract fields fetched from TransferQueue -> the estimator's `SKPORows`."""
    names = (R.GROUP, R.PROMPT_KEY, R.SESSION, *R.ROLLOUT_FIELDS)
    return R.SKPORows.from_columns({name: _as_list(data[name]) for name in names if name in data.keys()}, is_padding)


def _as_list(column) -> list:
    if isinstance(column, torch.Tensor):
        return column.tolist()
    if hasattr(column, "tolist"):
        return list(column.tolist())
    return list(column)


def rows_per_prompt(n: int, skpo: SKPOConfig) -> int:
    """SKPO's rows per prompt for `algorithm.skpo` = `skpo`: K x (n downstream + 1 upstream), K = num_splits
    (1 in the paper); with upstream_baseline=spatial n + 2 (two kept segments, one upstream row each).

    With multi-split a prompt whose later stages are skipped has fewer; verl pads a short batch
    up to whole mini-batches (`upsample_batch_to_divisible_size`), whose padding rows train nothing.
    """
    if skpo.upstream_baseline == "spatial":
        return n + 2
    return skpo.num_splits * (n + 1)


@contextlib.contextmanager
def _rows_per_prompt(config, skpo: SKPOConfig):
    """Present rollout.n as SKPO's rows per prompt (`rows_per_prompt`) for mini-batch sizing."""
    rollout = config.actor_rollout_ref.rollout
    n = rollout.n
    rollout.n = rows_per_prompt(n, skpo)
    try:
        yield
    finally:
        rollout.n = n


def _get_required_batch_multiple(original, self, *args, **kwargs):
    """`PPOTrainer._get_required_batch_multiple` (l.1589): verl's whole, with rollout.n read as SKPO's rows per
    prompt.

    verl sizes a mini-batch as `ppo_mini_batch_size * rollout.n` rows; SKPO has K x (n + 1) per prompt, or
    n + 2 with the spatial baseline (`rows_per_prompt`).
    """
    state = _state(self)
    if state is None:
        return original(self, *args, **kwargs)
    with _rows_per_prompt(self.config, state.config):
        return original(self, *args, **kwargs)


def _update_actor(original, self, batch, metrics):
    """`PPOTrainer._update_actor` (l.1827): verl's whole, with SKPO's rows per prompt (`rows_per_prompt`), the
    loss settings and the loss normalisers.

    `algorithm.skpo.loss` and each mini-batch's normalisers travel in the batch's `extra_info` (the
    actor workers see only the actor's config, and a mini-batch only its own rows);
    `skpo_verl.patches.ppo_loss_roles` reads them there. The normalisers are the step's role
    counts over its M mini-batches (`LossNormalisers`), so a row weighs the same whichever
    mini-batch and rank `_balance_batch` dealt it to (docs/algorithm.md, "Mini-batches and ranks").
    """
    state = _state(self)
    if state is None:
        return original(self, batch, metrics)
    mini_batches = _mini_batches(self, batch, state.config)
    batch.extra_info[R.LOSS_CONFIG] = dataclasses.asdict(state.config.loss)
    batch.extra_info[R.LOSS_NORMALISERS] = dataclasses.asdict(_loss_normalisers(batch, mini_batches))
    metrics["skpo/loss/mini_batches"] = mini_batches
    with _rows_per_prompt(self.config, state.config):
        return original(self, batch, metrics)


def _mini_batches(trainer, batch, skpo: SKPOConfig) -> int:
    """M, the actor's mini-batches per epoch: the (padded) batch's rows over a mini-batch's rows, as verl splits it."""
    actor, rollout = trainer.config.actor_rollout_ref.actor, trainer.config.actor_rollout_ref.rollout
    mini_batch_rows = actor.ppo_mini_batch_size * rows_per_prompt(rollout.n, skpo)
    if len(batch) % mini_batch_rows:
        raise RuntimeError(
            f"The SKPO batch has {len(batch)} rows, not a whole number of mini-batches of {mini_batch_rows} rows "
            "(actor.ppo_mini_batch_size x SKPO's rows per prompt: K x (n + 1), or n + 2 with "
            "algorithm.skpo.upstream_baseline=spatial), which verl's _balance_batch pads it to."
        )
    return len(batch) // mini_batch_rows


def _loss_normalisers(batch, mini_batches: int):
    """The step's role counts (`step_role_counts` over every row of the batch) shared by its mini-batches."""
    import transfer_queue as tq

    from skpo_verl.training.loss import LossNormalisers, step_role_counts

    data = tq.kv_batch_get(
        keys=batch.keys, partition_id=batch.partition_id, select_fields=[R.UPSTREAM_MASK, "response_mask"]
    )
    return LossNormalisers.for_mini_batches(
        step_role_counts(data[R.UPSTREAM_MASK], data["response_mask"]), mini_batches
    )


def _save_checkpoint(original, self, *args, **kwargs):
    """`PPOTrainer._save_checkpoint` (l.948): writes `SKPOState` into `global_step_N`, then calls verl's whole."""
    state = _state(self)
    if state is not None:
        # Written before verl's own save so that `latest_checkpointed_iteration.txt`, which verl
        # writes last, never points at a folder without SKPO's state.
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        state.save(folder)
    return original(self, *args, **kwargs)


def _load_checkpoint(original, self, *args, **kwargs):
    """`PPOTrainer._load_checkpoint` (l.850): calls verl's whole, then restores `SKPOState` from the same folder.

    verl has a save callback but no load hook, hence the wrapper.
    """
    result = original(self, *args, **kwargs)
    state = _state(self)
    if state is not None and self.global_steps > 0:
        state.load(_resumed_folder(self))
    return result


def _resumed_folder(trainer) -> str:
    """The folder `_load_checkpoint` resumed from (it keeps only the step number)."""
    trainer_config = trainer.config.trainer
    if trainer_config.resume_mode == "resume_path":
        folder = trainer_config.resume_from_path
    else:
        folder = os.path.join(trainer_config.default_local_dir, f"global_step_{trainer.global_steps}")
    return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)
