"""`skpo-analyze`: the paper's analyses, each writing a CSV and a PNG into --out-dir.

    skpo-analyze mc-sign --group-size 8 --spreads 0.45-0.55,0.3-0.7 --out-dir analysis/      # CPU, seconds
    skpo-analyze shortcut --backend vllm --model CKPT --data ~/data/skpo/math500.parquet --out-dir analysis/
    skpo-analyze implicit-advantage --backend vllm --model-a GRPO_CKPT --model-b SKPO_CKPT \\
        --continuation-backend openai --continuation-base-url URL --continuation-model NAME \\
        --continuation-api completions --continuation-tokenizer TOKENIZER --data ... --out-dir analysis/
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import openai
import pandas as pd

from skpo_verl.analysis.implicit_advantage import (
    match_on_correctness,
    run_implicit_advantage,
    sample_responses,
)
from skpo_verl.analysis.shortcut import DEFAULT_POSITIONS, run_shortcut
from skpo_verl.analysis.sign_accuracy import sign_accuracy_grid
from skpo_verl.evaluation.backends import add_backend_arguments, make_backend
from skpo_verl.evaluation.cli import add_sampling_arguments, sampling_from

DEFAULT_CONTINUATIONS = ",".join(str(2**k) for k in range(3, 14))  # 8 ... 8192


def floats(text: str) -> list[float]:
    return [float(item) for item in text.split(",") if item.strip()]


def spreads(text: str) -> list[tuple[float, float]]:
    """'0.45-0.55,0.3-0.7' -> [(0.45, 0.55), (0.3, 0.7)]."""
    pairs = []
    for item in text.split(","):
        low, _, high = item.partition("-")
        if not high or not 0.0 <= float(low) <= float(high) <= 1.0:
            raise argparse.ArgumentTypeError(f"spread {item!r}: write LOW-HIGH with 0 <= LOW <= HIGH <= 1.")
        pairs.append((float(low), float(high)))
    return pairs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skpo-analyze", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sign = commands.add_parser("mc-sign", help="Appendix A: P(all G advantage signs right) over N and spread")
    sign.add_argument("--group-size", type=int, default=8)
    sign.add_argument("--spreads", type=spreads, default=spreads("0.45-0.55,0.3-0.7"))
    sign.add_argument(
        "--continuations",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[int(x) for x in DEFAULT_CONTINUATIONS.split(",")],
        help=f"N values ({DEFAULT_CONTINUATIONS})",
    )
    sign.add_argument("--trials", type=int, default=200_000, help="simulated groups per (spread, N)")
    sign.add_argument("--seed", type=int, default=0)
    sign.add_argument("--out-dir", required=True)

    short = commands.add_parser("shortcut", help="Fig. 3: unconditional vs continual vs skip continuations")
    add_data_arguments(short)
    short.add_argument("--positions", type=floats, default=list(DEFAULT_POSITIONS), help="relative segment positions")
    short.add_argument("--group-size", type=int, default=8, help="continuations per segment and conditioning")
    add_sampling_arguments(short)
    add_backend_arguments(short)

    implicit = commands.add_parser("implicit-advantage", help="Sec. 4.3: MC success along matched responses")
    add_data_arguments(implicit)
    implicit.add_argument("--model-a", required=True, help="first checkpoint (e.g. GRPO)")
    implicit.add_argument("--model-b", required=True, help="second checkpoint (e.g. SKPO)")
    implicit.add_argument("--base-url-b", help="openai: the second checkpoint's server, when not --base-url")
    implicit.add_argument("--names", default="A,B", help="labels of the two checkpoints, e.g. GRPO,SKPO")
    implicit.add_argument("--responses", type=int, default=4, help="responses per problem and checkpoint")
    implicit.add_argument("--continuations", type=int, default=8, help="continuations per prefix (MC samples)")
    implicit.add_argument("--bin-edges", type=floats, default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    add_sampling_arguments(implicit)
    add_backend_arguments(implicit, with_model=False)
    add_backend_arguments(implicit, prefix="continuation-")
    return parser.parse_args(argv)


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


def run_shortcut_command(args: argparse.Namespace) -> list[str]:
    summary, samples = run_shortcut(
        make_backend(args), load_problems(args), sampling_from(args), args.positions, args.group_size
    )
    figure, axes = new_figure(3)
    for conditioning, group in summary.groupby("conditioning", sort=False):
        for axis, column in zip(axes, ("diversity", "advantage_zero_rate", "mean_length_chars")):
            axis.plot(group["position"], group[column], marker="o", label=conditioning)
            axis.set(xlabel="segment position (fraction of the response)", title=column.replace("_", " "))
    axes[0].legend()
    samples.to_json(os.path.join(args.out_dir, "shortcut_samples.jsonl"), orient="records", lines=True)
    return save(summary, figure, args.out_dir, "shortcut")


def run_implicit_command(args: argparse.Namespace) -> list[str]:
    names = [name.strip() for name in args.names.split(",")]
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"--names {args.names!r}: give two different labels, e.g. GRPO,SKPO.")
    edges = args.bin_edges
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] < 0 or edges[-1] > 1:
        raise ValueError(f"--bin-edges {edges}: give increasing fractions within [0, 1].")
    problems, sampling = load_problems(args), sampling_from(args)
    second = argparse.Namespace(**{**vars(args), "base_url": args.base_url_b or args.base_url})
    sampled = {
        name: sample_responses(make_backend(options, model=model), problems, args.responses, sampling)
        for name, model, options in zip(names, (args.model_a, args.model_b), (args, second))
    }
    matched = dict(zip(names, match_on_correctness(sampled[names[0]], sampled[names[1]])))
    summary, per_prefix = run_implicit_advantage(
        matched,
        problems,
        make_backend(args, prefix="continuation-"),
        sampling,
        args.continuations,
        list(itertools.pairwise(edges)),
    )
    figure, axes = new_figure(1)
    for (checkpoint, correct), group in summary[summary["checkpoint"].isin(names)].groupby(
        ["checkpoint", "final_correct"]
    ):
        axes[0].plot(
            group["bin"],
            group["mc_success"],
            marker="o",
            label=f"{checkpoint}, final {'right' if correct else 'wrong'}",
        )
    axes[0].set(xlabel="prefix position", ylabel="MC success of continuations", title="implicit advantage")
    axes[0].legend()
    per_prefix.to_csv(os.path.join(args.out_dir, "implicit_advantage_prefixes.csv"), index=False)
    return save(summary, figure, args.out_dir, "implicit_advantage")


def new_figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    return figure, list(axes[0])


def save(table: pd.DataFrame, figure, out_dir: str, name: str) -> list[str]:
    import matplotlib.pyplot as plt

    paths = [os.path.join(out_dir, f"{name}.csv"), os.path.join(out_dir, f"{name}.png")]
    table.to_csv(paths[0], index=False)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=120)
    plt.close(figure)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    commands = {"mc-sign": run_mc_sign, "shortcut": run_shortcut_command, "implicit-advantage": run_implicit_command}
    try:
        print("\n".join(commands[args.command](args)))
    except (FileNotFoundError, ValueError, RuntimeError, openai.OpenAIError) as error:
        print(f"skpo-analyze: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
