"""Shim: the share of judge failures as a per-step training metric in verl 0.9.1's V1 trainer.

verl keeps each row's reward extra info (the keys the reward function returns besides
`score`) in TransferQueue as `extra_fields["reward_extra_info"]`
(`AgentLoopWorkerTQ._agent_loop_postprocess`, `verl/trainer/ppo/v1/agent_loop_tq.py` l.150),
but turns it into metrics only at validation (`PPOTrainer._validate` →
`_val_metrics_update`, `process_validation_metrics`): a training step logs none of it
(`PPOTrainer._compute_metrics`, `trainer_base.py` l.1868, reads `extra_fields` only for
speculative-decoding counts).

This wraps `_compute_metrics`: it calls verl's whole (nothing dropped), then adds
`reward/judge_failure_share`: the mean of the reward's
`judge_failure` key (1.0 for "timeout" / "error:*", see `skpo_verl.reward.score`) over the
step's non-padding rows. It does not look at the advantage estimator, so GRPO runs log it
too. Rows whose extra info lacks the key (another reward function) are not counted; with
none, no metric is added.
"""

from __future__ import annotations

from skpo_verl.patches.wrapping import wrap
from skpo_verl.verl_version import require_verl_version

METRIC = "reward/judge_failure_share"
EXTRA_INFO_KEY = "judge_failure"


def install(trainer_base) -> None:
    require_verl_version("reward_metrics")
    wrap(trainer_base.PPOTrainer, "_compute_metrics", ["self", "batch", "metrics"], _with_judge_failures)


def _with_judge_failures(original):
    def _compute_metrics(self, batch, metrics, *args, **kwargs):
        result = original(self, batch, metrics, *args, **kwargs)
        metrics.update(judge_failure_metrics(batch))
        return result

    return _compute_metrics


def judge_failure_metrics(batch) -> dict[str, float]:
    """{METRIC: share} over the batch's non-padding rows that carry EXTRA_INFO_KEY; {} when none do."""
    import transfer_queue as tq

    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
    values = []
    for extra_fields, tag in zip(list(data["extra_fields"]), batch.tags):
        extra_fields = getattr(extra_fields, "data", extra_fields)
        info = extra_fields.get("reward_extra_info", {}) if isinstance(extra_fields, dict) else {}
        if not tag.get("is_padding", False) and EXTRA_INFO_KEY in info:
            values.append(float(info[EXTRA_INFO_KEY]))
    return {METRIC: sum(values) / len(values)} if values else {}
