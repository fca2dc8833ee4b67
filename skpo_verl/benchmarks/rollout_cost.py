"""Rollout cost of SKPO against plain single-turn GRPO, same prompts, same G, same server.

    python -m skpo_verl.benchmarks.rollout_cost [--engine local|vllm] [--prompts 8] [--group-size 4]
        [--response-length 64] [--pairs 5]

Runs verl's own agent loops (`skpo_agent` and `single_turn_agent`, instantiated from verl's
registry as its worker does) against one server, serving a tiny random Qwen2 on CPU. All prompts
of a method run concurrently, as the V1 worker runs them; the prefix cache starts empty for each
pass. After one warm-up pass of each method (not counted), GRPO and SKPO passes alternate,
`--pairs` of each, in one process: a pair is a GRPO pass and the SKPO pass right after it. Timed
figures are reported as the median over pairs with their range (min-max), and SKPO/GRPO as the
median of the pairs' ratios with its range: the wall ratio of a single pair of 2-second passes
(--engine vllm, 12 prompts x G 8) was 1.05, 1.29, 1.37 and 1.14 in four runs of one command.
Token and request counts are the first pair's (the report says whether other pairs differ).
Two engines:

- `local` (default): `skpo_verl.cpu.local_server`, one sequence at a time, which counts tokens
  decoded, tokens prefilled from scratch, and tokens prefilled after block-granular prefix-cache
  hits (a model of vLLM's automatic prefix caching described there).
- `vllm`: verl's own vLLM server (`vLLMReplica`/`vLLMHttpServer`, standalone, through verl's
  `LLMServerClient`) on vLLM's CPU build, continuous batching and prefix caching included. The
  prefix-cache hits are vLLM's own (each request's `num_cached_tokens`); the time a prompt's
  candidates take before its answers can start, and the answers' own time, say where SKPO's wall
  time goes.

What it measures is the request pattern, not a GPU: decoded tokens are SKPO's G candidates
(<= t_q each) plus G answers against GRPO's G answers, and prefill counts the [s, q] inputs.
A random model almost never emits EOS, so answers run to the response length; with
L_q = response length, E[t_q] = L_q / 3 and the expected decoded ratio is about 1 + 1/3.
Wall and compute times on a shared CPU machine vary from run to run (the local engine's token
counts do not, for a given seed); the local engine's say nothing about a batched engine, the
vLLM engine's are a batched engine's on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
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
    compute_seconds: float  # local engine: time the server spent generating (excludes agent-loop overheads)
    # vllm engine, mean over prompts: seconds from a prompt's first request until its answers could
    # start (SKPO: its G candidates; GRPO: 0), and from then until its last answer ended.
    segment_seconds: float = 0.0
    answer_seconds: float = 0.0


@dataclass
class _Request:
    prompt_ids: tuple
    decoded: int
    cached: int
    started: float
    ended: float


GRPO_AGENT, SKPO_AGENT = "single_turn_agent", "skpo_agent"


async def measure_pairs(measure, pairs: int) -> dict[str, list[Cost]]:
    """One uncounted warm-up pass of each method, then `pairs` GRPO passes, each followed by a SKPO pass.

    `measure(agent_name)` runs one pass and returns its Cost. Alternating the passes spreads slow
    spells of a shared machine over both methods; the i-th entries of the two lists are pair i.
    """
    await measure(GRPO_AGENT)  # warm-up: first-call overheads (and vLLM's first batches) out of the timing
    await measure(SKPO_AGENT)
    grpo, skpo = [], []
    for _ in range(pairs):
        grpo.append(await measure(GRPO_AGENT))
        skpo.append(await measure(SKPO_AGENT))
    return {"grpo": grpo, "skpo": skpo}


@dataclass(frozen=True)
class Spread:
    """The median of some measurements and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values) -> Spread:
        values = [float(v) for v in values]
        return cls(float(np.median(values)), min(values), max(values))


def pair_ratios(grpo: list[float], skpo: list[float]) -> list[float]:
    """SKPO/GRPO of each pair: skpo[i] / grpo[i]."""
    if len(grpo) != len(skpo):
        raise ValueError(f"{len(grpo)} GRPO passes against {len(skpo)} SKPO passes: pairs need one of each")
    return [s / g for g, s in zip(grpo, skpo)]


class CountingClient:
    """verl's `LLMServerClient` (or any `generate` of its signature), counting what each request costs.

    Not a dataclass: Hydra would take a dataclass handed to an agent loop for a structured config.
    """

    def __init__(self, client):
        self.client = client
        self.requests: list[_Request] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        started = time.perf_counter()
        output = await self.client.generate(
            request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs
        )
        cached = int(output.extra_fields.get("num_cached_tokens") or 0)
        self.requests.append(_Request(tuple(prompt_ids), len(output.token_ids), cached, started, time.perf_counter()))
        return output


def _setup(prompts, group_size, response_length, mean_length, seed, model_dir, extra_overrides=()):
    """The tiny model, verl's composed config (SKPO's lengths checked), and the per-prompt t_q."""
    import verl.experimental.agent_loop  # noqa: F401 - registers single_turn_agent and (via the plugin) skpo_agent
    from transformers import AutoTokenizer

    from skpo_verl.config import SKPOConfig
    from skpo_verl.core.split import sample_split_length
    from skpo_verl.cpu.local_server import compose_rollout_config
    from skpo_verl.demo.tiny_model import build_tiny_model
    from skpo_verl.rollout.lengths import check_lengths

    if prompts > len(PROBLEMS):
        raise SystemExit(f"--prompts can be at most {len(PROBLEMS)}")
    skpo = SKPOConfig()
    max_split = math.ceil(skpo.split_high * mean_length)
    overrides = [
        f"actor_rollout_ref.rollout.n={group_size}",
        "data.max_prompt_length=128",
        f"data.max_response_length={response_length}",
        f"actor_rollout_ref.rollout.prompt_length={128 + max_split}",
        f"+algorithm.skpo.tracker.initial_length={max(mean_length, 1)}",
        *extra_overrides,
    ]
    model_dir = build_tiny_model(model_dir)
    config = compose_rollout_config(model_dir, overrides)
    check_lengths(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(seed)
    split_lengths = [sample_split_length(mean_length, skpo.split_low, skpo.split_high, rng) for _ in range(prompts)]
    return model_dir, config, tokenizer, split_lengths


def _roll_out(agent_name, prompts, group_size, config, server, tokenizer, split_lengths):
    """All prompts of one method, each prompt's G sessions together, as verl's V1 worker runs them."""
    from skpo_verl.cpu.local_server import instantiate_agent_loop

    sampling = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)

    async def one_prompt(p: int):
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

    return asyncio.gather(*(one_prompt(p) for p in range(prompts)))


def run(
    prompts: int,
    group_size: int,
    response_length: int,
    mean_length: float,
    seed: int,
    block_size: int,
    model_dir: str,
    pairs: int = 5,
) -> dict:
    """Roll out the same prompts with GRPO and SKPO in alternating passes (`measure_pairs`).

    Returns {"grpo": [Cost per pair], "skpo": [Cost per pair], "split_lengths": [...]}. The tiny
    model is built in `model_dir` (reused when already there).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from skpo_verl.cpu.local_server import LocalTokenServer

    torch.set_num_threads(1)  # one request at a time; extra threads only add noise to wall time
    model_dir, config, tokenizer, split_lengths = _setup(
        prompts, group_size, response_length, mean_length, seed, model_dir
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    server = LocalTokenServer(
        model, [tokenizer.eos_token_id], default_max_tokens=response_length, seed=seed, block_size=block_size
    )

    async def measure(agent_name: str) -> Cost:
        server.reset()
        started = time.perf_counter()
        await _roll_out(agent_name, prompts, group_size, config, server, tokenizer, split_lengths)
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

    costs = asyncio.run(measure_pairs(measure, pairs))
    costs["split_lengths"] = split_lengths
    return costs


# verl's vLLM server on vLLM's CPU build, as `add_vllm_cpu_settings` in examples/common.sh sets it
# for training (tests/test_launchers.py checks the two agree), serving the checkpoint as it is.
VLLM_CPU_OVERRIDES = (
    "+actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=268435456",
    "actor_rollout_ref.rollout.enforce_eager=True",
    "actor_rollout_ref.rollout.free_cache_engine=False",
    "+actor_rollout_ref.rollout.enable_sleep_mode=False",
    "actor_rollout_ref.rollout.dtype=float32",
)


def run_vllm(
    prompts: int,
    group_size: int,
    response_length: int,
    mean_length: float,
    seed: int,
    model_dir: str,
    block_size: int | None = None,
    pairs: int = 5,
):
    """As `run`, against verl's vLLM server (standalone, one replica) on vLLM's CPU build.

    `block_size`: vLLM's KV-cache block, the unit of its prefix cache (None: vLLM's default, 128
    tokens on CPU, more than these prompts hold). Needs `VERL_PLATFORM=cpu` in this process
    before verl is imported (`main` sets it).
    """
    import ray

    standalone = (
        *VLLM_CPU_OVERRIDES,
        "actor_rollout_ref.rollout.load_format=auto",  # no trainer syncs weights: load the checkpoint
        "actor_rollout_ref.rollout.nnodes=1",
        "actor_rollout_ref.rollout.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.seed={seed}",
        *([f"+actor_rollout_ref.rollout.engine_kwargs.vllm.block_size={block_size}"] if block_size else []),
    )
    model_dir, config, tokenizer, split_lengths = _setup(
        prompts, group_size, response_length, mean_length, seed, model_dir, standalone
    )
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(
            num_cpus=8,
            num_gpus=1,  # the CPU platform's Ray resource for one replica (skpo_verl/cpu/platform.py)
            include_dashboard=False,
            runtime_env={"env_vars": {"VERL_PLATFORM": os.environ["VERL_PLATFORM"]}},
        )
    try:
        from verl.workers.rollout.llm_server import LLMServerManager

        servers = LLMServerManager.create(config)
        client = CountingClient(servers.get_client())

        async def measure(agent_name: str) -> Cost:
            await asyncio.gather(*(replica.clear_kv_cache() for replica in servers.rollout_replicas))
            client.requests = []
            started = time.perf_counter()
            await _roll_out(agent_name, prompts, group_size, config, client, tokenizer, split_lengths)
            wall = time.perf_counter() - started
            return _vllm_cost(client.requests, wall, agent_name, tokenizer)

        costs = asyncio.run(measure_pairs(measure, pairs))
    finally:
        if started_ray:
            ray.shutdown()
    costs["split_lengths"] = split_lengths
    return costs


def _vllm_cost(requests: list[_Request], wall: float, agent_name: str, tokenizer) -> Cost:
    segment, answer = [], []
    for q in _question_ids(tokenizer).values():
        mine = [r for r in requests if r.prompt_ids[-len(q) :] == q]  # q itself, or SKPO's [s, q]
        if not mine:
            continue
        first = min(r.started for r in mine)
        candidates = [r for r in mine if agent_name == SKPO_AGENT and r.prompt_ids == q]
        ready = max((r.ended for r in candidates), default=first)
        segment.append(ready - first)
        answer.append(max(r.ended for r in mine if r not in candidates) - ready)
    return Cost(
        decoded=sum(r.decoded for r in requests),
        prefill=sum(len(r.prompt_ids) for r in requests),
        prefill_with_reuse=sum(len(r.prompt_ids) - r.cached for r in requests),
        requests=len(requests),
        wall_seconds=wall,
        compute_seconds=float("nan"),
        segment_seconds=float(np.mean(segment)),
        answer_seconds=float(np.mean(answer)),
    )


def _question_ids(tokenizer) -> dict[str, tuple]:
    """Each problem's q, as the agent loops tokenize it (the chat template with the generation prompt)."""
    ids = {}
    for problem in PROBLEMS:
        encoded = tokenizer.apply_chat_template([{"role": "user", "content": problem}], add_generation_prompt=True)
        ids[problem] = tuple(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    return ids


# The target for SKPO's rollout wall time on the real engine, relative to GRPO's at equal G.
WALL_TARGET = 1.15


def report(costs: dict, args) -> str:
    grpo_passes, skpo_passes = costs["grpo"], costs["skpo"]
    grpo, skpo = grpo_passes[0], skpo_passes[0]
    engine = getattr(args, "engine", "local")
    counted = [
        ("decoded tokens", "decoded"),
        ("prefilled tokens, no prefix reuse", "prefill"),
        ("prefilled tokens, with prefix reuse", "prefill_with_reuse"),
        ("server requests", "requests"),
    ]
    timed = [("wall time (s)", "wall_seconds")]
    if engine == "vllm":
        timed += [
            ("per prompt: until answers can start (s)", "segment_seconds"),
            ("per prompt: answers (s)", "answer_seconds"),
        ]
        cache = f"vLLM's own prefix cache, block {args.block_size or 'vLLM default (128 on CPU)'}"
    else:
        timed.append(("server compute time (s)", "compute_seconds"))
        cache = f"modelled prefix cache, block {args.block_size}"
    pairs = len(grpo_passes)
    lines = [
        f"rollout cost ({engine} engine): {args.prompts} prompts, G={args.group_size}, response length "
        f"{args.response_length}, L_q={args.mean_length:g} (t_q drawn in U[L/6, L/2]: {costs['split_lengths']}), "
        f"{cache}",
        f"{pairs} pairs: GRPO and SKPO passes alternating, after one uncounted warm-up pass of each",
        f"{'counts, first pair':40s}{'GRPO':>12s}{'SKPO':>12s}{'SKPO/GRPO':>12s}",
    ]
    for label, name in counted:
        g, s = getattr(grpo, name), getattr(skpo, name)
        lines.append(f"{label:40s}{g:>12.6g}{s:>12.6g}{_ratio(s, g):>12s}")
    varying = []
    for label, name in counted:
        for method, passes in (("GRPO", grpo_passes), ("SKPO", skpo_passes)):
            values = [getattr(cost, name) for cost in passes]
            if len(set(values)) > 1:
                varying.append(f"{label} {method} {min(values):g}-{max(values):g}")
    lines.append(f"counts in the other pairs: {'differ: ' + ', '.join(varying) if varying else 'the same'}")
    lines.append(f"{f'timed: median (min-max) of {pairs} pairs':40s}{'GRPO':>24s}{'SKPO':>24s}{'SKPO/GRPO':>24s}")
    for label, name in timed:
        g, s = ([getattr(cost, name) for cost in passes] for passes in (grpo_passes, skpo_passes))
        ratio = _spread(Spread.of(pair_ratios(g, s))) if all(g) else "-"  # GRPO has no candidate phase
        lines.append(f"{label:40s}{_spread(Spread.of(g)):>24s}{_spread(Spread.of(s)):>24s}{ratio:>24s}")
    for name, cost in (("GRPO", grpo), ("SKPO", skpo)):
        lines.append(
            f"prefix-cache hit rate, {name}: {1 - cost.prefill_with_reuse / cost.prefill:.1%} of prefilled tokens "
            "(first pair)"
        )
    if engine == "vllm":
        ratio = Spread.of(pair_ratios([c.wall_seconds for c in grpo_passes], [c.wall_seconds for c in skpo_passes]))
        verdict = "met" if ratio.median <= WALL_TARGET else "not met"
        lines.append(
            f"wall time SKPO/GRPO, median of {pairs} pairs {ratio.median:.3f} "
            f"(range {ratio.low:.3f}-{ratio.high:.3f}): target <= {WALL_TARGET} {verdict}"
        )
    return "\n".join(lines)


def _ratio(s: float, g: float) -> str:
    return f"{s / g:.3f}" if g else "-"


def _spread(spread: Spread) -> str:
    return f"{spread.median:.3g} ({spread.low:.3g}-{spread.high:.3g})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("local", "vllm"), default="local", help="see the module docstring")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=64)
    parser.add_argument("--mean-length", type=float, default=None, help="L_q for t_q (default: response length)")
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="prefix-cache block size: the local engine's model of it (default 16, vLLM's GPU default) or vLLM's "
        "own KV-cache block (default: vLLM's, 128 on CPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pairs", type=int, default=5, help="measured GRPO/SKPO pairs, alternating, after a warm-up pass of each"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {args.pairs}")
    if args.mean_length is None:
        args.mean_length = float(args.response_length)
    with tempfile.TemporaryDirectory(prefix="skpo_rollout_cost_") as model_dir:
        if args.engine == "vllm":
            # verl's CPU platform, before verl is first imported in this process (skpo_verl/cpu/__init__.py).
            os.environ.setdefault("VERL_PLATFORM", "cpu")
            costs = run_vllm(
                args.prompts,
                args.group_size,
                args.response_length,
                args.mean_length,
                args.seed,
                model_dir,
                args.block_size,
                args.pairs,
            )
        else:
            args.block_size = args.block_size or 16
            costs = run(
                args.prompts,
                args.group_size,
                args.response_length,
                args.mean_length,
                args.seed,
                args.block_size,
                model_dir,
                args.pairs,
            )
    print(report(costs, args))


if __name__ == "__main__":
    main()
