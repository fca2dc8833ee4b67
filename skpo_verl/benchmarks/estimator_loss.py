"""Time SKPO's estimator + loss against verl's GRPO estimator + vanilla PPO loss.

Same synthetic batch for both (default 128 prompts x 9 rows x 3072 tokens: SKPO's 1 upstream
+ 8 downstream rows; GRPO treats the 9 rows of a prompt as its group). The loss is timed
forward + backward on a leaf log-prob tensor, as one micro-batch holding the whole batch.

    python -m skpo_verl.benchmarks.estimator_loss [--prompts 128 --rows 9 --tokens 3072 --repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def synthetic_batch(prompts: int, rows: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch = prompts * rows
    lengths = torch.randint(tokens // 4, tokens + 1, (batch,), generator=g)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).to(torch.float32)
    rewards = torch.where(torch.rand(batch, generator=g) < 0.4, 1.0, -1.0)
    token_rewards = torch.zeros(batch, tokens)
    token_rewards[torch.arange(batch), lengths - 1] = rewards
    old_log_prob = -torch.rand(batch, tokens, generator=g) * 2
    log_prob = old_log_prob + 0.05 * torch.randn(batch, tokens, generator=g)
    return mask, token_rewards, old_log_prob, log_prob


def skpo_rows(prompts: int, rows: int):
    from skpo_verl.rows import SKPORows

    groups = np.repeat(np.array([f"u{i}" for i in range(prompts)], dtype=object), rows)
    position = np.tile(np.arange(rows), prompts)
    n = prompts * rows
    return SKPORows(
        is_upstream=position == 0,
        prompt_keys=np.repeat(np.arange(prompts), rows).astype(object),
        groups=groups,
        sessions=np.maximum(position - 1, 0),
        is_padding=np.zeros(n, dtype=bool),
        segment_lengths=np.full(n, 300),
        split_lengths=np.full(n, 300),
    )


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_pairs(baseline, candidate, repeats: int) -> tuple[float, float, float]:
    """Median seconds of each, and the median of per-pair ratios candidate/baseline.

    The two run alternately, so background load hits both alike; the paired ratio is the
    figure to quote.
    """
    baseline(), candidate()  # warm-up
    pairs = [(_seconds(baseline), _seconds(candidate)) for _ in range(repeats)]
    base = statistics.median(p[0] for p in pairs)
    cand = statistics.median(p[1] for p in pairs)
    return base, cand, statistics.median(c / b for b, c in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--rows", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=3072)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    import verl  # noqa: F401 - loads the skpo plugin entry point
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    from skpo_verl.config import LossConfig, SKPOConfig
    from skpo_verl.training.loss import LossNormalisers, MicroBatchRoles, micro_batch_roles, step_role_counts
    from skpo_verl.training.state import SKPOState
    from skpo_verl.verl_config import compose_ppo_config

    mask, token_rewards, old_log_prob, log_prob = synthetic_batch(args.prompts, args.rows, args.tokens)
    rows = skpo_rows(args.prompts, args.rows)
    uid = rows.groups
    actor = omega_conf_to_dataclass(
        compose_ppo_config(["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"]).actor_rollout_ref.actor
    )
    actor.global_batch_info.update(dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=len(uid))
    upstream = torch.from_numpy(rows.is_upstream)
    roles = MicroBatchRoles(
        is_upstream=upstream,
        normalisers=LossNormalisers.for_mini_batches(step_role_counts(upstream, mask), mini_batches=1),
        loss=LossConfig(),
    )
    skpo_estimator = core_algos.get_adv_estimator_fn("skpo")
    skpo_loss = core_algos.get_policy_loss_fn("skpo")
    vanilla_loss = core_algos.get_policy_loss_fn("vanilla")

    def grpo_step():
        adv, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index=uid)
        lp = log_prob.clone().requires_grad_(True)
        loss, _ = vanilla_loss(old_log_prob, lp, adv, mask, "token-mean", actor)
        loss.backward()

    def skpo_step():
        adv, _ = skpo_estimator(
            token_level_rewards=token_rewards,
            response_mask=mask,
            skpo_rows=rows,
            skpo_state=SKPOState(SKPOConfig()),
            global_step=1,
        )
        lp = log_prob.clone().requires_grad_(True)
        with micro_batch_roles(roles):
            loss, _ = skpo_loss(old_log_prob, lp, adv, mask, "token-mean", actor)
        loss.backward()

    grpo, skpo, ratio = time_pairs(grpo_step, skpo_step, args.repeats)
    print(
        f"batch: {args.prompts} prompts x {args.rows} rows x {args.tokens} tokens, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} interleaved pairs"
    )
    print(f"GRPO estimator + vanilla loss (fwd+bwd): {grpo * 1000:.1f} ms")
    print(f"SKPO estimator + skpo loss   (fwd+bwd): {skpo * 1000:.1f} ms")
    print(f"SKPO / GRPO time ratio (median of paired ratios): {ratio:.2f}")


if __name__ == "__main__":
    main()
