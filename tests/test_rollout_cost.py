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
