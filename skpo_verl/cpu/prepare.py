"""Build the embedded default (tiny model + "say the digit" data) and print the paths.

    python -m skpo_verl.cpu.prepare [DIR]      # DIR defaults to ~/.cache/skpo_verl/cpu_tiny

Prints shell assignments (MODEL_PATH, TRAIN_FILE, VAL_FILE, REWARD_PATH, REWARD_NAME) so a
launcher can `eval "$(python -m skpo_verl.cpu.prepare DIR)"`. Everything is built
deterministically without a download; a model already built with the same spec is reused.
"""

from __future__ import annotations

import argparse
import os
import shlex

from skpo_verl.cpu import task
from skpo_verl.cpu.tiny_model import build_tiny_model

DEFAULT_DIR = os.path.join("~", ".cache", "skpo_verl", "cpu_tiny")


def prepare(directory: str) -> dict[str, str]:
    directory = os.path.abspath(os.path.expanduser(directory))
    model_path = build_tiny_model(os.path.join(directory, "model"))
    train_file, val_file = task.write_dataset(os.path.join(directory, "data"))
    return {
        "MODEL_PATH": model_path,
        "TRAIN_FILE": train_file,
        "VAL_FILE": val_file,
        "REWARD_PATH": os.path.abspath(task.__file__),
        "REWARD_NAME": task.compute_score.__name__,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    for key, value in prepare(args.directory).items():
        print(f"{key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
