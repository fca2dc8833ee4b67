"""Sec. 4.3, Fig. 4: implicit advantage. Along each method's correct responses, whose intermediate
states lead an outside model to the right answer more often than the other methods' do?

Inputs: one generations file per method (`skpo-evaluate generate` output: data_source, index,
sample, ground_truth, response), the benchmark parquets for the problem texts, the methods'
tokenizer, and an evaluator model behind any backend (the paper: an external chat model).

1. Every response is judged with the benchmark's grader; only the correct ones are kept
   (optionally at most `responses_per_problem` per method and problem, the first by sample).
2. Each kept response is cut at P relative token positions, k/P for k = 1..P (the last cut is the
   whole response), with the methods' tokenizer (conditioning.token_cut).
3. At each cut the evaluator continues K times. `instruction` (default, as the paper ran it: chat
   APIs offer no raw completion): one user message holding the problem and the partial solution
   and the instruction to continue exactly where it stops without repeating any work
   (`continuation_message`). `raw`: the problem's own prompt with the partial solution opening
   the answer (continual conditioning; the paper's "ideal", needing a completions endpoint and
   the evaluator's tokenizer). The partial solution followed by the continuation is graded.
4. R = the fraction of the K continuations graded right, per response and cut; a method's R at a
   (problem, position) is the mean over its kept responses to that problem.
5. Per problem and position, across the methods present there (at least two):
   Â_m = (R_m - mean_m R) / std_m R, population std (the methods are the whole population); all 0
   when every R is equal.
6. The curve: mean Â over problems per method and position, with a seeded 95% bootstrap band over
   problems (evaluation/uncertainty.py). Read it comparatively, as the paper warns: Â says which
   method's states the evaluator finishes best, not how good a state is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from skpo_verl.analysis.conditioning import answer_text, conditioned, judge, token_cut
from skpo_verl.evaluation.backends import Backend, Request, Sampling, complete_all
from skpo_verl.evaluation.scoring import judge_all
from skpo_verl.evaluation.uncertainty import (
    DEFAULT_CONFIDENCE,
    DEFAULT_REPLICATES,
    benchmark_rng,
    percentile_interval,
    replicate_weights,
)

CONTINUATION_MODES = ("instruction", "raw")
DEFAULT_POSITIONS = 100
DEFAULT_CONTINUATIONS = 8


def continuation_message(problem: str, partial_solution: str) -> str:
    """The instruction-style prompt (our wording of the paper's Appendix D)."""
    return (
        "Below are a math problem and the first part of a solution to it, written by someone else.\n"
        "Carry on from exactly the point where the partial solution stops, as if you had written it: "
        "do not restate the problem, do not repeat or redo any step that is already there, and do not "
        "start over. Finish the reasoning and give the final answer in \\boxed{}.\n\n"
        f"## Problem\n{problem}\n\n## Partial solution\n{partial_solution}"
    )


def problem_text(prompt: Sequence[dict]) -> str:
    """The text of the prompt's last user turn: the problem as the methods saw it."""
    users = [message["content"] for message in prompt if message.get("role") == "user"]
    if not users:
        raise ValueError(f"prompt {list(prompt)!r} has no user turn to take the problem from.")
    return str(users[-1])


def correct_responses(generations: dict[str, list[dict]], responses_per_problem: int | None = None) -> pd.DataFrame:
    """{method: generations} -> the correct ones: method, data_source, index, sample, ground_truth, response."""
    kept = []
    for method, samples in generations.items():
        right = judge_all(samples)
        frame = pd.DataFrame(samples).assign(method=method, correct=right)
        if "sample" not in frame:  # a generator other than skpo-evaluate's: number them in file order
            frame["sample"] = frame.groupby(["data_source", "index"]).cumcount()
        frame = frame[frame["correct"] == 1.0].sort_values(["data_source", "index", "sample"])
        if responses_per_problem is not None:
            frame = frame.groupby(["data_source", "index"], sort=False).head(responses_per_problem)
        kept.append(frame)
    columns = ["method", "data_source", "index", "sample", "ground_truth", "response"]
    return pd.concat(kept, ignore_index=True)[columns] if kept else pd.DataFrame(columns=columns)


def prefix_requests(
    responses: pd.DataFrame,
    prompts: dict[tuple[str, int], Sequence[dict]],
    tokenizer,
    positions: int,
    continuations: int,
    mode: str,
    seed: int,
) -> tuple[pd.DataFrame, list[Request]]:
    """One row per (response, cut) and K requests per row, in row order."""
    if mode not in CONTINUATION_MODES:
        raise ValueError(f"--continuation-mode {mode!r}: choose one of {', '.join(CONTINUATION_MODES)}.")
    rows, requests = [], []
    for item in responses.itertuples(index=False):
        prompt = prompts.get((item.data_source, int(item.index)))
        if prompt is None:
            raise ValueError(
                f"{item.method}: {item.data_source} problem {item.index} is not in the benchmark parquet; "
                "point --data-dir at the data the generations were made from."
            )
        for k in range(1, positions + 1):
            prefix, tokens = token_cut(item.response, k / positions, tokenizer)
            rows.append(
                {
                    "method": item.method,
                    "data_source": item.data_source,
                    "index": int(item.index),
                    "sample": int(item.sample),
                    "ground_truth": item.ground_truth,
                    "position": k / positions,
                    "prefix_tokens": tokens,
                    "prefix": prefix,
                }
            )
            for _ in range(continuations):
                request_seed = seed + len(requests)
                if mode == "instruction":
                    message = {"role": "user", "content": continuation_message(problem_text(prompt), prefix)}
                    requests.append(Request(messages=(message,), seed=request_seed))
                else:
                    requests.append(conditioned(prompt, prefix, "continual", request_seed))
    return pd.DataFrame(rows), requests


def success_rates(prefixes: pd.DataFrame, texts: list[str], continuations: int) -> pd.DataFrame:
    """prefixes + `success`: the fraction of each cut's K continuations graded right (prefix + continuation)."""
    rewards = []
    for row_number, row in enumerate(prefixes.itertuples(index=False)):
        for text in texts[row_number * continuations : (row_number + 1) * continuations]:
            reward, _ = judge(row.data_source, answer_text(row.prefix, text, "continual"), row.ground_truth)
            rewards.append(reward)
    success = np.asarray(rewards, dtype=float).reshape(len(prefixes), continuations).mean(axis=1)
    return prefixes.drop(columns=["prefix", "ground_truth"]).assign(success=success)


def normalised_advantages(per_prefix: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, position) across methods: R_m = mean success of method m's responses there,
    Â_m = (R_m - mean R) / std R (population std; 0 when all R are equal). Cells with one method are dropped."""
    cells = (
        per_prefix.groupby(["data_source", "index", "position", "method"], sort=True)
        .agg(responses=("success", "size"), success_rate=("success", "mean"))
        .reset_index()
    )
    by_cell = cells.groupby(["data_source", "index", "position"])["success_rate"]
    mean, methods = by_cell.transform("mean"), by_cell.transform("size")
    spread = by_cell.transform(lambda rates: rates.std(ddof=0))
    spread = spread.where(spread > 1e-12)
    cells["advantage"] = ((cells["success_rate"] - mean) / spread).fillna(0.0)
    return cells[methods >= 2].reset_index(drop=True)


def advantage_curve(
    cells: pd.DataFrame,
    seed: int = 0,
    replicates: int = DEFAULT_REPLICATES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> pd.DataFrame:
    """Per method and position: mean Â over problems and its bootstrap interval (problems resampled, seeded)."""
    rows = []
    for method, group in cells.groupby("method", sort=False):
        table = group.pivot_table(index=["data_source", "index"], columns="position", values="advantage")
        values = table.to_numpy()
        present = ~np.isnan(values)
        # A method may lack a position of a problem (no cell there): each resample's mean is over the
        # problems it drew that have one.
        draws = replicate_weights(len(values), replicates, benchmark_rng(seed, method))
        with np.errstate(invalid="ignore", divide="ignore"):
            low, high = percentile_interval((draws @ np.nan_to_num(values)) / (draws @ present), confidence)
        for column, position in enumerate(table.columns):
            rows.append(
                {
                    "method": method,
                    "position": float(position),
                    "mean_advantage": float(np.nanmean(values[:, column])),
                    "ci_low": float(low[column]),
                    "ci_high": float(high[column]),
                    "problems": int(present[:, column].sum()),
                }
            )
    return pd.DataFrame(rows, columns=["method", "position", "mean_advantage", "ci_low", "ci_high", "problems"])


def run_implicit_advantage(
    generations: dict[str, list[dict]],
    prompts: dict[tuple[str, int], Sequence[dict]],
    tokenizer,
    evaluator: Backend,
    sampling: Sampling,
    positions: int = DEFAULT_POSITIONS,
    continuations: int = DEFAULT_CONTINUATIONS,
    mode: str = "instruction",
    responses_per_problem: int | None = None,
    replicates: int = DEFAULT_REPLICATES,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(curve per method and position, cells per problem x position x method, one row per cut)."""
    if len(generations) < 2:
        raise ValueError("implicit advantage compares methods: give at least two (--method NAME=GENERATIONS ...).")
    responses = correct_responses(generations, responses_per_problem)
    if responses.empty:
        raise ValueError("no method has a correct response; nothing to cut.")
    prefixes, requests = prefix_requests(responses, prompts, tokenizer, positions, continuations, mode, sampling.seed)
    texts = complete_all(evaluator, requests, sampling, desc="continuations")
    per_prefix = success_rates(prefixes, texts, continuations)
    cells = normalised_advantages(per_prefix)
    if cells.empty:
        raise ValueError("no problem has correct responses from two methods; the methods cannot be compared.")
    return advantage_curve(cells, sampling.seed, replicates), cells, per_prefix
