"""`skpo-analyze`: the paper's analyses, each writing a CSV and a PNG into --out-dir.

    skpo-analyze mc-sign --out-dir analysis/                     # Appendix A.2, Fig. 5 (CPU, seconds)
    skpo-analyze mc-sign-distance --out-dir analysis/            # Fig. 6a
    skpo-analyze mc-correctness --out-dir analysis/              # Appendix A.3, Fig. 7
    skpo-analyze mc-k-sweep --out-dir analysis/                  # Fig. 8
    skpo-analyze shortcut --backend vllm --model CKPT --data ~/data/skpo/math500.parquet --out-dir analysis/
    skpo-analyze implicit-advantage --method SKPO=skpo.jsonl --method CISPO=cispo.jsonl --method DAPO=dapo.jsonl \\
        --data-dir ~/data/skpo --tokenizer POLICY_TOKENIZER --continuation-backend openai \\
        --continuation-base-url URL --continuation-model NAME --out-dir analysis/     # Sec. 4.3, Fig. 4
    skpo-analyze skip-layout --tokenizer MODEL                   # where [s, q] puts s, per skip_format
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import openai
import pandas as pd

from skpo_verl.analysis import token_advantages
from skpo_verl.analysis.conditioning import load_segment_tokenizer
from skpo_verl.analysis.implicit_advantage import (
    CONTINUATION_MODES,
    DEFAULT_CONTINUATIONS,
    DEFAULT_POSITIONS,
    run_implicit_advantage,
)
from skpo_verl.analysis.shortcut import DEFAULT_POSITIONS as SHORTCUT_POSITIONS
from skpo_verl.analysis.shortcut import run_shortcut
from skpo_verl.analysis.sign_accuracy import DEFAULT_DISTANCE_BINS, sign_accuracy_by_distance, sign_accuracy_grid
from skpo_verl.evaluation.backends import add_backend_arguments, make_backend
from skpo_verl.evaluation.cli import add_sampling_arguments, sampling_from
from skpo_verl.evaluation.generate import load_benchmark
from skpo_verl.evaluation.protocol import benchmark
from skpo_verl.evaluation.scoring import read_generations
from skpo_verl.evaluation.uncertainty import DEFAULT_REPLICATES

DEFAULT_CONTINUATION_SWEEP = ",".join(str(2**k) for k in range(3, 14))  # 8 ... 8192
MATH_BENCHMARKS = "aime2024,aime2025,amc2023,math500,minerva,olympiadbench"  # Sec. 4.3's six


def floats(text: str) -> list[float]:
    return [float(item) for item in text.split(",") if item.strip()]


def integers(text: str) -> list[int]:
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, comma-separated.")
    return values


def spread(text: str) -> tuple[float, float]:
    """'0.3-0.7' -> (0.3, 0.7)."""
    low, _, high = text.partition("-")
    if not high or not 0.0 <= float(low) <= float(high) <= 1.0:
        raise argparse.ArgumentTypeError(f"spread {text!r}: write LOW-HIGH with 0 <= LOW <= HIGH <= 1.")
    return float(low), float(high)


def spreads(text: str) -> list[tuple[float, float]]:
    """'0.45-0.55,0.3-0.7' -> [(0.45, 0.55), (0.3, 0.7)]."""
    return [spread(item) for item in text.split(",")]


def method_file(text: str) -> tuple[str, str]:
    """'SKPO=eval/skpo.jsonl' -> ('SKPO', 'eval/skpo.jsonl')."""
    name, _, path = text.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"--method {text!r}: write NAME=GENERATIONS.jsonl.")
    return name, path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skpo-analyze", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sign = commands.add_parser("mc-sign", help="Appendix A.2, Fig. 5: P(all G advantage signs right) over N, spread")
    sign.add_argument("--group-size", type=int, default=8)
    sign.add_argument("--spreads", type=spreads, default=spreads("0.45-0.55,0.3-0.7"))
    add_sweep_argument(sign)
    sign.add_argument("--trials", type=int, default=200_000, help="simulated groups per (spread, N)")
    add_seed_and_out(sign)

    distance = commands.add_parser(
        "mc-sign-distance", help="Fig. 6a: P(a prefix's sign right) against its distance from the group mean"
    )
    distance.add_argument("--group-size", type=int, default=8)
    distance.add_argument("--spread", type=spread, default=spread("0.3-0.7"), help="p drawn uniformly from it")
    distance.add_argument(
        "--probabilities", type=floats, help="fixed p_1..p_G instead (then --group-size and --spread are unused)"
    )
    distance.add_argument("--bins", type=int, default=DEFAULT_DISTANCE_BINS, help="distance bins (drawn p)")
    distance.add_argument("--continuations", type=integers, default=integers("8,64,512"), help="N values")
    distance.add_argument("--trials", type=int, default=100_000, help="simulated groups per N")
    add_seed_and_out(distance)

    panels = commands.add_parser("mc-correctness", help="Appendix A.3, Fig. 7: groups of c/G right, c = 0..G")
    add_path_arguments(panels)
    panels.add_argument("--continuations", type=int, default=8, help="K, MC continuations per prefix")
    add_seed_and_out(panels)

    sweep = commands.add_parser("mc-k-sweep", help="Fig. 8: MC sign accuracy and MAE over K vs GRPO's constant")
    add_path_arguments(sweep)
    add_sweep_argument(sweep)
    add_seed_and_out(sweep)

    short = commands.add_parser("shortcut", help="Fig. 3: unconditional vs continual vs skip continuations")
    add_data_arguments(short)
    short.add_argument(
        "--positions", type=floats, default=list(SHORTCUT_POSITIONS), help="relative token positions of the cuts"
    )
    short.add_argument("--group-size", type=int, default=8, help="continuations per segment and conditioning")
    add_sampling_arguments(short)
    add_backend_arguments(short)

    implicit = commands.add_parser(
        "implicit-advantage", help="Sec. 4.3, Fig. 4: evaluator success along each method's correct responses"
    )
    implicit.add_argument(
        "--method",
        type=method_file,
        action="append",
        required=True,
        help="NAME=GENERATIONS.jsonl (skpo-evaluate generate's output), once per method, two or more",
    )
    implicit.add_argument("--data-dir", required=True, help="the benchmark parquets (problem texts)")
    implicit.add_argument("--benchmarks", default=MATH_BENCHMARKS, help="data_sources to use (default: six math)")
    implicit.add_argument("--tokenizer", required=True, help="the methods' tokenizer: positions count its tokens")
    implicit.add_argument("--positions", type=int, default=DEFAULT_POSITIONS, help="cuts per response, at k/P")
    implicit.add_argument("--continuations", type=int, default=DEFAULT_CONTINUATIONS, help="K per cut")
    implicit.add_argument(
        "--continuation-mode",
        choices=CONTINUATION_MODES,
        default="instruction",
        help="instruction: a chat prompt holding problem and partial solution (the paper); raw: the partial "
        "solution opens the answer (needs --continuation-api completions and --continuation-tokenizer)",
    )
    implicit.add_argument("--responses-per-problem", type=int, help="at most this many correct ones per method")
    implicit.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, help="bootstrap resamples (band)")
    implicit.add_argument("--out-dir", required=True)
    add_sampling_arguments(implicit)
    add_backend_arguments(implicit, prefix="continuation-")

    layout = commands.add_parser("skip-layout", help="where [s, q] puts s in a chat model's input, per skip_format")
    layout.add_argument("--tokenizer", required=True, help="a model or tokenizer directory with a chat template")
    layout.add_argument("--model-type", help="the model's config model_type (picks verl's builder; default: auto)")
    layout.add_argument("--problem", default="What is 6 times 7?")
    layout.add_argument("--segment", default="First, 6 times 7 means adding six sevens.")
    return parser.parse_args(argv)


def add_sweep_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--continuations",
        type=integers,
        default=integers(DEFAULT_CONTINUATION_SWEEP),
        help=f"N values ({DEFAULT_CONTINUATION_SWEEP})",
    )


def add_path_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--positions", type=int, default=token_advantages.DEFAULT_POSITIONS, help="tokens T")
    parser.add_argument("--groups", type=int, default=token_advantages.DEFAULT_GROUPS, help="simulated groups")
    parser.add_argument(
        "--decisiveness",
        type=float,
        default=1.0,
        help="gamma: token t reveals (t/T)^gamma of the outcome's randomness (1 evenly; >1 decided late)",
    )


def add_seed_and_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", required=True)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a benchmark parquet written by skpo-prepare-data")
    parser.add_argument("--problems", type=int, help="use the first N problems (default: all)")
    parser.add_argument("--out-dir", required=True)


def load_problems(args: argparse.Namespace) -> pd.DataFrame:
    if not os.path.exists(args.data):
        raise FileNotFoundError(f"{args.data} is missing; write it with skpo-prepare-data.")
    problems = pd.read_parquet(args.data)
    return problems.head(args.problems) if args.problems else problems


def run_mc_sign(args: argparse.Namespace) -> list[str]:
    rows = pd.DataFrame(sign_accuracy_grid(args.group_size, args.spreads, args.continuations, args.trials, args.seed))
    figure, axis = new_figure(1)
    for (low, high), group in rows.groupby(["p_low", "p_high"], sort=False):
        axis[0].errorbar(
            group["continuations"],
            group["p_all_signs_right"],
            yerr=group["std_error"],
            marker="o",
            label=f"p evenly in [{low}, {high}]",
        )
    axis[0].set(
        xscale="log",
        xlabel="continuations per prefix N",
        ylabel="P(all G signs right)",
        title=f"G = {args.group_size}, {args.trials} groups per point",
    )
    axis[0].legend()
    return save(rows, figure, args.out_dir, "mc_sign")


def run_mc_sign_distance(args: argparse.Namespace) -> list[str]:
    if args.probabilities is not None and not all(0.0 <= p <= 1.0 for p in args.probabilities):
        raise ValueError(f"--probabilities {args.probabilities}: each must lie in [0, 1].")
    rows = pd.DataFrame(
        sign_accuracy_by_distance(
            args.continuations,
            args.trials,
            args.seed,
            probabilities=args.probabilities,
            group_size=args.group_size,
            spread=args.spread,
            bins=args.bins,
        )
    )
    figure, axis = new_figure(1)
    for n, group in rows.groupby("continuations"):
        axis[0].errorbar(group["distance"], group["accuracy"], yerr=group["std_error"], marker="o", label=f"N = {n}")
    where = (
        f"p = {args.probabilities}"
        if args.probabilities is not None
        else f"G = {args.group_size}, p ~ U[{args.spread[0]}, {args.spread[1]}]"
    )
    axis[0].set(xlabel="|p_i - mean p| (distance from the group mean)", ylabel="P(sign of Â_i right)", title=where)
    axis[0].legend()
    return save(rows, figure, args.out_dir, "mc_sign_distance")


def run_mc_correctness(args: argparse.Namespace) -> list[str]:
    per_position, summary = token_advantages.correctness_panels(
        args.group_size, args.positions, args.continuations, args.groups, args.seed, args.decisiveness
    )
    rows = pd.DataFrame(per_position)
    side = int(np.ceil(np.sqrt(args.group_size + 1)))
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(side, side, figsize=(3.6 * side, 2.7 * side), squeeze=False, sharey=True)
    for correct, group in rows.groupby("correct"):
        axis = axes.flat[correct]
        axis.plot(group["position"], group["mc_sign_accuracy"], label=f"MC sign, K = {args.continuations}")
        axis.plot(group["position"], group["grpo_sign_accuracy"], "--", label="GRPO sign")
        axis.plot(group["position"], group["mc_mae"], label="MC MAE")
        axis.plot(group["position"], group["grpo_mae"], "--", label="GRPO MAE")
        axis.plot(group["position"], group["value_right"], ":", color="grey", label="true V, right ones")
        axis.plot(group["position"], group["value_wrong"], ":", color="black", label="true V, wrong ones")
        axis.set(title=f"{correct}/{args.group_size} right", xlabel="relative position", ylim=(0, 1))
    for axis in list(axes.flat)[args.group_size + 1 :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize="x-small")
    summary_path = os.path.join(args.out_dir, "mc_correctness_summary.csv")
    pd.DataFrame(summary).to_csv(summary_path, index=False)
    return save(rows, figure, args.out_dir, "mc_correctness", dpi=80) + [summary_path]


def run_mc_k_sweep(args: argparse.Namespace) -> list[str]:
    rows = pd.DataFrame(
        token_advantages.continuation_sweep(
            args.continuations, args.group_size, args.positions, args.groups, args.seed, args.decisiveness
        )
    )
    figure, axes = new_figure(2)
    for axis, metric, label in ((axes[0], "sign_accuracy", "sign accuracy"), (axes[1], "mae", "MAE")):
        axis.plot(rows["continuations"], rows[f"mc_{metric}"], marker="o", label="MC")
        axis.plot(rows["continuations"], rows[f"grpo_{metric}"], "--", label="GRPO's constant advantage")
        axis.set(xscale="log", xlabel="continuations per prefix K", ylabel=label)
    axes[0].plot(rows["continuations"], rows["mc_all_signs"], marker=".", label="MC, all G signs at a position")
    axes[0].plot(rows["continuations"], rows["grpo_all_signs"], ":", label="GRPO, all G signs at a position")
    axes[0].legend(fontsize="small")
    axes[1].set(yscale="log")
    return save(rows, figure, args.out_dir, "mc_k_sweep")


def run_shortcut_command(args: argparse.Namespace) -> list[str]:
    tokenizer = load_segment_tokenizer(args.tokenizer or (args.model if args.backend != "openai" else None))
    summary, samples = run_shortcut(
        make_backend(args), load_problems(args), sampling_from(args), tokenizer, args.positions, args.group_size
    )
    figure, axes = new_figure(3)
    for conditioning, group in summary.groupby("conditioning", sort=False):
        for axis, column in zip(axes, ("diversity", "advantage_zero_rate", "mean_length_tokens")):
            axis.plot(group["position"], group[column], marker="o", label=conditioning)
            axis.set(xlabel="segment position (fraction of the response's tokens)", title=column.replace("_", " "))
    axes[0].legend()
    samples.to_json(os.path.join(args.out_dir, "shortcut_samples.jsonl"), orient="records", lines=True)
    return save(summary, figure, args.out_dir, "shortcut")


def run_implicit_command(args: argparse.Namespace) -> list[str]:
    names = [name for name, _ in args.method]
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"--method names {names}: give two or more methods with different names.")
    if args.positions < 1 or args.continuations < 1:
        raise ValueError("--positions and --continuations must be >= 1.")
    if args.continuation_mode == "raw" and args.continuation_backend == "openai" and args.continuation_api == "chat":
        raise ValueError(
            "--continuation-mode raw opens the answer with the prefix: it needs --continuation-api completions."
        )
    sources = [benchmark(name.strip()).data_source for name in args.benchmarks.split(",") if name.strip()]
    generations = {}
    for name, path in args.method:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--method {name}={path}: no such generations file (skpo-evaluate generate).")
        generations[name] = [g for g in read_generations(path) if g["data_source"] in sources]
    prompts = {}
    for source in sorted({g["data_source"] for samples in generations.values() for g in samples}):
        for row in load_benchmark(args.data_dir, benchmark(source)).itertuples():
            prompts[(source, int(row.extra_info["index"]))] = row.prompt
    curve, cells, per_prefix = run_implicit_advantage(
        generations,
        prompts,
        load_segment_tokenizer(args.tokenizer),
        make_backend(args, prefix="continuation-"),
        sampling_from(args),
        positions=args.positions,
        continuations=args.continuations,
        mode=args.continuation_mode,
        responses_per_problem=args.responses_per_problem,
        replicates=args.replicates,
    )
    figure, axes = new_figure(1)
    for method, group in curve.groupby("method", sort=False):
        line = axes[0].plot(group["position"], group["mean_advantage"], label=method)[0]
        axes[0].fill_between(group["position"], group["ci_low"], group["ci_high"], color=line.get_color(), alpha=0.2)
    axes[0].axhline(0.0, color="grey", linewidth=0.8)
    axes[0].set(
        xlabel="relative token position of the cut",
        ylabel="mean Â (success normalised across methods)",
    )
    axes[0].set_title(
        f"{args.continuation_mode} continuations, K = {args.continuations}, 95% band over problems", fontsize=9
    )
    axes[0].legend()
    cells_path = os.path.join(args.out_dir, "implicit_advantage_cells.csv")
    prefixes_path = os.path.join(args.out_dir, "implicit_advantage_prefixes.csv")
    cells.to_csv(cells_path, index=False)
    per_prefix.to_csv(prefixes_path, index=False)
    return save(curve, figure, args.out_dir, "implicit_advantage") + [cells_path, prefixes_path]


def run_skip_layout(args: argparse.Namespace) -> list[str]:
    from transformers import AutoTokenizer

    from skpo_verl.analysis.skip_layout import describe

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    return [describe(tokenizer, [{"role": "user", "content": args.problem}], args.segment, args.model_type)]


def new_figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    return figure, list(axes[0])


def save(table: pd.DataFrame, figure, out_dir: str, name: str, dpi: int = 100) -> list[str]:
    import matplotlib.pyplot as plt

    paths = [os.path.join(out_dir, f"{name}.csv"), os.path.join(out_dir, f"{name}.png")]
    table.to_csv(paths[0], index=False)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=dpi)
    plt.close(figure)
    return paths


COMMANDS = {
    "mc-sign": run_mc_sign,
    "mc-sign-distance": run_mc_sign_distance,
    "mc-correctness": run_mc_correctness,
    "mc-k-sweep": run_mc_k_sweep,
    "shortcut": run_shortcut_command,
    "implicit-advantage": run_implicit_command,
    "skip-layout": run_skip_layout,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if getattr(args, "out_dir", None):
        os.makedirs(args.out_dir, exist_ok=True)
    if args.command in ("mc-correctness",):
        import matplotlib

        matplotlib.use("Agg")
    try:
        print("\n".join(COMMANDS[args.command](args)))
    except (FileNotFoundError, ValueError, RuntimeError, openai.OpenAIError) as error:
        print(f"skpo-analyze: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
