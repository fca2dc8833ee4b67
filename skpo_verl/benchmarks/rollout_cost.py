"""Rollout cost of SKPO against plain single-turn GRPO, same prompts, same G, same server.

    python -m skpo_verl.benchmarks.rollout_cost [--prompts 8] [--group-size 4] [--response-length 64]

Runs verl's own agent loops (`skpo_agent` and `single_turn_agent`, instantiated from verl's
registry as its worker does) against one local server (`skpo_verl.cpu.local_server`): a
tiny random Qwen2 on CPU that serves one sequence at a time and counts tokens decoded,
tokens prefilled from scratch, and tokens prefilled after block-granular prefix-cache hits
(the model of vLLM's automatic prefix caching described there). All prompts of a method run
concurrently, as the V1 worker runs them; the prefix cache starts empty for each method.

What it measures is the request pattern, not a GPU: decoded tokens are SKPO's G candidates
(<= t_q each) plus G answers against GRPO's G answers, and prefill counts the [s, q] inputs.
A random model almost never emits EOS, so answers run to the response length; with
L_q = response length, E[t_q] = L_q / 3 and the expected decoded ratio is about 1 + 1/3.
Wall and compute times on a shared CPU machine vary from run to run (the token counts do not,
for a given seed); they say nothing about a batched GPU engine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from dataclasses import dataclass

import numpy as np

PROBLEMS = (
    "What is 17 + 25?",
    "Compute 6 times 7.",
    "Solve for x: 3x + 4 = 19.",
    "What is the remainder of 100 divided by 7?",
    "How many primes are smaller than 20?",
    "What is 2 to the power of 10?",
    "Simplify 84 / 12.",
    "What is the sum of the first 10 positive integers?",
    "A rectangle is 3 by 8. What is its area?",
    "What is 15 percent of 200?",
    "What is the greatest common divisor of 48 and 36?",
    "Evaluate 9 squared minus 4 squared.",
)


@dataclass
class Cost:
    decoded: int
    prefill: int
    prefill_with_reuse: int
    requests: int
    wall_seconds: float
    compute_seconds: float  # time the server spent generating (excludes agent-loop overheads)


def run(
    prompts: int, group_size: int, response_length: int, mean_length: float, seed: int, block_size: int, model_dir: str
) -> dict:
    """Roll out the same prompts with GRPO then SKPO; returns {"grpo": Cost, "skpo": Cost, "split_lengths": [...]}.

    The tiny model is built in `model_dir` (reused when already there).
    """
    import torch
    import verl.experimental.agent_loop  # noqa: F401 - registers single_turn_agent and (via the plugin) skpo_agent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skpo_verl.config import SKPOConfig
    from skpo_verl.core.split import sample_split_length
    from skpo_verl.cpu.local_server import LocalTokenServer, compose_rollout_config, instantiate_agent_loop
    from skpo_verl.demo.tiny_model import build_tiny_model
    from skpo_verl.rollout.lengths import check_lengths

    if prompts > len(PROBLEMS):
        raise SystemExit(f"--prompts can be at most {len(PROBLEMS)}")
    torch.set_num_threads(1)  # one request at a time; extra threads only add noise to wall time
    skpo = SKPOConfig()
    max_split = math.ceil(skpo.split_high * mean_length)
    overrides = [
        f"actor_rollout_ref.rollout.n={group_size}",
        "data.max_prompt_length=128",
        f"data.max_response_length={response_length}",
        f"actor_rollout_ref.rollout.prompt_length={128 + max_split}",
        f"+algorithm.skpo.tracker.initial_length={max(mean_length, 1)}",
    ]
    model_dir = build_tiny_model(model_dir)
    config = compose_rollout_config(model_dir, overrides)
    check_lengths(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    server = LocalTokenServer(
        model, [tokenizer.eos_token_id], default_max_tokens=response_length, seed=seed, block_size=block_size
    )
    rng = np.random.default_rng(seed)
    split_lengths = [sample_split_length(mean_length, skpo.split_low, skpo.split_high, rng) for _ in range(prompts)]
    sampling = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)

    async def one_prompt(agent_name: str, p: int):
        async def session(session_id: int):
            loop = instantiate_agent_loop(agent_name, config, server, tokenizer)
            return await loop.run(
                dict(sampling),
                raw_prompt=[{"role": "user", "content": PROBLEMS[p]}],
                uid=f"{agent_name}-{p}",
                session_id=session_id,
                index=p,
                global_steps=1,
                skpo_split_length=split_lengths[p],
            )

        return await asyncio.gather(*(session(i) for i in range(group_size)))

    async def measure(agent_name: str) -> Cost:
        server.reset()
        started = time.perf_counter()
        await asyncio.gather(*(one_prompt(agent_name, p) for p in range(prompts)))
        wall = time.perf_counter() - started
        stats = server.stats
        return Cost(
            stats.decoded_tokens,
            stats.prefill_tokens,
            stats.prefill_tokens_with_reuse,
            stats.requests,
            wall,
            stats.busy_seconds,
        )

    async def main():
        await one_prompt("single_turn_agent", 0)  # warm-up: first-call overheads out of the timing
        return {"grpo": await measure("single_turn_agent"), "skpo": await measure("skpo_agent")}

    costs = asyncio.run(main())
    costs["split_lengths"] = split_lengths
    return costs


def report(costs: dict, args) -> str:
    grpo, skpo = costs["grpo"], costs["skpo"]
    rows = [
        ("decoded tokens", "decoded"),
        ("prefilled tokens, no prefix reuse", "prefill"),
        ("prefilled tokens, with prefix reuse", "prefill_with_reuse"),
        ("server requests", "requests"),
        ("wall time (s)", "wall_seconds"),
        ("server compute time (s)", "compute_seconds"),
    ]
    lines = [
        f"rollout cost: {args.prompts} prompts, G={args.group_size}, response length {args.response_length}, "
        f"L_q={args.mean_length:g} (t_q drawn in U[L/6, L/2]: {costs['split_lengths']}), "
        f"prefix-cache block {args.block_size}",
        f"{'':40s}{'GRPO':>12s}{'SKPO':>12s}{'SKPO/GRPO':>12s}",
    ]
    for label, name in rows:
        g, s = getattr(grpo, name), getattr(skpo, name)
        lines.append(f"{label:40s}{g:>12.6g}{s:>12.6g}{s / g:>12.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=64)
    parser.add_argument("--mean-length", type=float, default=None, help="L_q for t_q (default: response length)")
    parser.add_argument("--block-size", type=int, default=16, help="prefix-cache block size (vLLM's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.mean_length is None:
        args.mean_length = float(args.response_length)
    with tempfile.TemporaryDirectory(prefix="skpo_rollout_cost_") as model_dir:
        costs = run(
            args.prompts, args.group_size, args.response_length, args.mean_length, args.seed, args.block_size, model_dir
        )
    print(report(costs, args))


if __name__ == "__main__":
    main()
