"""Rewards and advantages of the two roles (docs/algorithm.md, Rewards and Advantages). numpy, float64.

Downstream answers get group-relative advantages (GRPO); the upstream segment gets its MC
reward R_I minus the prompt's tracked baseline V_prev(q), normalised over the batch (SPO), or
with `upstream_baseline=spatial` (ours) minus the mean R_I of its prompt's two kept segments.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _group_index(groups: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Dense group ids 0..n-1 in order of first appearance, for any hashable labels (uids are
    strings in an object array; np.unique would sort them and fails on mixed types)."""
    ids: dict[Hashable, int] = {}
    inverse = np.fromiter((ids.setdefault(g, len(ids)) for g in groups), dtype=np.int64)
    return inverse, len(ids)


def _as_rewards(rewards: np.ndarray, name: str) -> np.ndarray:
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {rewards.shape}.")
    if not np.all(np.isfinite(rewards)):
        raise ValueError(f"{name} contain non-finite values.")
    return rewards


def downstream_advantages(rewards: np.ndarray, groups: np.ndarray, eps: float, norm: str = "group") -> np.ndarray:
    """A_i = (R_i - mean_g R) / (std_g R + eps) within each group g of answers to one prompt.

    norm="group" is Eq. 5 (the default). norm="batch" is the reading of Appendix C's
    "normalize advantages using batch statistics": the same group-centred rewards divided by
    one std over all downstream rows of the batch, A_i = (R_i - mean_g R) / (std_B + eps),
    std_B the sample std of the centred rewards (constant groups included, as zeros).

    std is the sample std (ddof = 1), as verl's GRPO (torch.std). A group whose rewards are
    all equal, a group of one answer included, gets exactly 0 (docs/algorithm.md, Advantages; verl's GRPO would
    pass a lone answer's raw reward through instead).

    Args:
        rewards: R_II, [B_down].
        groups: group label of each row (uid), [B_down].
        eps: > 0.
        norm: "group" or "batch".
    Returns:
        A, float64 [B_down].
    """
    if norm not in ("group", "batch"):
        raise ValueError(f"Unknown downstream normalisation {norm!r}; expected 'group' or 'batch'.")
    rewards = _as_rewards(rewards, "downstream rewards")
    if len(groups) != len(rewards):
        raise ValueError(f"{len(rewards)} downstream rewards but {len(groups)} group labels.")
    inverse, n_groups = _group_index(groups)
    size = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    mean = np.bincount(inverse, weights=rewards, minlength=n_groups) / np.maximum(size, 1.0)
    centred = rewards - mean[inverse]
    squares = np.bincount(inverse, weights=centred**2, minlength=n_groups)
    std = np.sqrt(squares / np.maximum(size - 1.0, 1.0))
    # Checked on the raw rewards, not on std: a constant group's float mean can leave tiny
    # non-zero residuals that eps would not absorb.
    highest = np.full(n_groups, -np.inf)
    lowest = np.full(n_groups, np.inf)
    np.maximum.at(highest, inverse, rewards)
    np.minimum.at(lowest, inverse, rewards)
    constant = highest == lowest
    centred = np.where(constant[inverse], 0.0, centred)
    scale = std[inverse] if norm == "group" else np.full_like(centred, centred.std(ddof=1) if centred.size > 1 else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(centred == 0.0, 0.0, centred / (scale + eps))


def upstream_rewards(
    downstream_rewards: np.ndarray,
    groups_down: np.ndarray,
    groups_up: np.ndarray,
    mode: str,
    sessions_down: np.ndarray | None = None,
    completion_rewards: np.ndarray | None = None,
    sessions_up: np.ndarray | None = None,
) -> np.ndarray:
    """R_I for each upstream row.

        "mc_mean":         R_I = (1/G) sum_i R_II(o_i) over the group's downstream rows (the paper)
        "own_completion":  R_I = R(s + rest), the kept candidate's own completion ("w/o MC" ablation),
                           given per upstream row in `completion_rewards`
        "first_answer":    R_I = R_II(o_0), the answer of the session that returned the upstream row,
                           session 0 (one MC sample); with upstream_baseline=spatial s_b's is session G/2

    Args:
        downstream_rewards: R_II, [B_down].
        groups_down: group label of each downstream row, [B_down].
        groups_up: group label of each upstream row, [B_up].
        mode: one of the above.
        sessions_down: answer number of each downstream row, [B_down]; needed by "first_answer".
        completion_rewards: R(s + rest) of each upstream row, [B_up]; needed by "own_completion".
        sessions_up: the session that returned each upstream row, [B_up]; None: session 0 for every row.
    Returns:
        R_I, float64 [B_up].
    """
    rewards = _as_rewards(downstream_rewards, "downstream rewards")
    if len(groups_down) != len(rewards):
        raise ValueError(f"{len(rewards)} downstream rewards but {len(groups_down)} group labels.")
    if mode not in ("mc_mean", "own_completion", "first_answer"):
        raise ValueError(f"Unknown upstream reward mode {mode!r}; expected mc_mean, own_completion or first_answer.")
    if mode == "first_answer" and (sessions_down is None or len(sessions_down) != len(rewards)):
        raise ValueError("Upstream reward mode 'first_answer' needs one session number per downstream reward.")
    if mode == "own_completion":
        if completion_rewards is None or len(completion_rewards) != len(groups_up):
            raise ValueError("Upstream reward mode 'own_completion' needs one completion reward per upstream row.")
        completion_rewards = _as_rewards(completion_rewards, "completion rewards")

    rows_of_group: dict[Hashable, list[int]] = {}
    for row, group in enumerate(groups_down):
        rows_of_group.setdefault(group, []).append(row)

    out = np.empty(len(groups_up), dtype=np.float64)
    for i, group in enumerate(groups_up):
        rows = rows_of_group.get(group)
        if not rows:
            raise ValueError(
                f"Upstream group {group!r} has no downstream rows, so its reward R_I is undefined; every "
                "upstream segment needs the answers sampled from it in the same batch."
            )
        if mode == "mc_mean":
            out[i] = rewards[rows].mean()
        elif mode == "own_completion":
            out[i] = completion_rewards[i]
        else:
            session = 0 if sessions_up is None else sessions_up[i]
            first = [row for row in rows if sessions_down[row] == session]
            if len(first) != 1:
                raise ValueError(
                    f"Upstream group {group!r} has {len(first)} downstream rows with session {session}; mode "
                    "'first_answer' needs exactly one."
                )
            out[i] = rewards[first[0]]
    return out


def spatial_baselines(rewards: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """The spatial upstream baseline (`upstream_baseline=spatial`, ours): the mean R_I of the row's prompt.

        b_j = mean_{i : prompt(i) = prompt(j)} R_I(i)

    Each prompt keeps two segments s_a, s_b, so the advantage a_j = R_I(j) - b_j is
    +-(R_I(s_a) - R_I(s_b)) / 2: the two segments of one prompt, at the same number of answers,
    compared with each other, so the prompt's difficulty cancels (docs/algorithm.md, "Spatial
    upstream baseline (ours)"). It takes the place of V_prev(q) in `upstream_advantages`.

    Args:
        rewards: R_I, [B_up].
        prompts: the prompt (uid) of each upstream row, [B_up].
    Returns:
        b, float64 [B_up].
    """
    rewards = _as_rewards(rewards, "upstream rewards")
    if len(prompts) != len(rewards):
        raise ValueError(f"{len(rewards)} upstream rewards but {len(prompts)} prompt labels.")
    inverse, n_prompts = _group_index(prompts)
    size = np.bincount(inverse, minlength=n_prompts).astype(np.float64)
    return (np.bincount(inverse, weights=rewards, minlength=n_prompts) / size)[inverse]


def upstream_advantages(rewards: np.ndarray, baselines: np.ndarray, eps: float) -> np.ndarray:
    """SPO's single-stream advantage, normalised over the batch's upstream rows.

        A_j = R_I(j) - V_prev(q_j),    A_j <- (A_j - mean_B A) / (std_B A + eps)

    R_I and V_prev both in reward space [-1, 1]; V_prev is the tracker value from before
    this step's update. std is the sample std (ddof = 1), as downstream. A single upstream
    row, or rows whose A are all equal, give exactly 0: the centred advantage is 0 there
    (and a ddof = 1 std of one value is undefined).

    Args:
        rewards: R_I, [B_up].
        baselines: V_prev(q), or `spatial_baselines` with upstream_baseline=spatial, [B_up].
        eps: > 0.
    Returns:
        normalised A, float64 [B_up].
    """
    rewards = _as_rewards(rewards, "upstream rewards")
    baselines = _as_rewards(baselines, "upstream baselines")
    if rewards.shape != baselines.shape:
        raise ValueError(f"upstream rewards {rewards.shape} and baselines {baselines.shape} differ in shape.")
    advantages = rewards - baselines
    if advantages.size == 0 or np.all(advantages == advantages[0]):
        return np.zeros_like(advantages)
    centred = advantages - advantages.mean()
    return centred / (advantages.std(ddof=1) + eps)


def upstream_advantages_rms(rewards: np.ndarray, baselines: np.ndarray, eps: float) -> np.ndarray:
    """The single-stream advantage scaled over the batch but not centred (`upstream_norm=rms`, ours).

        A_j = a_j / (sqrt(mean_B a^2) + eps),    a_j = R_I(j) - V_prev(q_j)

    The batch mean is not subtracted, so each row keeps the sign of its own R_I - V_prev: on a
    first visit (V_prev = the initial value 0) a segment whose answers are mostly right gets a
    positive advantage however the batch's other prompts did, as a GRPO answer that is right
    never gets a negative one. The root mean square (not the std) sets the scale, so a batch
    where every a_j is the same still gets |A| = 1 instead of a division by zero.
    All a_j = 0 (or no rows) gives 0 (docs/algorithm.md, "Interventions on the dip").

    Args:
        rewards: R_I, [B_up].
        baselines: V_prev(q), or `spatial_baselines`, [B_up].
        eps: > 0.
    Returns:
        A, float64 [B_up].
    """
    rewards = _as_rewards(rewards, "upstream rewards")
    baselines = _as_rewards(baselines, "upstream baselines")
    if rewards.shape != baselines.shape:
        raise ValueError(f"upstream rewards {rewards.shape} and baselines {baselines.shape} differ in shape.")
    advantages = rewards - baselines
    if advantages.size == 0 or not np.any(advantages):
        return np.zeros_like(advantages)
    return advantages / (np.sqrt(np.mean(advantages**2)) + eps)


def upstream_advantages_excluding(
    rewards: np.ndarray, baselines: np.ndarray, excluded: np.ndarray, eps: float, normalise=upstream_advantages
) -> np.ndarray:
    """SPO's single-stream advantage with some upstream rows taken out of it.

        A_j = 0                                   for an excluded row j
        A_j = (a_j - mean_K a) / (std_K a + eps)  otherwise, a_j = R_I(j) - V_prev(q_j)

    with mean and std (ddof = 1) over K, the rows not excluded: `upstream_advantages` on them
    alone, so an excluded row neither gets a gradient nor shifts the others' normalisation.
    `first_visit_upstream=zero` excludes each prompt's first visit, whose V_prev is only the
    tracker's initial value (docs/algorithm.md, "Interventions on the dip").

    Args:
        rewards: R_I, [B_up].
        baselines: V_prev(q), [B_up].
        excluded: bool, [B_up].
        eps: > 0.
        normalise: the advantage of the kept rows, `upstream_advantages` (the paper's batch
            normalisation) or `upstream_advantages_rms`.
    Returns:
        A, float64 [B_up]; all 0 when fewer than two rows remain or theirs are all equal.
    """
    excluded = np.asarray(excluded, dtype=bool)
    rewards = _as_rewards(rewards, "upstream rewards")
    if excluded.shape != rewards.shape:
        raise ValueError(f"excluded {excluded.shape} and upstream rewards {rewards.shape} differ in shape.")
    out = np.zeros_like(rewards)
    kept = ~excluded
    out[kept] = normalise(rewards[kept], np.asarray(baselines, dtype=np.float64)[kept], eps)
    return out


def upstream_advantages_by_stage(
    rewards: np.ndarray,
    baselines: np.ndarray,
    stages: np.ndarray,
    eps: float,
    normalise=upstream_advantages,
    excluded: np.ndarray | None = None,
) -> np.ndarray:
    """The upstream advantage normalised within each multi-split stage (docs/algorithm.md, "Multi-split").

        A_j = normalise({R_I(i) - V_prev(i) : stage(i) = stage(j)})_j

    Stage k's rows are compared only with the batch's other stage-k rows: a later segment's
    answers see more of the reasoning, so their R_I runs higher, and centring all stages
    together would push every stage-1 segment down against them. With one stage (num_splits =
    1, the paper) this is `normalise` over all rows, the same numbers. `excluded` rows
    (first_visit_upstream=zero) get 0 and are left out of their stage's statistics
    (`upstream_advantages_excluding`).

    Args:
        rewards: R_I, [B_up].
        baselines: V_prev of each row's own tracker (prompt key for stage 1, (key, k) later), [B_up].
        stages: stage number of each row, [B_up].
        eps: > 0.
        normalise: `upstream_advantages` (the paper) or `upstream_advantages_rms`.
        excluded: bool [B_up] or None.
    Returns:
        A, float64 [B_up].
    """
    rewards = _as_rewards(rewards, "upstream rewards")
    stages = np.asarray(stages)
    if stages.shape != rewards.shape:
        raise ValueError(f"stages {stages.shape} and upstream rewards {rewards.shape} differ in shape.")
    baselines = np.asarray(baselines, dtype=np.float64)
    out = np.zeros_like(rewards)
    for stage in dict.fromkeys(stages.tolist()):
        rows = stages == stage
        if excluded is None:
            out[rows] = normalise(rewards[rows], baselines[rows], eps)
        else:
            out[rows] = upstream_advantages_excluding(
                rewards[rows], baselines[rows], np.asarray(excluded, dtype=bool)[rows], eps, normalise
            )
    return out
