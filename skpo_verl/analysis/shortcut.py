"""Fig. 3: does a segment shortcut the answer? Continuations under the three conditionings.

For each problem q: one response r ~ pi(.|q); segments s = r cut at each relative token position
(default six, evenly from 1/6 to 1/2: the range SKPO draws its split from; counted with the
policy's tokenizer, conditioning.token_cut); for each segment and
each conditioning (unconditional, continual, skip) G continuations. Per (position,
conditioning), averaged over problems:
- diversity: the number of distinct final answers among the G (no extracted answer counts as
  one more value);
- advantage-zero rate: the fraction of groups whose G rewards are all equal, i.e. whose
  group-relative advantages (core.advantages.downstream_advantages) are all 0;
- length: mean tokens generated (the policy's tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from skpo_verl.analysis.conditioning import CONDITIONINGS, answer_text, conditioned, judge, token_cut
from skpo_verl.core.advantages import downstream_advantages
from skpo_verl.evaluation.backends import Backend, Request, Sampling, complete_all

DEFAULT_POSITIONS = tuple(float(x) for x in np.linspace(1 / 6, 1 / 2, 6))


def group_statistics(rewards: Sequence[float], answers: Sequence[str], lengths: Sequence[int]) -> dict:
    """One group of G continuations: distinct answers, whether every advantage is 0, mean length."""
    advantages = downstream_advantages(np.asarray(rewards, dtype=float), np.zeros(len(rewards)), eps=1e-6)
    return {
        "diversity": len(set(answers)),
        "advantage_zero": float(np.all(advantages == 0.0)),
        "length": float(np.mean(lengths)),
    }


def run_shortcut(
    backend: Backend,
    problems: pd.DataFrame,
    sampling: Sampling,
    tokenizer,
    positions: Sequence[float] = DEFAULT_POSITIONS,
    group_size: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per position x conditioning, samples: one row per continuation).

    tokenizer: the policy's fast tokenizer, which counts segment positions and lengths in tokens.
    """
    prompts = [tuple(dict(m) for m in prompt) for prompt in problems["prompt"]]
    first = [Request(messages=prompt, seed=sampling.seed + i) for i, prompt in enumerate(prompts)]
    responses = complete_all(backend, first, sampling, desc="responses from q")
    keys, requests = [], []
    for problem, (prompt, response) in enumerate(zip(prompts, responses)):
        response_tokens = len(tokenizer(response, add_special_tokens=False)["input_ids"])
        for position in positions:
            segment, segment_tokens = token_cut(response, position, tokenizer)
            for conditioning in CONDITIONINGS:
                for _g in range(group_size):
                    keys.append((problem, position, conditioning, segment, segment_tokens, response_tokens))
                    requests.append(conditioned(prompt, segment, conditioning, sampling.seed + len(requests)))
    continuations = complete_all(backend, requests, sampling, desc="continuations")
    samples = []
    for (problem, position, conditioning, segment, segment_tokens, response_tokens), text in zip(keys, continuations):
        row = problems.iloc[problem]
        reward, answer = judge(
            row["data_source"], answer_text(segment, text, conditioning), row["reward_model"]["ground_truth"]
        )
        samples.append(
            {
                "problem": problem,
                "position": position,
                "conditioning": conditioning,
                "response_tokens": response_tokens,
                "segment_tokens": segment_tokens,
                "reward": reward,
                "answer": answer,
                "length": len(tokenizer(text, add_special_tokens=False)["input_ids"]),
                "continuation": text,
            }
        )
    samples = pd.DataFrame(samples)
    groups = [
        dict(
            position=position,
            conditioning=conditioning,
            **group_statistics(group["reward"], group["answer"], group["length"]),
        )
        for (problem, position, conditioning), group in samples.groupby(
            ["problem", "position", "conditioning"], sort=False
        )
    ]
    summary = (
        pd.DataFrame(groups)
        .groupby(["position", "conditioning"], sort=False)
        .agg(
            groups=("diversity", "size"),
            diversity=("diversity", "mean"),
            advantage_zero_rate=("advantage_zero", "mean"),
            mean_length_tokens=("length", "mean"),
        )
        .reset_index()
    )
    return summary, samples
