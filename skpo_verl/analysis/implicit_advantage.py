"""Sec. 4.3: implicit advantage. Are one checkpoint's intermediate states better than another's
at equal final correctness?

For two checkpoints A and B: K responses per problem from each, graded. Matching: for each
problem and final correctness (right / wrong), the first min(n_A, n_B) responses of each
checkpoint are kept, so both sides hold the same number of right and of wrong responses per
problem. For every kept response and every position bin (default 0-20%, ..., 80-100%), a cut
point is drawn uniformly inside the bin; a continuation model (an OpenAI-compatible endpoint,
as the paper used an external model, or a local one) continues q + prefix M times (continual
conditioning) and the Monte Carlo success is the fraction of right continuations. Rows give
the mean MC success per checkpoint, final correctness and bin; `difference` rows give B - A.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from skpo_verl.analysis.conditioning import answer_text, conditioned, cut, judge
from skpo_verl.evaluation.backends import Backend, Request, Sampling, complete_all

DEFAULT_BINS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))


def sample_responses(backend: Backend, problems: pd.DataFrame, per_problem: int, sampling: Sampling) -> pd.DataFrame:
    """K graded responses per problem: columns problem, sample, response, correct."""
    requests, keys = [], []
    for problem, prompt in enumerate(problems["prompt"]):
        for sample in range(per_problem):
            keys.append((problem, sample))
            requests.append(Request(messages=tuple(dict(m) for m in prompt), seed=sampling.seed + len(requests)))
    texts = complete_all(backend, requests, sampling, desc="responses")
    rows = []
    for (problem, sample), text in zip(keys, texts):
        row = problems.iloc[problem]
        correct, _ = judge(row["data_source"], text, row["reward_model"]["ground_truth"])
        rows.append({"problem": problem, "sample": sample, "response": text, "correct": correct})
    return pd.DataFrame(rows)


def match_on_correctness(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (problem, correct): the first min(n_a, n_b) responses of each side."""
    kept_a, kept_b = [], []
    for key, group_a in a.groupby(["problem", "correct"], sort=True):
        group_b = b[(b["problem"] == key[0]) & (b["correct"] == key[1])]
        count = min(len(group_a), len(group_b))
        kept_a.append(group_a.head(count))
        kept_b.append(group_b.head(count))
    empty = a.iloc[0:0]
    return pd.concat(kept_a or [empty]), pd.concat(kept_b or [empty])


def run_implicit_advantage(
    responses: dict[str, pd.DataFrame],
    problems: pd.DataFrame,
    continuation_backend: Backend,
    sampling: Sampling,
    continuations: int = 8,
    bins: Sequence[tuple[float, float]] = DEFAULT_BINS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """responses: {checkpoint name: matched responses}. Returns (summary, one row per prefix)."""
    rng = np.random.default_rng(sampling.seed)
    keys, requests = [], []
    for name, frame in responses.items():
        for item in frame.itertuples():
            for low, high in bins:
                prefix = cut(item.response, float(rng.uniform(low, high)))
                prompt = problems.iloc[item.problem]["prompt"]
                for _ in range(continuations):
                    keys.append((name, item.problem, item.sample, item.correct, f"{low:.0%}-{high:.0%}", prefix))
                    requests.append(conditioned(prompt, prefix, "continual", sampling.seed + len(requests)))
    texts = complete_all(continuation_backend, requests, sampling, desc="continuations")
    rewards = []
    for (name, problem, sample, correct, label, prefix), text in zip(keys, texts):
        row = problems.iloc[problem]
        reward, _ = judge(
            row["data_source"], answer_text(prefix, text, "continual"), row["reward_model"]["ground_truth"]
        )
        rewards.append(
            {
                "checkpoint": name,
                "problem": problem,
                "sample": sample,
                "final_correct": correct,
                "bin": label,
                "prefix_chars": len(prefix),
                "reward": reward,
            }
        )
    per_prefix = (
        pd.DataFrame(
            rewards, columns=["checkpoint", "problem", "sample", "final_correct", "bin", "prefix_chars", "reward"]
        )
        .groupby(["checkpoint", "problem", "sample", "final_correct", "bin", "prefix_chars"], sort=False)["reward"]
        .mean()
        .rename("mc_success")
        .reset_index()
    )
    summary = (
        per_prefix.groupby(["checkpoint", "final_correct", "bin"], sort=False)["mc_success"]
        .agg(
            responses="size",
            mc_success="mean",
            std_error=lambda x: float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan"),
        )
        .reset_index()
    )
    return _with_difference(summary, list(responses)), per_prefix


def _with_difference(summary: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Append rows checkpoint="B - A": the second checkpoint's mc_success minus the first's."""
    if len(names) != 2 or summary.empty:
        return summary
    first, second = (summary[summary["checkpoint"] == n].set_index(["final_correct", "bin"]) for n in names)
    diff = (second["mc_success"] - first["mc_success"]).dropna().rename("mc_success").reset_index()
    diff.insert(0, "checkpoint", f"{names[1]} - {names[0]}")
    return pd.concat([summary, diff], ignore_index=True)
