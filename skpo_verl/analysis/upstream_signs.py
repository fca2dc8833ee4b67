"""Which kept segments SKPO's upstream term pushes up or down, read back from verl's rollout dump.

    TASK=benchmark bash examples/cpu_tiny_skpo.sh trainer.rollout_data_dir=DUMP
    python -m skpo_verl.analysis.upstream_signs DUMP [--early-steps 3]

For the chain-sum task only (`skpo_verl.demo.task`): each upstream row's kept segment s is
classified by its first worked step, `a+b=c.`: `right` (c = a + b), `wrong`, or `cut before`
(s ends before that step is written). R_I is the mean score of the prompt's G answers, and the
upstream advantage is the project's own `core.advantages.upstream_advantages` over the step's
upstream rows with V_prev = 0 (`tracker.initial_value`), which is exact for a prompt's first
visit: verl's dump has scores, not advantages or tracker values. A prompt seen earlier in the
dump is counted as a revisit, and its advantage is an approximation (its real V_prev is not 0).

The table counts, for steps 1..early-steps and after, the segments of each kind and how many
of them got a negative advantage (docs/algorithm.md, "On the learning benchmark's task").
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re

import numpy as np

from skpo_verl.core.advantages import upstream_advantages

KINDS = ("right", "wrong", "cut before")
_FIRST_STEP = re.compile(r"\s*(\d+)\+(\d+)=(\d+)\.")
_OPERANDS = re.compile(r"Add ([\d, ]+)\.")


def read_dump(directory: str) -> dict[int, list[dict]]:
    """step -> the rows verl's V1 trainer dumped for it (`<step>.jsonl`, one JSON object per row)."""
    paths = glob.glob(os.path.join(directory, "*.jsonl"))
    if not paths:
        raise FileNotFoundError(f"{directory}: no <step>.jsonl files; run with trainer.rollout_data_dir={directory}")
    by_step: dict[int, list[dict]] = collections.defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    by_step[int(row["step"])].append(row)
    return dict(sorted(by_step.items()))


def first_step_kind(segment: str, operands: tuple[int, ...]) -> str:
    """`right`, `wrong` or `cut before`: the first worked step of the segment, against the operands."""
    match = _FIRST_STEP.match(segment)
    if match is None:
        return "cut before"
    a, b, c = (int(x) for x in match.groups())
    return "right" if (a, b) == operands[:2] and c == a + b else "wrong"


def upstream_rows(rows: list[dict]) -> list[dict]:
    """One record per prompt of a step: its operands, segment kind and R_I (mean score of its answers).

    verl's `uid` field is the TransferQueue key `<uid>_<session>_<output>`; SKPO's upstream row is
    session 0, output 0, and every other row of the uid is one of its answers.
    """
    prompts: dict[str, dict] = collections.defaultdict(lambda: {"answers": []})
    for row in rows:
        uid, session, output = row["uid"].rsplit("_", 2)
        if int(output) > 1 or (int(session) > 0 and int(output) > 0):
            raise ValueError(
                f"row {row['uid']}: a session with more than one answer comes from a multi-split run "
                "(algorithm.skpo.num_splits > 1); this analysis reads one-split dumps only."
            )
        if (int(session), int(output)) == (0, 0):
            prompts[uid]["upstream"] = row
        else:
            prompts[uid]["answers"].append(float(row["score"]))
    records = []
    for uid, prompt in prompts.items():
        if "upstream" not in prompt or not prompt["answers"]:
            raise ValueError(f"prompt uid={uid} lacks its upstream row or its answers: is this an SKPO run's dump?")
        up = prompt["upstream"]
        found = _OPERANDS.search(up["input"])
        if found is None:
            raise ValueError(f"prompt uid={uid}: {up['input']!r} is not a chain-sum problem ('Add a, b, c.')")
        operands = tuple(int(x) for x in found.group(1).split(","))
        records.append(
            {
                "operands": operands,
                "kind": first_step_kind(up["output"], operands),
                "r_i": float(np.mean(prompt["answers"])),
            }
        )
    return records


def count_signs(by_step: dict[int, list[dict]], early_steps: int = 3, eps: float = 1e-6) -> dict:
    """{(phase, kind): {"rows", "negative", "revisits"}} over the dump.

    phase is "early" (steps <= early_steps) or "late".
    """
    counts: dict = collections.defaultdict(lambda: {"rows": 0, "negative": 0, "revisits": 0})
    seen: set = set()
    for step, rows in by_step.items():
        records = upstream_rows(rows)
        r_i = np.array([record["r_i"] for record in records])
        advantages = upstream_advantages(r_i, np.zeros_like(r_i), eps)
        phase = "early" if step <= early_steps else "late"
        for record, advantage in zip(records, advantages):
            entry = counts[(phase, record["kind"])]
            entry["rows"] += 1
            entry["negative"] += int(advantage < 0)
            entry["revisits"] += int(record["operands"] in seen)
        seen.update(record["operands"] for record in records)
    return dict(counts)


def format_counts(counts: dict, early_steps: int) -> str:
    lines = ["| steps | first step of s | segments | negative advantage | revisits |", "|---|---|---|---|---|"]
    for phase, label in (("early", f"1-{early_steps}"), ("late", f"{early_steps + 1}-")):
        for kind in KINDS:
            entry = counts.get((phase, kind))
            if entry:
                share = entry["negative"] / entry["rows"]
                lines.append(
                    f"| {label} | {kind} | {entry['rows']} | {entry['negative']} ({share:.0%}) | {entry['revisits']} |"
                )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", help="the run's trainer.rollout_data_dir")
    parser.add_argument("--early-steps", type=int, default=3, help="steps 1..N are counted apart from the rest")
    args = parser.parse_args(argv)
    print(format_counts(count_signs(read_dump(args.dump), args.early_steps), args.early_steps))


if __name__ == "__main__":
    main()
