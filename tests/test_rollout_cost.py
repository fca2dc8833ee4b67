"""The rollout-cost benchmark counts what it claims to count (small run on the tiny model)."""

from types import SimpleNamespace

from transformers import AutoTokenizer

from skpo_verl.benchmarks import rollout_cost

PROMPTS, G, RESPONSE, BLOCK = 3, 2, 12, 16


def test_rollout_cost_counts_requests_and_prefill_and_prints_ratios(tmp_path):
    costs = rollout_cost.run(
        PROMPTS, G, RESPONSE, mean_length=RESPONSE, seed=0, block_size=BLOCK, model_dir=str(tmp_path)
    )
    grpo, skpo = costs["grpo"], costs["skpo"]

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
    assert f"{skpo.decoded / grpo.decoded:>12.3f}" in printed.splitlines()[2]


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
