"""Build the embedded default (warm-started tiny model + chain-sum data) and print the paths.

    python -m skpo_verl.demo.prepare [--task demo|benchmark|long] [DIR]   # DIR: ~/.cache/skpo_verl/cpu_tiny
    python -m skpo_verl.demo.prepare --task long --lengths                # the task's token budgets only

Prints shell assignments (MODEL_PATH, TRAIN_FILE, VAL_FILE, REWARD_PATH, REWARD_NAME) so a
launcher can `eval "$(python -m skpo_verl.demo.prepare DIR)"`. Everything is built
deterministically without a download; what is already built with the same specs is reused.
`--lengths` prints the task's prompt and response budgets (TASK_PROMPT_LENGTH,
TASK_RESPONSE_LENGTH) without building anything: the CPU launcher sizes its run from them.

Two task sizes (`TASKS`), each built in its own sub-folder `DIR/<task>/`:
  demo       3 numbers from 1..4, 48 training / 16 held-out problems, 600 warm-start steps
             (greedy held-out accuracy 6%): the CPU demo (examples/cpu_tiny_skpo.sh), which GRPO
             and SKPO both learn within a few steps.
  benchmark  3 numbers from 1..9 (two-digit partial sums), 665 training / 64 held-out problems,
             the learning benchmark's task: more to learn (81 first steps instead of 16), after a
             2x longer warm start (1,200 steps) that leaves 39% greedy held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict

from skpo_verl.demo import task
from skpo_verl.demo.tiny_model import COMPACT_CHAT_TEMPLATE, TinyModelSpec, build_tiny_model
from skpo_verl.demo.warm_start import WarmStartSpec, warm_start

DEFAULT_DIR = os.path.join("~", ".cache", "skpo_verl", "cpu_tiny")
DEMO_MODEL = TinyModelSpec(chat_template=COMPACT_CHAT_TEMPLATE)
DEMO_TASK = task.TaskSpec()
# 600 steps, not fewer: after 300 the model's answers from SKPO's [s, q] barely depended on the
# segment s it was shown (52% right after a right first step, 41% after a slipped one), so the
# upstream reward R_I was mostly noise and SKPO's 30-step runs ended at 25%, 31%, 75% and 88%;
# after 600 they follow s (95% vs 3%, `python -m skpo_verl.analysis.segment_effect --task demo`).
DEMO_WARM_START = WarmStartSpec()  # 600 steps
# name -> (task, warm start)
TASKS = {
    "demo": (DEMO_TASK, DEMO_WARM_START),
    # 81 first steps to learn instead of 16, and a 2x longer warm start so that the additions
    # themselves are learnt: what is left wrong is (almost only) the careless first step.
    "benchmark": (task.TaskSpec(terms=3, max_operand=9, val_size=64), WarmStartSpec(steps=1200)),
}
# The learning benchmark's task with room to learn (--task long; docs/learning_benchmark.md, "The
# long task"): 5 numbers from 1..9, four worked steps with partial sums up to 45, and a solver
# careless at any step that carries (it slips at each with probability slip_rate), so the first
# wrong step is sometimes inside SKPO's kept segment and sometimes after it. 512 training problems
# (prompts return to their trackers within 50 steps of 8) and 256 held-out ones (one = 0.4 points).
# The worked beginnings shown in the warm start span SKPO's split range at both the initial
# L_q (the 64-token budget: 11-32 tokens) and the answers' own length (~40 tokens: 7-20).
TASKS["long"] = (
    task.TaskSpec(terms=5, max_operand=9, val_size=256, train_size=512),
    WarmStartSpec(steps=2500, slip_at="carry", slip_rate=0.7, prefix_rate=0.6, prefix_tokens=(6, 32)),
)
# (max prompt tokens, max response tokens) the CPU launcher runs a task with (`--lengths`).
DEFAULT_LENGTHS = (64, 32)
TASK_LENGTHS = {"long": (64, 64)}  # its longest solution is 46 tokens with the EOS
_MARKER = "skpo_warm_start.json"
# Spec fields added after models were first built (for the long task). The marker records them
# only when they differ from their defaults, so a model built before they existed, with the same
# (identical) warm start, is still recognised and not rebuilt.
_LATER_FIELDS = {"task": {"train_size": None}, "warm_start": {"slip_at": "first"}}


def task_lengths(task_name: str) -> tuple[int, int]:
    """(max prompt tokens, max response tokens) of a task in TASKS."""
    if task_name not in TASKS:
        raise ValueError(f"unknown task {task_name!r}; choose one of: {', '.join(TASKS)}")
    return TASK_LENGTHS.get(task_name, DEFAULT_LENGTHS)


def build_demo_model(
    directory: str,
    model_spec: TinyModelSpec = DEMO_MODEL,
    task_spec: task.TaskSpec = DEMO_TASK,
    warm_start_spec: WarmStartSpec = DEMO_WARM_START,
) -> str:
    """The tiny model after its warm start, at `directory/model` (reused when the specs match)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.path.join(directory, "model")
    marker = os.path.join(path, _MARKER)
    specs = {"model": asdict(model_spec), "task": asdict(task_spec), "warm_start": asdict(warm_start_spec)}
    for part, defaults in _LATER_FIELDS.items():
        for name, default in defaults.items():
            if specs[part][name] == default:
                del specs[part][name]
    specs = json.loads(json.dumps(specs))  # tuples become lists, as they are read back
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == specs:
                return path
    base = build_tiny_model(os.path.join(directory, "random_init"), model_spec)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(base)
    started = time.perf_counter()
    losses = warm_start(model, tokenizer, task_spec, warm_start_spec)
    print(
        f"[skpo_verl.demo.prepare] warm start: {warm_start_spec.steps} steps in {time.perf_counter() - started:.0f} s, "
        f"loss {losses[0]:.2f} -> {losses[-1]:.2f}",
        file=sys.stderr,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    with open(marker, "w") as f:
        json.dump(specs, f)
    return path


def prepare(directory: str, task_name: str = "demo") -> dict[str, str]:
    """Build (or reuse) task `task_name`'s warm-started model and parquet files under `directory/task_name`."""
    if task_name not in TASKS:
        raise ValueError(f"unknown task {task_name!r}; choose one of: {', '.join(TASKS)}")
    task_spec, warm_start_spec = TASKS[task_name]
    directory = os.path.join(os.path.abspath(os.path.expanduser(directory)), task_name)
    model_path = build_demo_model(directory, task_spec=task_spec, warm_start_spec=warm_start_spec)
    train_file, val_file = task.write_dataset(os.path.join(directory, "data"), task_spec)
    return {
        "MODEL_PATH": model_path,
        "TRAIN_FILE": train_file,
        "VAL_FILE": val_file,
        # The project's reward: the `Answer:` line judged by math-verify, +1 / -1.
        "REWARD_PATH": "pkg://skpo_verl.reward",
        "REWARD_NAME": "compute_score",
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default=DEFAULT_DIR)
    parser.add_argument("--task", choices=list(TASKS), default="demo", help="the task size (see above)")
    parser.add_argument("--lengths", action="store_true", help="print the task's token budgets only; build nothing")
    args = parser.parse_args(argv)
    if args.lengths:
        prompt_length, response_length = task_lengths(args.task)
        print(f"TASK_PROMPT_LENGTH={prompt_length}\nTASK_RESPONSE_LENGTH={response_length}")
        return
    for key, value in prepare(args.directory, args.task).items():
        print(f"{key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
