"""Write verl RL parquet for SKPO's datasets (one CLI for every source).

    skpo-prepare-data --source math500 --input MATH-500/test.jsonl --output-dir ~/data/skpo
    skpo-prepare-data --source dapo_math --output-dir ~/data/skpo          # online: from the Hub
    skpo-prepare-data --source all --input-dir raw/ --output-dir ~/data/skpo

Writes `<output-dir>/<source>.parquet` and `<output-dir>/<source>.report.json` (every dropped
or refused row, by id). Exit status 1 on an input error (the message names the fix), 2 when
`--strict` and any row was refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from skpo_verl.data_prep.convert import DEFAULT_TEMPLATE, TEMPLATES, Report, convert, load_from_hub, read_table
from skpo_verl.data_prep.sources import SOURCES, get_source

LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skpo-prepare-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, choices=[*SOURCES, "all"], help="dataset to convert")
    parser.add_argument("--input", help="local raw file (.parquet/.jsonl/.json/.csv) in the source's public layout")
    parser.add_argument("--input-dir", help="with --source all: a folder holding <source>.<ext> files")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        choices=sorted(TEMPLATES),
        help="instruction wording around the problem (default: dapo, DAPO-Math-17k's own, as in the paper)",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 2 when any row was refused")
    args = parser.parse_args(argv)
    if args.source == "all" and args.input:
        parser.error("--input names one file; with --source all use --input-dir")
    return args


def local_file(source_name: str, args: argparse.Namespace) -> str | None:
    if args.input:
        return args.input
    if not args.input_dir:
        return None
    for suffix in LOCAL_SUFFIXES:
        path = os.path.join(args.input_dir, source_name + suffix)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"No {source_name}{{{','.join(LOCAL_SUFFIXES)}}} in {args.input_dir}; "
        "add it, or drop --input-dir to read the Hub."
    )


def prepare(source_name: str, args: argparse.Namespace) -> Report:
    source = get_source(source_name)
    path = local_file(source_name, args)
    raw = read_table(path) if path else load_from_hub(source)
    rows, report = convert(raw, source, template=args.template)
    os.makedirs(args.output_dir, exist_ok=True)
    rows.to_parquet(os.path.join(args.output_dir, f"{source_name}.parquet"), index=False)
    with open(os.path.join(args.output_dir, f"{source_name}.report.json"), "w") as handle:
        json.dump(report.as_dict(), handle, indent=2)
    print(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(SOURCES) if args.source == "all" else [args.source]
    try:
        reports = [prepare(name, args) for name in names]
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"skpo-prepare-data: error: {error}", file=sys.stderr)
        return 1
    refused = sum(report.refused_count for report in reports)
    if args.strict and refused:
        print(f"{refused} rows refused (see the .report.json files); failing because of --strict.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
