"""The embedded default task, "say the digit", and its ±1 outcome reward.

Each prompt asks for one digit ("Say 7."); an answer earns +1 when it contains that digit
and -1 otherwise. A freshly initialised tiny model samples nearly uniformly from 259
byte tokens, so a 32-token answer contains a given digit about 12% of the time: most
groups of 8 answers mix +1 and -1 from the first step, which gives GRPO and SKPO
non-zero advantages. The model improves by copying the digit from the prompt, a pattern
a two-layer transformer learns.

Rows follow verl's RL parquet schema (`data_source`, chat `prompt`, `ability`,
`reward_model={style, ground_truth}`, `extra_info={split, index}`); `extra_info.index`
is unique across both splits, because SKPO keys its per-prompt trackers on it.
"""

from __future__ import annotations

import os

DATA_SOURCE = "skpo_tiny/say_digit"
TRAIN_TEMPLATES = ("Say {d}.", "Repeat {d}.", "Echo {d}", "Write {d}.", "Digit {d}?", "Print {d}")
VAL_TEMPLATES = ("Please say {d}.",)


def build_rows(split: str, templates: tuple[str, ...], first_index: int) -> list[dict]:
    rows = []
    for template in templates:
        for digit in range(10):
            rows.append(
                {
                    "data_source": DATA_SOURCE,
                    "prompt": [{"role": "user", "content": template.format(d=digit)}],
                    "ability": "copy",
                    "reward_model": {"style": "rule", "ground_truth": str(digit)},
                    "extra_info": {"split": split, "index": first_index + len(rows)},
                }
            )
    return rows


def write_dataset(directory: str) -> tuple[str, str]:
    """Write train.parquet (60 prompts) and val.parquet (10 prompts); return their paths."""
    import pandas as pd

    os.makedirs(directory, exist_ok=True)
    train = build_rows("train", TRAIN_TEMPLATES, first_index=0)
    val = build_rows("val", VAL_TEMPLATES, first_index=len(train))
    paths = (os.path.join(directory, "train.parquet"), os.path.join(directory, "val.parquet"))
    for rows, path in zip((train, val), paths):
        pd.DataFrame(rows).to_parquet(path, index=False)
    return paths


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """+1 when the answer contains the requested digit, else -1 (`reward.custom_reward_function`)."""
    if data_source != DATA_SOURCE:
        raise ValueError(f"skpo_verl.cpu.task.compute_score scores {DATA_SOURCE!r} rows only, got {data_source!r}")
    return 1.0 if str(ground_truth) in solution_str else -1.0
