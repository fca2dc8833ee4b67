"""Build the embedded default (warm-started tiny model + chain-sum data) and print the paths.

    python -m skpo_verl.cpu.prepare [DIR]      # DIR defaults to ~/.cache/skpo_verl/cpu_tiny

Prints shell assignments (MODEL_PATH, TRAIN_FILE, VAL_FILE, REWARD_PATH, REWARD_NAME) so a
launcher can `eval "$(python -m skpo_verl.cpu.prepare DIR)"`. Everything is built
deterministically without a download; what is already built with the same specs is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict

from skpo_verl.cpu import task
from skpo_verl.cpu.tiny_model import COMPACT_CHAT_TEMPLATE, TinyModelSpec, build_tiny_model
from skpo_verl.cpu.warm_start import WarmStartSpec, warm_start

DEFAULT_DIR = os.path.join("~", ".cache", "skpo_verl", "cpu_tiny")
DEMO_MODEL = TinyModelSpec(chat_template=COMPACT_CHAT_TEMPLATE)
DEMO_TASK = task.TaskSpec()
DEMO_WARM_START = WarmStartSpec()
_MARKER = "skpo_warm_start.json"


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
        f"[skpo_verl.cpu.prepare] warm start: {warm_start_spec.steps} steps in {time.perf_counter() - started:.0f} s, "
        f"loss {losses[0]:.2f} -> {losses[-1]:.2f}",
        file=sys.stderr,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    with open(marker, "w") as f:
        json.dump(specs, f)
    return path


def prepare(directory: str) -> dict[str, str]:
    directory = os.path.abspath(os.path.expanduser(directory))
    model_path = build_demo_model(directory)
    train_file, val_file = task.write_dataset(os.path.join(directory, "data"), DEMO_TASK)
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
    args = parser.parse_args(argv)
    for key, value in prepare(args.directory).items():
        print(f"{key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
