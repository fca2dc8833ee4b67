"""The values file of SPO's offline warm start: each training prompt's estimated success rate.

`python -m skpo_verl.training.offline_values` writes it (n0 answers per training prompt from the
initial policy, through verl's own validation rollout); `+algorithm.skpo.tracker.initial_values=PATH`
loads it: `SKPOState` seeds each prompt's value tracker with its value as
N0 = 1 / (1 - rho_min) observations (`core.tracker.prior_count`), and the V1 trainer shim
checks, when verl hands it the training dataset, that every training prompt has a value.

The file is JSON:

    {"format": "skpo-initial-values", "version": 1, "space": "success_rate",
     "n0": 8, "decoded_tokens": 41230, "source": {...how it was estimated...},
     "prompts": [{"index": 0, "success_rate": 0.625, "samples": 8}, ...]}

`index` is the prompt's `extra_info.index` (int or str, kept as written), the key of SKPO's
trackers. Values are success rates in [0, 1], the tracker's own space (a +1 / -1 reward r maps
to (r + 1) / 2), not rewards in [-1, 1] like `tracker.initial_value`: the mean of n0 outcomes
is a success rate, and a rate outside [0, 1] is then an error, not a rescaling question.
No verl import.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

KEY = "algorithm.skpo.tracker.initial_values"
FORMAT = "skpo-initial-values"
VERSION = 1
SPACE = "success_rate"
_HOW = "write one with `python -m skpo_verl.training.offline_values --out PATH -- <your launcher>` (docs/config.md)"


class InitialValuesError(ValueError):
    pass


@dataclass(frozen=True)
class InitialValues:
    """A read values file: prompt key -> success rate in [0, 1], and how it was made."""

    path: str
    values: dict[Hashable, float]
    n0: int
    decoded_tokens: int = 0
    source: dict[str, Any] = field(default_factory=dict)


def write_initial_values(
    path: str,
    success_rates: Mapping[Hashable, float],
    samples: Mapping[Hashable, int],
    n0: int,
    decoded_tokens: int,
    source: Mapping[str, Any],
) -> str:
    """Write a values file (atomically); returns its path."""
    prompts = [
        {"index": key, "success_rate": float(rate), "samples": int(samples[key])} for key, rate in success_rates.items()
    ]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "space": SPACE,
        "n0": int(n0),
        "decoded_tokens": int(decoded_tokens),
        "source": dict(source),
        "prompts": prompts,
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(document, f, indent=1)
    os.replace(tmp, path)
    return path


def read_initial_values(path: str) -> InitialValues:
    """Read and check a values file; every error names the key, the file and what is wrong."""
    where = f"{KEY}={path}"
    if not os.path.isfile(path):
        raise InitialValuesError(f"{where}: no such file; {_HOW}.")
    try:
        with open(path) as f:
            document = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InitialValuesError(f"{where} is not a values file (not readable JSON: {error}); {_HOW}.") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise InitialValuesError(f"{where} is not a values file (format {found!r}, expected {FORMAT!r}); {_HOW}.")
    if document.get("version") != VERSION:
        raise InitialValuesError(
            f"{where} has version {document.get('version')!r}; this skpo-verl reads version {VERSION}. Re-estimate it."
        )
    if document.get("space") != SPACE:
        raise InitialValuesError(
            f"{where} holds values in space {document.get('space')!r}; expected {SPACE!r} (success rates in [0, 1])."
        )
    records = document.get("prompts")
    if not isinstance(records, list) or not records:
        raise InitialValuesError(f"{where} lists no prompts; {_HOW}.")
    values: dict[Hashable, float] = {}
    for position, record in enumerate(records):
        key = record.get("index") if isinstance(record, dict) else None
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise InitialValuesError(f"{where}: prompt #{position} has no int or str 'index' ({record!r}).")
        rate = record.get("success_rate")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            hint = (
                " (a reward in [-1, 1]? the file holds success rates, (r + 1) / 2)" if isinstance(rate, float) else ""
            )
            raise InitialValuesError(
                f"{where}: prompt index {key!r} has success_rate {rate!r}, which must be a number in [0, 1]{hint}."
            )
        if key in values:
            raise InitialValuesError(f"{where}: prompt index {key!r} is listed twice.")
        values[key] = float(rate)
    n0 = document.get("n0")
    if isinstance(n0, bool) or not isinstance(n0, int) or n0 < 1:
        raise InitialValuesError(f"{where}: n0={n0!r} must be the number of answers per prompt (an int >= 1).")
    return InitialValues(
        path=path,
        values=values,
        n0=n0,
        decoded_tokens=int(document.get("decoded_tokens", 0)),
        source=dict(document.get("source") or {}),
    )


def check_covers(initial: InitialValues, prompt_keys: Iterable[Hashable]) -> None:
    """Every training prompt must have a value; values of prompts not in training are only logged.

    (verl's overlong-prompt filter can drop training rows after the file was written, so extra
    entries are expected; a missing one means the file belongs to other data.)
    """
    keys = list(prompt_keys)
    missing = [key for key in keys if key not in initial.values]
    if missing:
        raise InitialValuesError(
            f"{KEY}={initial.path} has no value for {len(missing)} of the {len(keys)} training prompts "
            f"(extra_info.index {missing[:5]}{' ...' if len(missing) > 5 else ''}): it was estimated for other "
            f"data. Re-estimate it for these data.train_files; {_HOW}."
        )
    extra = len(set(initial.values) - set(keys))
    if extra:
        logger.warning("%s: %d of its prompts are not in the training set (filtered?); they are unused.", KEY, extra)
