"""`skpo-evaluate`: the paper's evaluation, in three steps that can run on different machines.

    skpo-evaluate generate --model CKPT --data-dir ~/data/skpo --generations gen.jsonl   # vLLM (GPU)
    skpo-evaluate generate --backend hf --model CKPT ...                                  # CPU or GPU
    skpo-evaluate generate --backend openai --base-url http://127.0.0.1:8000/v1 --model NAME ...
    skpo-evaluate score --generations gen.jsonl --base-model Llama-3.2-3B-Instruct --method SKPO \\
        --results results.json                                                            # CPU
    skpo-evaluate render --results results.json --out-dir tables/                         # CPU
    skpo-evaluate render --results results.json --compare GRPO SKPO                       # B - A, paired
    skpo-evaluate generate --backend hf --model CKPT --data-file val.parquet --temperature 0 ...  # any held-out set

`score` adds (or replaces) one row of the results file, with each problem's count of right
answers, and re-renders the tables; `render` only re-renders from the results file. Tables
carry avg@k, unbiased pass@k and seeded 95% bootstrap intervals over problems;
`render --compare A B` writes B − A per benchmark with a paired bootstrap interval, A and B
being entries of --results (METHOD or BASE_MODEL/METHOD) or two results files (every entry
the two share, matched by base model and method).
"""

from __future__ import annotations

import argparse
import os
import sys

import openai

from skpo_verl.evaluation import scoring, table
from skpo_verl.evaluation.backends import Sampling, add_backend_arguments, make_backend
from skpo_verl.evaluation.generate import generate
from skpo_verl.evaluation.protocol import (
    BENCHMARKS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    benchmark,
    held_out_set,
)
from skpo_verl.evaluation.uncertainty import DEFAULT_REPLICATES


def add_sampling_arguments(parser: argparse.ArgumentParser, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--top-p", type=float, default=DEFAULT_TOP_P)
    parser.add_argument("--max-tokens", type=int, default=max_tokens)
    parser.add_argument("--seed", type=int, default=0)


def sampling_from(args: argparse.Namespace) -> Sampling:
    return Sampling(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skpo-evaluate", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="sample answers (vllm, hf or an OpenAI-compatible server)")
    data = gen.add_mutually_exclusive_group(required=True)
    data.add_argument("--data-dir", help="folder with the benchmark parquets from skpo-prepare-data")
    data.add_argument(
        "--data-file", help="one verl parquet outside Table 1 (e.g. a training task's held-out set), --samples each"
    )
    gen.add_argument("--samples", type=int, help="with --data-file: answers per problem, avg@k's k (default 1)")
    gen.add_argument("--generations", required=True, help="output JSON-lines file (appended to: reruns resume)")
    gen.add_argument(
        "--benchmarks",
        default=",".join(bench.data_source for bench in BENCHMARKS),
        help="comma-separated data_sources (default: all eight Table 1 benchmarks)",
    )
    add_sampling_arguments(gen)
    add_backend_arguments(gen)

    score = commands.add_parser("score", help="judge saved generations, add a results row, render the tables")
    score.add_argument("--generations", required=True)
    score.add_argument("--base-model", required=True, help="table group, e.g. Llama-3.2-3B-Instruct")
    score.add_argument("--method", required=True, help="table row, e.g. SKPO")
    score.add_argument("--results", required=True, help="results JSON file (created if missing)")
    score.add_argument("--out-dir", help="where to render the tables (default: next to --results)")
    score.add_argument(
        "--samples", type=int, help="k of avg@k for data sources outside Table 1 (a --data-file's; its --samples)"
    )

    add_uncertainty_arguments(score)

    render = commands.add_parser("render", help="re-render the tables from a results file; compare two runs")
    render.add_argument("--results", help="results JSON file (needed unless --compare names two files)")
    render.add_argument("--out-dir", help="default: next to --results (or next to the first compared file)")
    render.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="write B − A (compare.md, compare.csv): entries METHOD or BASE_MODEL/METHOD of --results, "
        "or two results files",
    )
    add_uncertainty_arguments(render)
    return parser.parse_args(argv)


def add_uncertainty_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("intervals (docs/evaluation.md, Uncertainty)")
    group.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resamples")
    group.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, help="bootstrap resamples")
    group.add_argument("--pass-k", type=int, help="k of pass@k for every benchmark (default: its sample count)")


def uncertainty_from(args: argparse.Namespace) -> table.Uncertainty:
    if args.replicates < 1:
        raise ValueError(f"--replicates must be >= 1, got {args.replicates}.")
    if args.pass_k is not None and args.pass_k < 1:
        raise ValueError(f"--pass-k must be >= 1, got {args.pass_k}.")
    return table.Uncertainty(seed=args.bootstrap_seed, replicates=args.replicates, pass_k=args.pass_k)


def run_generate(args: argparse.Namespace) -> None:
    if args.samples is not None and args.data_file is None:
        raise ValueError("--samples goes with --data-file; Table 1 benchmarks take the protocol's k.")
    benchmarks = [benchmark(name.strip()) for name in args.benchmarks.split(",") if name.strip()]
    written = generate(
        make_backend(args),
        args.data_dir,
        args.generations,
        sampling_from(args),
        benchmarks,
        data_file=args.data_file,
        samples=args.samples or 1,
    )
    print(f"{written} samples written to {args.generations}")


def run_score(args: argparse.Namespace) -> None:
    generations = scoring.read_generations(args.generations)
    table_one = {bench.data_source for bench in BENCHMARKS}
    others = sorted({sample["data_source"] for sample in generations} - table_one)
    if others and args.samples is None:
        raise ValueError(
            f"{', '.join(others)} is not a Table 1 benchmark: give its samples per problem with --samples K."
        )
    samples = {source: held_out_set(source, args.samples).samples for source in others}
    counts = scoring.correct_counts(generations, scoring.judge_all(generations), samples=samples)
    scores = scoring.scores_from_counts(counts)
    for source in others:  # the tables show Table 1's columns only
        print(f"{source}: avg@{args.samples} = {scores[source]:.1f}")
    results = table.load_results(args.results) if os.path.exists(args.results) else {"entries": []}
    table.add_entry(results, args.base_model, args.method, scores, counts)
    table.save_results(results, args.results)
    args.compare = None
    run_render(args)


def run_render(args: argparse.Namespace) -> None:
    uncertainty = uncertainty_from(args)
    if args.compare:
        run_compare(args, uncertainty)
        return
    if not args.results:
        raise ValueError("render needs --results RESULTS.json (or --compare with two results files).")
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.results))
    paths = table.write_all(table.load_results(args.results), out_dir, uncertainty)
    print("\n".join(paths.values()))


def run_compare(args: argparse.Namespace, uncertainty: table.Uncertainty) -> None:
    first, second = args.compare
    if first.endswith(".json") and second.endswith(".json"):
        runs = [table.load_results(first), table.load_results(second)]
        keys = [(e["base_model"], e["method"]) for e in runs[0]["entries"]]
        shared = [key for key in keys if key in {(e["base_model"], e["method"]) for e in runs[1]["entries"]}]
        if not shared:
            raise ValueError(f"{first} and {second} share no (base model, method) entry to compare.")
        pairs = []
        for base, method in shared:
            a, b = (table.find_entries(run, f"{base}/{method}")[0] for run in runs)
            pairs.append((f"{first}: {base}/{method}", f"{second}: {base}/{method}", a, b))
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(first))
    else:
        if not args.results:
            raise ValueError("--compare METHOD METHOD reads the entries from --results RESULTS.json.")
        results = table.load_results(args.results)
        a, b = (table.find_entries(results, selector)[0] for selector in (first, second))
        pairs = [(first, second, a, b)]
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.results))
    compared = [(label_a, label_b, table.compare_entries(a, b, uncertainty)) for label_a, label_b, a, b in pairs]
    os.makedirs(out_dir, exist_ok=True)
    markdown = table.render_comparison(compared, uncertainty)
    paths = [os.path.join(out_dir, "compare.md"), os.path.join(out_dir, "compare.csv")]
    with open(paths[0], "w") as handle:
        handle.write(markdown)
    with open(paths[1], "w") as handle:
        handle.write(table.comparison_csv(compared))
    print(markdown + "\n".join(paths))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        {"generate": run_generate, "score": run_score, "render": run_render}[args.command](args)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"skpo-evaluate: error: {error}", file=sys.stderr)
        return 1
    except openai.OpenAIError as error:
        print(f"skpo-evaluate: error: the server failed after retries ({error}); rerun to resume.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
