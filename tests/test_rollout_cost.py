"""The rollout-cost benchmark counts what it claims to count (small run on the tiny model)."""

import asyncio
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from skpo_verl.benchmarks import rollout_cost
from skpo_verl.benchmarks.rollout_cost import GRPO_AGENT, SKPO_AGENT, Cost, Spread

PROMPTS, G, RESPONSE, BLOCK = 3, 2, 12, 16


def test_rollout_cost_counts_requests_and_prefill_and_prints_ratios(tmp_path):
    costs = rollout_cost.run(
        PROMPTS, G, RESPONSE, mean_length=RESPONSE, seed=0, block_size=BLOCK, model_dir=str(tmp_path), pairs=2
    )
    assert [len(costs["grpo"]), len(costs["skpo"])] == [2, 2]
    assert all(cost.requests == PROMPTS * G for cost in costs["grpo"])
    assert all(cost.requests == 2 * PROMPTS * G for cost in costs["skpo"])
    grpo, skpo = costs["grpo"][0], costs["skpo"][0]

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    lengths = [
        len(
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)[
                "input_ids"
            ]
        )
        for p in rollout_cost.PROBLEMS[:PROMPTS]
    ]
    assert (grpo.requests, skpo.requests) == (PROMPTS * G, 2 * PROMPTS * G)
    assert grpo.prefill == G * sum(lengths)
    # Per prompt, the first request computes q; the G-1 others reuse q's full blocks but its last token.
    assert grpo.prefill_with_reuse == sum(n + (G - 1) * (n - (n - 1) // BLOCK * BLOCK) for n in lengths)
    # SKPO: G candidates of <= t_q tokens from q, G answers from [s, q] (s <= t_q tokens).
    split = costs["split_lengths"]
    assert all(2 <= t <= 6 for t in split)  # U{ceil(12/6), ..., floor(12/2)}
    assert (
        G * sum(lengths) + G * sum(lengths)
        < skpo.prefill
        <= G * sum(lengths) + G * sum(n + t for n, t in zip(lengths, split))
    )
    assert skpo.prefill_with_reuse < skpo.prefill
    assert skpo.decoded <= G * sum(split) + PROMPTS * G * RESPONSE

    args = SimpleNamespace(
        prompts=PROMPTS, group_size=G, response_length=RESPONSE, mean_length=RESPONSE, block_size=BLOCK
    )
    printed = rollout_cost.report(costs, args)
    assert f"{'server requests':40s}{grpo.requests:>12.6g}{skpo.requests:>12.6g}{2.0:>12.3f}" in printed
    assert f"{skpo.decoded / grpo.decoded:>12.3f}" in printed.splitlines()[3]
    assert "timed: median (min-max) of 2 pairs" in printed


def test_measure_pairs_warms_up_each_method_once_then_alternates():
    calls = []

    async def measure(agent_name):
        calls.append(agent_name)
        return len(calls)  # stands for the pass's Cost: its position in the run

    costs = asyncio.run(rollout_cost.measure_pairs(measure, pairs=3))
    assert calls == [GRPO_AGENT, SKPO_AGENT] * 4
    assert costs == {"grpo": [3, 5, 7], "skpo": [4, 6, 8]}  # passes 1 and 2 (the warm-up) are not counted


def test_pair_ratios_median_and_range_by_hand():
    grpo = [2.0, 4.0, 1.0, 3.0, 2.5]
    skpo = [3.0, 4.4, 1.5, 3.0, 2.0]
    ratios = rollout_cost.pair_ratios(grpo, skpo)
    assert ratios == pytest.approx([1.5, 1.1, 1.5, 1.0, 0.8])
    # Sorted 0.8, 1.0, 1.1, 1.5, 1.5: the median of the pairs' ratios, not the ratio of the medians (3.0 / 2.5 = 1.2).
    assert Spread.of(ratios) == pytest.approx(Spread(median=1.1, low=0.8, high=1.5))
    assert Spread.of(grpo) == Spread(median=2.5, low=1.0, high=4.0)
    assert Spread.of([1.0, 1.2, 1.4, 2.0]).median == pytest.approx(1.3)  # even count: mean of the middle two
    with pytest.raises(ValueError, match="pairs need one of each"):
        rollout_cost.pair_ratios([1.0], [1.0, 2.0])


def test_vllm_report_gives_medians_ranges_and_the_target_on_the_median_ratio():
    def cost(decoded, wall, segment):
        return Cost(decoded, 100, 50, 8, wall, float("nan"), segment_seconds=segment, answer_seconds=1.0)

    costs = {
        "grpo": [cost(30, 2.0, 0.0), cost(30, 4.0, 0.0), cost(30, 1.0, 0.0)],
        "skpo": [cost(40, 2.2, 0.5), cost(42, 4.8, 0.7), cost(40, 1.5, 0.6)],
        "split_lengths": [4],
    }
    args = SimpleNamespace(engine="vllm", prompts=1, group_size=8, response_length=12, mean_length=12, block_size=32)
    lines = rollout_cost.report(costs, args).splitlines()
    assert lines[1] == "3 pairs: GRPO and SKPO passes alternating, after one uncounted warm-up pass of each"
    assert f"{'decoded tokens':40s}{30:>12d}{40:>12d}{40 / 30:>12.3f}" in lines  # the first pair's counts
    assert "counts in the other pairs: differ: decoded tokens SKPO 40-42" in lines
    # Pairs' wall ratios 1.1, 1.2, 1.5: median 1.2, over the 1.15 target.
    assert f"{'wall time (s)':40s}{'2 (1-4)':>24s}{'2.2 (1.5-4.8)':>24s}{'1.2 (1.1-1.5)':>24s}" in lines
    # GRPO has no candidate phase (0 s): no ratio.
    assert f"{'per prompt: until answers can start (s)':40s}{'0 (0-0)':>24s}{'0.6 (0.5-0.7)':>24s}{'-':>24s}" in lines
    assert lines[-1] == "wall time SKPO/GRPO, median of 3 pairs 1.200 (range 1.100-1.500): target <= 1.15 not met"


def test_vllm_engine_costs_come_from_each_request_and_split_skpo_time_at_the_segment(tmp_path):
    """What `--engine vllm` reports, from recorded requests (hand-made here; the engine's own
    `num_cached_tokens` gives the prefix reuse): SKPO's time per prompt splits at the moment its
    last candidate ended, the answers (inputs ending with q) after it."""
    from skpo_verl.demo.tiny_model import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(str(tmp_path)))
    q0, q1 = list(rollout_cost._question_ids(tokenizer).values())[:2]
    s = (7, 8, 9)
    Request = rollout_cost._Request
    skpo = [
        Request(q0, decoded=3, cached=0, started=10.0, ended=11.0),  # candidates of prompt 0
        Request(q0, decoded=3, cached=0, started=10.0, ended=12.0),
        Request(s + q0, decoded=5, cached=16, started=12.0, ended=15.0),  # its answers from [s, q]
        Request(s + q0, decoded=4, cached=0, started=12.5, ended=14.0),
        Request(q1, decoded=2, cached=0, started=10.5, ended=11.5),  # prompt 1: one candidate, one answer
        Request(s + q1, decoded=6, cached=0, started=11.5, ended=13.5),
    ]
    cost = rollout_cost._vllm_cost(skpo, wall=5.0, agent_name="skpo_agent", tokenizer=tokenizer)
    assert cost.decoded == 23 and cost.requests == 6
    assert cost.prefill == 4 * len(q0) + 2 * len(q1) + 3 * len(s)  # s precedes q in three answers
    assert cost.prefill_with_reuse == cost.prefill - 16
    assert cost.segment_seconds == (2.0 + 1.0) / 2  # prompt 0: 10 -> 12; prompt 1: 10.5 -> 11.5
    assert cost.answer_seconds == (3.0 + 2.0) / 2  # prompt 0: 12 -> 15; prompt 1: 11.5 -> 13.5
    grpo = rollout_cost._vllm_cost(skpo[:2], wall=2.0, agent_name="single_turn_agent", tokenizer=tokenizer)
    assert (grpo.segment_seconds, grpo.answer_seconds) == (0.0, 2.0)
