"""The `skpo` advantage estimator (docs/algorithm.md, Rewards and Advantages).

It is registered as `algorithm.adv_estimator=skpo` so that verl's config accepts the name,
but verl's own call (`token_level_rewards`, `response_mask`, `config`, `index`) cannot
carry what SKPO needs: each row's role, stable prompt key and session, and the driver's
trackers. The V1 trainer shim (`skpo_verl.patches.trainer_v1`) calls
`compute_skpo_advantage` directly with those; called without them, it refuses to guess.

Multi-split (`num_splits` > 1, docs/algorithm.md "Multi-split"): rows carry their stage k.
Downstream rows are normalised within (uid, k); each (uid, k) has one upstream row, credited
with the MC mean of its own stage's answers, judged against its own tracker (the prompt's for
k = 1, (prompt key, k) after), and normalised among the batch's stage-k upstream rows. With
one split every row is stage 1 and all of this is the paper's computation, number for number.

Spatial upstream baseline (`upstream_baseline=spatial`, docs/algorithm.md "Spatial upstream
baseline (ours)"): each uid has two upstream rows, one per kept segment (`skpo_segment_index` 0
and 1), each credited with the MC mean of its own G/2 answers; its baseline is the mean R_I of
the uid's two segments instead of V_prev(q). Downstream rows are still normalised over all G
answers of the uid, and the trackers take one observation per prompt, the mean of its R_I.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from skpo_verl.core.advantages import (
    downstream_advantages,
    spatial_baselines,
    upstream_advantages,
    upstream_advantages_by_stage,
    upstream_advantages_rms,
    upstream_rewards,
)
from skpo_verl.core.tracker import reward_to_tracker, tracker_to_reward
from skpo_verl.rows import SKPORows
from skpo_verl.training.segment_judge import diagnostic_signal
from skpo_verl.training.state import SKPOState


def compute_skpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    config: Any = None,
    index: np.ndarray | None = None,
    skpo_rows: SKPORows | None = None,
    skpo_state: SKPOState | None = None,
    global_step: int = 0,
    metrics: dict | None = None,
    logprob_divergences: dict | None = None,
    judged_clean: np.ndarray | None = None,
    **unused: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages for upstream and downstream rows; updates the trackers with this step.

    The three parts in order: `skpo_advantages` (pure), `update_trackers`, `step_metrics`.
    The configuration is the one the state was built with at start-up (`skpo_state.config`);
    `config` and `index` are verl's registry arguments and are not read.

    Args:
        token_level_rewards: [B, T]; a row's reward is the sum over its response tokens.
        response_mask: [B, T].
        skpo_rows, skpo_state: supplied by the V1 trainer shim (see module doc).
        global_step: the trainer's step (the trackers' clock).
        metrics: updated in place with `skpo/*` metrics when given.
        logprob_divergences: prompt key -> D, for `tracker.divergence=logprob` (measured by the shim).
        judged_clean: bool per real upstream row in batch order, the task's segment judge's verdict
            (`algorithm.skpo.segment_judge`, decoded and judged by the shim), or None.
    Returns:
        (advantages, returns), both [B, T], the row's scalar advantage on its response tokens.
    """
    if skpo_rows is None or skpo_state is None:
        raise RuntimeError(
            "algorithm.adv_estimator=skpo needs each row's role and the SKPO trackers, which skpo_verl's V1 trainer "
            "shim passes. It was called without them: run verl 0.9.1's V1 trainer (trainer.use_v1=true) with "
            "skpo-verl installed, and check the start-up log for '[skpo_verl] ERROR' lines."
        )
    cfg = skpo_state.config
    signal = diagnostic_signal(cfg.upstream_advantage, judged_clean, cfg.seed, global_step)
    step = skpo_advantages(token_level_rewards, response_mask, skpo_rows, skpo_state, signal, judged_clean)
    rhos = update_trackers(skpo_state, step, global_step, logprob_divergences)
    if metrics is not None:
        metrics.update(step_metrics(skpo_rows, step, rhos, skpo_state))
    dtype = token_level_rewards.dtype
    advantages = torch.from_numpy(step.advantages).to(dtype)[:, None] * response_mask.to(dtype)
    return advantages, advantages.clone()


@dataclass(frozen=True)
class AdvantageStep:
    """One batch's advantages and what the trackers are to learn from it; rows are the batch's, padding included."""

    advantages: np.ndarray  # float [B]: each row's scalar advantage, 0 on padding rows
    rewards: np.ndarray  # float [B]: each row's outcome reward (sum over its response tokens)
    lengths: np.ndarray  # float [B]: response tokens per row
    upstream: np.ndarray  # bool [B]: real (not padding) upstream rows
    downstream: np.ndarray  # bool [B]: real downstream rows
    # One entry per real upstream row, in batch order:
    upstream_keys: np.ndarray  # the prompt's stable key (tracker key)
    upstream_rewards: np.ndarray  # R_I
    baselines: np.ndarray  # reward space: V_prev(q), or with upstream_baseline=spatial the uid's mean R_I
    first_visit: np.ndarray  # bool: the prompt's value tracker had no observation before this step
    observed_lengths: np.ndarray  # this step's L_q observation (read for stage-1 rows only)
    upstream_stages: np.ndarray | None = None  # multi-split stage k of each upstream row (None: all 1)
    # The normalised R_I - baseline of the configured upstream_baseline (the paper's V_prev, or spatial), also
    # when a diagnostic signal replaced it in `advantages`.
    estimated_upstream_advantages: np.ndarray | None = None
    judged_clean: np.ndarray | None = None  # bool: the segment judge's verdict (None without a judge)


def skpo_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    rows: SKPORows,
    state: SKPOState,
    upstream_signal: np.ndarray | None = None,
    judged_clean: np.ndarray | None = None,
) -> AdvantageStep:
    """Downstream group advantages and upstream advantages against their baseline (V_prev(q), or spatial);
    reads the trackers, changes nothing.

    Padding rows (verl's copies of a real row, `rows.is_padding`) get advantage 0 and are no
    one's group member, upstream reward or observation. `upstream_signal` (one value per real
    upstream row, `algorithm.skpo.upstream_advantage=oracle|random`) replaces a = R_I - baseline before
    the same normalisation; `judged_clean` is kept for the metrics.
    """
    cfg = state.config
    mask = response_mask.to(torch.float64)
    rewards = (token_level_rewards.to(torch.float64) * mask).sum(dim=-1).cpu().numpy()
    lengths = mask.sum(dim=-1).cpu().numpy()
    up = rows.is_upstream & ~rows.is_padding
    down = ~rows.is_upstream & ~rows.is_padding
    groups = rows.stage_groups()  # uid, or (uid, stage) with multi-split
    segments = rows.segment_groups()  # groups, or (uid, segment index) with the spatial baseline
    _check_groups(rows, up, down, cfg.upstream_baseline == "spatial")

    advantages = np.zeros(len(rewards), dtype=np.float64)
    advantages[down] = downstream_advantages(rewards[down], groups[down], cfg.adv_eps, cfg.downstream_norm)
    completion = rows.completion_rewards[up] if rows.completion_rewards is not None else None
    up_rewards = upstream_rewards(
        rewards[down],
        segments[down],
        segments[up],
        cfg.upstream_reward,
        rows.sessions[down],
        completion,
        rows.sessions[up],
    )
    up_keys = rows.prompt_keys[up]
    up_stages = rows.stage_of_rows()[up]
    trackers = [(state.value_tracker(k), state.tracker_key(key, k)) for key, k in zip(up_keys, up_stages)]
    if cfg.upstream_baseline == "spatial":
        baselines = spatial_baselines(up_rewards, groups[up])
    else:
        baselines = np.array([tracker_to_reward(tracker.value(key)) for tracker, key in trackers], dtype=np.float64)
    # A first visit: the row's tracker has no observation yet (online, or loaded from tracker.initial_values).
    first_visit = np.array([key not in tracker for tracker, key in trackers], dtype=bool)
    normalise = upstream_advantages_rms if cfg.upstream_norm == "rms" else upstream_advantages
    excluded = first_visit if cfg.first_visit_upstream == "zero" else None
    estimated = upstream_advantages_by_stage(up_rewards, baselines, up_stages, cfg.adv_eps, normalise, excluded)
    if upstream_signal is None:
        advantages[up] = estimated
    else:
        if len(upstream_signal) != len(up_rewards):
            raise ValueError(f"{len(upstream_signal)} diagnostic upstream signals for {len(up_rewards)} upstream rows.")
        no_baseline = np.zeros(len(up_rewards))
        advantages[up] = upstream_advantages_by_stage(
            upstream_signal, no_baseline, up_stages, cfg.adv_eps, normalise, excluded
        )
    return AdvantageStep(
        advantages=advantages,
        rewards=rewards,
        lengths=lengths,
        upstream=up,
        downstream=down,
        upstream_keys=up_keys,
        upstream_rewards=up_rewards,
        baselines=baselines,
        first_visit=first_visit,
        observed_lengths=_observed_lengths(rows, segments, lengths, up, down, cfg.conditioning),
        upstream_stages=up_stages,
        estimated_upstream_advantages=estimated,
        judged_clean=judged_clean,
    )


def update_trackers(
    state: SKPOState, step: AdvantageStep, global_step: int, divergences: dict | None = None
) -> dict[Any, float]:
    """The value and length trackers learn this step's observations; returns rho per updated prompt key.

    A prompt drawn twice in one step (the prioritized sampler draws with replacement) has one
    upstream row per occurrence, each judged against the same V_prev(q); the trackers take one
    update per prompt per step, with the mean R_I and mean observed length of its occurrences
    (docs/algorithm.md, Trackers). Multi-split: the same per (prompt, stage); stage k >= 2
    updates its own value tracker, keyed (prompt key, k); L_q learns from stage 1's answers only
    (the answers from [s_1, q], as with one split). Returns rho per updated tracker key.
    """
    divergences = divergences or {}
    rhos = {}
    stages = step.upstream_stages if step.upstream_stages is not None else np.ones(len(step.upstream_keys), int)
    for (key, stage), reward, length in _one_observation_per_prompt(
        list(zip(step.upstream_keys, stages.tolist())), step.upstream_rewards, step.observed_lengths
    ):
        tracker_key = state.tracker_key(key, stage)
        rhos[tracker_key] = rho = state.forgetting(key, global_step, divergences.get(key), stage)
        state.value_tracker(stage).update(tracker_key, float(reward_to_tracker(reward)), float(rho), global_step)
        if stage == 1:
            state.lengths.update(key, float(length), float(rho), global_step)
    return rhos


def _one_observation_per_prompt(keys, rewards, lengths):
    """(key, mean R_I, mean length) per distinct key ((prompt key, stage)), in order of first appearance."""
    seen: dict = {}
    for key, reward, length in zip(keys, rewards, lengths):
        seen.setdefault(key, []).append((reward, length))
    return [
        (key, float(np.mean([r for r, _ in obs])), float(np.mean([n for _, n in obs]))) for key, obs in seen.items()
    ]


def _check_groups(rows: SKPORows, up: np.ndarray, down: np.ndarray, spatial: bool) -> None:
    """Every kept segment must contribute exactly one upstream row and at least one downstream row, and every
    prompt (uid, and stage) its segments: index 0 alone, or with upstream_baseline=spatial both 0 and 1."""
    segments = rows.segment_groups()
    up_list = list(segments[up])
    duplicated = sorted({g for g in up_list if up_list.count(g) > 1}, key=str)
    orphan_up = sorted(set(up_list) - set(segments[down]), key=str)
    orphan_down = sorted(set(segments[down]) - set(up_list), key=str)
    expected = {0, 1} if spatial else {0}
    kept: dict = {}
    for group, index in zip(rows.stage_groups()[up], rows.segment_index_of_rows()[up]):
        kept.setdefault(group, set()).add(int(index))
    wrong_segments = sorted((group for group, indices in kept.items() if indices != expected), key=str)
    if duplicated or orphan_up or orphan_down or wrong_segments:
        layout = (
            "two kept segments (skpo_segment_index 0 and 1), each with one upstream row and its downstream rows, "
            "as algorithm.skpo.upstream_baseline=spatial rolls out"
            if spatial
            else "one upstream row (skpo_segment_index 0) and its downstream rows"
        )
        raise ValueError(
            f"SKPO batch is malformed: each uid needs {layout} (segments with several upstream rows: "
            f"{duplicated[:3]}, without downstream rows: {orphan_up[:3]}, without an upstream row: "
            f"{orphan_down[:3]}; uids with other segment indices than {sorted(expected)}: {wrong_segments[:3]}). "
            "Use the skpo_agent agent loop (actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent) with "
            "the run's algorithm.skpo settings and do not drop rows between rollout and training (e.g. "
            "algorithm.filter_groups)."
        )


def _observed_lengths(rows: SKPORows, groups, lengths, up, down, conditioning: str) -> np.ndarray:
    """L_q observation: mean tokens the model wrote to answer q in this step's G answers.

    In `continual` mode an answer continues the kept segment, so the segment's tokens are
    part of the full response (the agent loop caps segment + answer at response_length, so
    the observation stays within the budget start-up checked); in `skip`/`unconditional` an
    answer is complete on its own. With upstream_baseline=spatial each upstream row observes its
    own segment's G/2 answers; the tracker takes the mean of the prompt's two (`update_trackers`).
    """
    answers: dict = {}  # group label -> its downstream rows, in batch order (a label may be a (uid, stage) tuple)
    for row in np.flatnonzero(down):
        answers.setdefault(groups[row], []).append(row)
    observed = []
    for group, segment_length in zip(groups[up], rows.segment_lengths[up]):
        answer_length = lengths[answers[group]].mean()
        observed.append(answer_length + (segment_length if conditioning == "continual" else 0))
    return np.array(observed, dtype=np.float64)


def step_metrics(rows: SKPORows, step: AdvantageStep, rhos: dict, state: SKPOState) -> dict[str, float]:
    """The `skpo/*` metrics of one step; the tracker ones as of after `update_trackers`.

    With multi-split the `skpo/upstream/*`, `skpo/downstream/*` and `skpo/rollout/*` metrics pool
    all stages' rows (an upstream row is one stage of one prompt, so `skpo/upstream/rows` x
    `skpo/rollout/candidate_tokens_mean` stays the step's candidate tokens), a downstream "group"
    is one (uid, stage); `_multi_split_metrics` adds each stage's own and the per-prompt totals.
    With upstream_baseline=spatial they pool both kept segments' upstream rows (the baseline is
    the spatial one), a downstream group is still the uid's G answers, and
    `skpo/upstream/spatial_tie_rate` is the share of prompts whose two R_I are equal.
    """
    up, down = step.upstream, step.downstream
    groups = rows.stage_groups()
    stages = rows.stage_of_rows()
    first_stage = up & (stages == 1)
    down_rewards = step.rewards[down]
    answers: dict = {}
    for reward, group in zip(down_rewards, groups[down]):
        answers.setdefault(group, []).append(reward)
    zero_groups = [all(r == rewards[0] for r in rewards) for rewards in answers.values()]
    raw_up_adv = step.upstream_rewards - step.baselines
    keys = step.upstream_keys
    up_stages = stages[up]
    tracked = [state.value_tracker(k).value(state.tracker_key(key, k)) for key, k in zip(keys, up_stages)]
    out = {
        "skpo/upstream/reward_mean": _mean(step.upstream_rewards),
        "skpo/upstream/reward_std": _std(step.upstream_rewards),
        "skpo/upstream/baseline_mean": _mean(step.baselines),
        "skpo/upstream/advantage_mean": _mean(raw_up_adv),
        "skpo/upstream/advantage_std": _std(raw_up_adv),
        "skpo/upstream/segment_length_mean": _mean(rows.segment_lengths[up]),
        "skpo/upstream/rows": int(up.sum()),
        "skpo/upstream/first_visit_rate": _mean(step.first_visit),
        "skpo/downstream/reward_mean": _mean(down_rewards),
        "skpo/downstream/advantage_abs_mean": _mean(np.abs(step.advantages[down])),
        "skpo/downstream/zero_adv_group_rate": _mean(np.array(zero_groups, dtype=np.float64)),
        "skpo/downstream/answer_length_mean": _mean(step.lengths[down]),
        "skpo/downstream/rows": int(down.sum()),
        "skpo/tracker/value_mean": _mean(np.array([tracker_to_reward(v) for v in tracked])),
        "skpo/tracker/length_mean": _mean(np.array([state.lengths.value(k) for k in keys])),
        "skpo/tracker/rho_mean": _mean(list(rhos.values())),
        "skpo/tracker/prompts": len(state.values),
        # The driver's t_q (t_1); every row of a prompt carries it (multi-split's t_k: segment lengths per stage).
        "skpo/split_length_mean": _mean(rows.split_lengths[first_stage]),
    }
    if rows.segment_nll is not None:
        # One upstream row per set of candidates: the spatial baseline's two segments were cut from the same ones.
        sampled = up & (rows.segment_index_of_rows() == 0)
        candidates_per_prompt = state.config.num_candidates or down.sum() / max(sampled.sum(), 1)  # None = G
        out["skpo/rollout/segment_nll_mean"] = _mean(rows.segment_nll[up])
        # Per upstream row (one stage's candidates, or half a prompt's with the spatial baseline), so rows x mean
        # is the step's candidate tokens for any K and either baseline.
        out["skpo/rollout/candidate_tokens_mean"] = float(rows.candidate_tokens[sampled].sum() / max(up.sum(), 1))
        out["skpo/rollout/early_eos_share"] = _mean(rows.early_eos_candidates[sampled] / candidates_per_prompt)
    if state.config.upstream_reward == "own_completion" and rows.completion_tokens is not None:
        # "w/o MC"'s extra decoding: the kept candidate's completion, per prompt.
        out["skpo/rollout/completion_tokens_mean"] = _mean(rows.completion_tokens[up])
    if state.config.num_splits > 1:
        out.update(_multi_split_metrics(rows, step, state))
    if state.config.upstream_baseline == "spatial":
        out["skpo/upstream/spatial_tie_rate"] = _spatial_tie_rate(rows.groups[up], step.upstream_rewards)
    if step.judged_clean is not None:
        out.update(oracle_agreement_metrics(step.estimated_upstream_advantages, step.judged_clean, step.first_visit))
    return out


def oracle_agreement_metrics(paper: np.ndarray, judged_clean: np.ndarray, first_visit: np.ndarray) -> dict:
    """How often the paper's upstream advantage has the segment judge's sign, first visits and revisits apart.

        agreement = #{j : A_j > 0 and s_j clean, or A_j < 0 and s_j slipped} / #{j : A_j != 0}

    over the step's upstream rows of each kind (A = 0, e.g. a batch of equal a or an excluded first
    visit, has no sign and is left out). The counts are logged too, so a run's rate can be pooled over
    steps; the rate is absent where a kind has no signed row.
    """
    out = {"skpo/upstream/oracle_clean_rate": _mean(judged_clean)}
    for kind, rows in (("first_visit", first_visit), ("revisit", ~first_visit)):
        signed = rows & (paper != 0)
        agreeing = signed & ((paper > 0) == judged_clean)
        out[f"skpo/upstream/oracle_signed_rows_{kind}"] = int(signed.sum())
        out[f"skpo/upstream/oracle_agreeing_rows_{kind}"] = int(agreeing.sum())
        if signed.any():
            out[f"skpo/upstream/oracle_agreement_{kind}"] = float(agreeing.sum() / signed.sum())
    return out


def _spatial_tie_rate(prompts: np.ndarray, rewards: np.ndarray) -> float:
    """The share of prompts (uids) whose two kept segments' R_I are equal: the spatial baseline gives both 0."""
    by_prompt: dict = {}
    for prompt, reward in zip(prompts, rewards):
        by_prompt.setdefault(prompt, set()).add(float(reward))
    return _mean([len(seen) == 1 for seen in by_prompt.values()])


def _per_prompt_sums(uids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The sum of `values` per uid (a prompt's upstream rows, one per stage), in order of first appearance."""
    sums: dict = {}
    for uid, value in zip(uids, values):
        sums[uid] = sums.get(uid, 0) + value
    return np.array(list(sums.values()), dtype=np.float64)


def _multi_split_metrics(rows: SKPORows, step: AdvantageStep, state: SKPOState) -> dict[str, float]:
    """`skpo/multi_split/*` and the per-stage `..._stage{k}` metrics (docs/algorithm.md, "Multi-split").

    Per prompt (uid): how many stages ran, and why a prompt stopped before K: its last kept
    candidate ended (EOS), or else the response budget (`core.split.next_stage_runs`).
    """
    num_splits = state.config.num_splits
    up, down = step.upstream, step.downstream
    stages = rows.stage_of_rows()
    last_stage: dict = {}
    ended_at_last: dict = {}
    ended = rows.segment_ended if rows.segment_ended is not None else np.zeros(len(stages), dtype=np.int64)
    for uid, stage, was_ended in zip(rows.groups[up], stages[up], ended[up]):
        if stage >= last_stage.get(uid, 0):
            last_stage[uid], ended_at_last[uid] = int(stage), bool(was_ended)
    runs = np.array(list(last_stage.values()), dtype=np.float64)
    stopped = {uid: k < num_splits for uid, k in last_stage.items()}
    out = {
        "skpo/multi_split/stages_mean": _mean(runs),
        "skpo/multi_split/all_stages_rate": _mean(runs == num_splits),
        "skpo/multi_split/stopped_eos_rate": _mean([stopped[u] and ended_at_last[u] for u in last_stage]),
        "skpo/multi_split/stopped_budget_rate": _mean([stopped[u] and not ended_at_last[u] for u in last_stage]),
        "skpo/tracker/stage_values": len(state.stage_values),
    }
    if rows.candidate_tokens is not None:
        # What a prompt's candidates cost over all the stages it ran.
        out["skpo/multi_split/candidate_tokens_per_prompt"] = _mean(
            _per_prompt_sums(rows.groups[up], rows.candidate_tokens[up])
        )
    up_stages = stages[up]
    raw = step.upstream_rewards - step.baselines
    for k in range(1, num_splits + 1):
        mine = up_stages == k
        rows_k = up & (stages == k)
        out[f"skpo/upstream/rows_stage{k}"] = int(mine.sum())
        out[f"skpo/upstream/reward_mean_stage{k}"] = _mean(step.upstream_rewards[mine])
        out[f"skpo/upstream/baseline_mean_stage{k}"] = _mean(step.baselines[mine])
        out[f"skpo/upstream/advantage_mean_stage{k}"] = _mean(raw[mine])
        out[f"skpo/upstream/first_visit_rate_stage{k}"] = _mean(step.first_visit[mine])
        out[f"skpo/upstream/segment_length_mean_stage{k}"] = _mean(rows.segment_lengths[rows_k])
        out[f"skpo/downstream/reward_mean_stage{k}"] = _mean(step.rewards[down & (stages == k)])
        if rows.candidate_tokens is not None:
            out[f"skpo/rollout/candidate_tokens_mean_stage{k}"] = _mean(rows.candidate_tokens[rows_k])
    return out


def _mean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else 0.0


def _std(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std()) if x.size else 0.0
