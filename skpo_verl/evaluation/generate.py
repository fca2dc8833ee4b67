"""Sample k answers per benchmark problem with any backend (vllm, hf, openai), resumably.

Everything after generation (judging, avg@k, tables) runs on CPU from the generations file
this writes. Each sample is appended as soon as it exists, keyed by (data_source, index,
sample); a rerun with the same file skips the keys already there, so an interrupted run
(a crashed server, a killed job) continues where it stopped. Sample number n of every problem
is requested with seed `seed + n` (backends that take a seed per request: vllm, openai).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import pandas as pd
from tqdm import tqdm

from skpo_verl.evaluation.backends import Backend, Request, Sampling
from skpo_verl.evaluation.protocol import BENCHMARKS, Benchmark, held_out_set


def done_keys(path: str) -> set[tuple[str, int, int]]:
    """(data_source, index, sample) of every complete line already in the generations file."""
    if not os.path.exists(path):
        return set()
    keys = set()
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):
                raise ValueError(
                    f"{path}: line {number} is cut off (the previous run died while writing it); "
                    "delete that last line and rerun to resume."
                )
            record = json.loads(line)
            keys.add((record["data_source"], int(record["index"]), int(record["sample"])))
    return keys


def load_benchmark(data_dir: str, bench: Benchmark) -> pd.DataFrame:
    path = os.path.join(data_dir, f"{bench.data_source}.parquet")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing; write it with "
            f"`skpo-prepare-data --source {bench.data_source} --output-dir {data_dir}`, "
            "or leave the benchmark out with --benchmarks."
        )
    return pd.read_parquet(path)


def load_data_file(path: str, samples: int = 1) -> list[tuple[Benchmark, pd.DataFrame]]:
    """A verl parquet outside Table 1 (e.g. a training task's held-out file), one set per data_source in it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data-file {path}: no such file")
    frame = pd.read_parquet(path)
    missing = {"data_source", "prompt", "reward_model", "extra_info"} - set(frame.columns)
    if missing:
        raise ValueError(f"--data-file {path} lacks the verl columns {sorted(missing)}")
    return [(held_out_set(source, samples), rows) for source, rows in frame.groupby("data_source", sort=False)]


def generate(
    backend: Backend,
    data_dir: str | None,
    out_path: str,
    sampling: Sampling = Sampling(),  # noqa: B008 - a frozen dataclass, safe to share
    benchmarks: Sequence[Benchmark] = BENCHMARKS,
    data_file: str | None = None,
    samples: int = 1,
) -> int:
    """Append the missing samples to out_path (JSON lines: data_source, index, sample, ground_truth,
    response); returns how many were generated. With `data_file`, its problems `samples` times each
    instead of `benchmarks` from `data_dir`."""
    done = done_keys(out_path)
    records, requests = [], []
    if data_file is not None:
        sets = load_data_file(data_file, samples)
    else:
        sets = [(bench, load_benchmark(data_dir, bench)) for bench in benchmarks]
    for bench, frame in sets:
        for row in frame.itertuples():
            index = int(row.extra_info["index"])
            for sample in range(bench.samples):
                if (row.data_source, index, sample) in done:
                    continue
                records.append(
                    {
                        "data_source": row.data_source,
                        "index": index,
                        "sample": sample,
                        "ground_truth": row.reward_model["ground_truth"],
                    }
                )
                requests.append(Request(messages=tuple(dict(m) for m in row.prompt), seed=sampling.seed + sample))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "a") as out:
        progress = tqdm(backend.complete(requests, sampling), total=len(requests), desc="generating", unit="sample")
        for position, text in progress:
            out.write(json.dumps(dict(records[position], response=text)) + "\n")
            out.flush()
    return len(requests)
