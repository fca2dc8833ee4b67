"""Write verl RL parquet for SKPO's datasets (one CLI for every source).

    skpo-prepare-data --source math500 --input MATH-500/test.jsonl --output-dir ~/data/skpo
    skpo-prepare-data --source dapo_math --output-dir ~/data/skpo          # online: from the Hub
    skpo-prepare-data --source all --input-dir raw/ --output-dir ~/data/skpo

Writes `<output-dir>/<source>.parquet`, `<source>.report.json` (counts and the first row ids
per reason) and `<source>.report.ids.json.gz` (every dropped or refused row id). A parquet is
written whole or not at all (written beside, then renamed). Exit status 1 on an input error
(one line naming the file and the fix; no parquet for that source): unreadable, empty or
wrongly laid-out files, and inputs whose every row is refused. With `--source all` the other
sources are still converted, and the summary lists which succeeded. Exit status 2 when
`--strict` and any row was refused.
"""

from __future__ import annotations

import argparse
import os
import sys

from skpo_verl.data_prep.convert import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    DataError,
    Report,
    convert,
    load_from_hub,
    read_table,
)
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
    if not os.path.isdir(args.input_dir):
        raise DataError(f"--input-dir {args.input_dir}: not found or not a directory")
    for suffix in LOCAL_SUFFIXES:
        path = os.path.join(args.input_dir, source_name + suffix)
        if os.path.exists(path):
            return path
    raise DataError(
        f"No {source_name}{{{','.join(LOCAL_SUFFIXES)}}} in {args.input_dir}; "
        "add it, or drop --input-dir to read the Hub."
    )


def prepare(source_name: str, args: argparse.Namespace) -> Report:
    source = get_source(source_name)
    path = local_file(source_name, args)
    raw = read_table(path) if path else load_from_hub(source)
    where = path or source.hub_id
    try:
        rows, report = convert(raw, source, template=args.template)
    except ValueError as error:
        raise DataError(f"{where}: {error}") from error
    report_path = report.write(args.output_dir)
    if report.written_rows == 0:
        raise DataError(
            f"{where}: every one of its {report.input_rows} rows was refused ({report.summary()}); "
            f"see {report_path}. No parquet written."
        )
    _write_whole(rows, os.path.join(args.output_dir, f"{source_name}.parquet"))
    print(report.summary())
    return report


def _write_whole(rows, path: str) -> None:
    """Write beside the target, then rename: a reader never sees a half-written parquet."""
    partial = f"{path}.partial"
    try:
        rows.to_parquet(partial, index=False)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def check_output_dir(output_dir: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError(f"--output-dir {output_dir} is a file; give a folder (it is created if missing)")
    os.makedirs(output_dir, exist_ok=True)
    if not os.access(output_dir, os.W_OK):
        raise DataError(f"--output-dir {output_dir} is not writable")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(SOURCES) if args.source == "all" else [args.source]
    try:
        check_output_dir(args.output_dir)
    except (DataError, OSError) as error:
        print(f"skpo-prepare-data: error: {error}", file=sys.stderr)
        return 1
    reports, failed = [], []
    for name in names:
        try:
            reports.append(prepare(name, args))
        except (DataError, RuntimeError, OSError) as error:
            print(f"skpo-prepare-data: error: {name}: {error}", file=sys.stderr)
            failed.append(name)
    if failed:
        if len(names) > 1:
            done = ", ".join(report.source for report in reports) or "none"
            print(f"skpo-prepare-data: failed: {', '.join(failed)}; written: {done}", file=sys.stderr)
        return 1
    refused = sum(report.refused_count for report in reports)
    if args.strict and refused:
        print(f"{refused} rows refused (see the .report.json files); failing because of --strict.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
