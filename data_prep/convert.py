"""Raw dataset rows -> verl RL parquet rows, with every bad row accounted for.

Output row (verl 0.9.1 `RLHFDataset` layout):
    data_source, prompt=[{"role": "user", "content": <template(problem)>}], ability,
    reward_model={"style": "rule", "ground_truth": <answer>},
    extra_info={"split", "index" (0..N-1, stable for the same input), "source_id", "problem"
                [, "unit" where the dataset gives the answer's unit (OlympiadBench)]}

Bad-input rules (docs/data.md): a file that cannot be read, has none of the source's column
layouts or has no rows raises `DataError`; so does an input whose every row is refused.
Bad-row rules:
- problem or answer missing / empty after stripping -> refused ("missing_problem", "missing_answer").
- surrounding whitespace -> stripped; numbers given as numbers (AIME's int `Answer`) -> text,
  `27.0` -> "27". These are type normalisations, not repairs, and are not reported.
- the same problem (whitespace-normalised) again with the same answer -> the first copy is
  kept, the later ones are dropped as "duplicate" (DAPO-Math-17k repeats each problem).
- the same problem with different answers -> all copies refused ("conflicting_duplicate"):
  we cannot tell which answer is right.
Every dropped or refused row is listed by its row id in the report; nothing is dropped
silently.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow
from tqdm import tqdm

from skpo_verl.data_prep.sources import DAPO_PREFIX, DAPO_SUFFIX, Layout, Source, is_missing

TEMPLATES = {
    # DAPO-Math-17k's own wording: the paper's training prompts, and our default everywhere.
    "dapo": DAPO_PREFIX + "{problem}" + DAPO_SUFFIX,
    # Qwen2.5-Math's evaluation wording.
    "boxed": "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}.",
}
DEFAULT_TEMPLATE = "dapo"
# Row ids per reason kept in the JSON report; the complete lists go to the .ids.json.gz file.
REPORT_FIRST_IDS = 20


class DataError(ValueError):
    """Input that cannot be converted; the message names the file or columns and the fix."""


@dataclass
class Report:
    """What happened to every input row of one conversion."""

    source: str
    layout: str = ""
    input_rows: int = 0
    written_rows: int = 0
    refused: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    dropped_duplicates: list[str] = field(default_factory=list)

    def as_dict(self, ids_file: str | None = None) -> dict[str, Any]:
        """Counts and the first REPORT_FIRST_IDS row ids per reason (all of them are in `ids_file`)."""

        def entry(ids: list[str]) -> dict[str, Any]:
            return {"count": len(ids), "first_row_ids": ids[:REPORT_FIRST_IDS]}

        return {
            "source": self.source,
            "layout": self.layout,
            "input_rows": self.input_rows,
            "written_rows": self.written_rows,
            "dropped_duplicates": entry(self.dropped_duplicates),
            "refused": {reason: entry(ids) for reason, ids in self.refused.items()},
            "all_row_ids_file": ids_file,
        }

    def all_row_ids(self) -> dict[str, Any]:
        return {"dropped_duplicates": self.dropped_duplicates, "refused": dict(self.refused)}

    def write(self, output_dir: str) -> str:
        """`<source>.report.json` and `<source>.report.ids.json.gz`; returns the JSON's path."""
        ids_name = f"{self.source}.report.ids.json.gz"
        with gzip.open(os.path.join(output_dir, ids_name), "wt", encoding="utf-8") as handle:
            json.dump(self.all_row_ids(), handle)
        path = os.path.join(output_dir, f"{self.source}.report.json")
        with open(path, "w") as handle:
            json.dump(self.as_dict(ids_name), handle, indent=2)
        return path

    def summary(self) -> str:
        parts = [f"{self.source} ({self.layout} layout): {self.input_rows} rows read, {self.written_rows} written"]
        if self.dropped_duplicates:
            parts.append(f"{len(self.dropped_duplicates)} duplicates dropped (first copy kept)")
        for reason, ids in self.refused.items():
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            parts.append(f"{len(ids)} refused as {reason} (row ids: {shown})")
        return "; ".join(parts)

    @property
    def refused_count(self) -> int:
        return sum(len(ids) for ids in self.refused.values())


@dataclass(frozen=True)
class _Candidate:
    row_id: str
    problem: str
    answer: str
    unit: str


def render_prompt(problem: str, template: str) -> list[dict[str, str]]:
    if template not in TEMPLATES:
        raise ValueError(f"Unknown template {template!r}; choose one of: {', '.join(TEMPLATES)}.")
    return [{"role": "user", "content": TEMPLATES[template].replace("{problem}", problem)}]


def _source_prompt(problem: str, source: Source, template: str) -> list[dict[str, str]]:
    if source.prompt_template is None:
        return render_prompt(problem, template)
    return [{"role": "user", "content": source.prompt_template.replace("{problem}", problem)}]


def convert(raw: pd.DataFrame, source: Source, template: str = DEFAULT_TEMPLATE) -> tuple[pd.DataFrame, Report]:
    """Convert one source's raw rows; returns the verl rows and the report of bad rows.

    DataError when the columns match none of the source's layouts or there are no rows; an
    input whose every row is refused returns no rows (the caller writes the report, not a parquet).
    """
    if len(raw) == 0:
        raise DataError("no rows to convert")
    layout = source.detect_layout(list(raw.columns))
    report = Report(source=source.name, layout=layout.name, input_rows=len(raw))
    candidates = _read_candidates(raw.to_dict(orient="records"), source.name, layout, report)
    kept = _deduplicate(candidates, report)
    rows = [_verl_row(candidate, index, source, template) for index, candidate in enumerate(kept)]
    report.written_rows = len(rows)
    return pd.DataFrame(rows, columns=["data_source", "prompt", "ability", "reward_model", "extra_info"]), report


def _read_candidates(records: list[Mapping[str, Any]], name: str, layout: Layout, report: Report) -> list[_Candidate]:
    candidates = []
    for position, record in enumerate(tqdm(records, desc=f"reading {name}", unit="row", leave=False, disable=None)):
        row_id = _text(layout.row_id(record)) or f"row{position}"
        problem = _text(layout.problem(record))
        answer = _text(layout.answer(record))
        if not problem:
            report.refused["missing_problem"].append(row_id)
        elif not answer:
            report.refused["missing_answer"].append(row_id)
        else:
            candidates.append(_Candidate(row_id, problem, answer, _text(layout.unit(record))))
    return candidates


def _deduplicate(candidates: list[_Candidate], report: Report) -> list[_Candidate]:
    by_problem: dict[str, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_problem[_problem_key(candidate.problem)].append(candidate)
    kept = []
    for copies in by_problem.values():
        if len({copy.answer for copy in copies}) > 1:
            report.refused["conflicting_duplicate"].extend(copy.row_id for copy in copies)
            continue
        kept.append(copies[0])
        report.dropped_duplicates.extend(copy.row_id for copy in copies[1:])
    return kept


def _problem_key(problem: str) -> str:
    return re.sub(r"\s+", " ", problem).strip()


def _verl_row(candidate: _Candidate, index: int, source: Source, template: str) -> dict[str, Any]:
    extra_info = {"split": source.split, "index": index, "source_id": candidate.row_id, "problem": candidate.problem}
    if candidate.unit:
        extra_info["unit"] = candidate.unit
    return {
        "data_source": source.data_source,
        "prompt": _source_prompt(candidate.problem, source, template),
        "ability": source.ability,
        "reward_model": {"style": "rule", "ground_truth": candidate.answer},
        "extra_info": extra_info,
    }


def _text(value: Any) -> str:
    """A cell as stripped text; None/NaN -> ""; 27.0 -> "27"; a list or dict where text belongs -> ""."""
    if is_missing(value) or isinstance(value, (list, tuple, dict)) or hasattr(value, "shape"):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_table(path: str) -> pd.DataFrame:
    """A local parquet / jsonl / json / csv file as a DataFrame; DataError names what is wrong with it."""
    readers = {
        ".parquet": pd.read_parquet,
        ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
        ".json": _read_json,
        ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
    }
    suffix = next((suffix for suffix in readers if path.endswith(suffix)), None)
    if suffix is None:
        raise DataError(f"{path}: unsupported file type; give a .parquet, .jsonl, .json or .csv file.")
    if not os.path.exists(path):
        raise DataError(f"{path}: not found")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory; give the {suffix} file itself (a folder goes to --input-dir)")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path} is empty: no rows to convert")
    try:
        return readers[suffix](path)
    except PermissionError as error:
        raise DataError(f"{path} cannot be read ({error.strerror}); check its permissions") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path} has no header and no rows") from error
    except (ValueError, pyarrow.ArrowException, pd.errors.ParserError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path} is not a valid {suffix} file ({detail}); is it corrupt or truncated?") from error


def _read_json(path: str) -> pd.DataFrame:
    try:
        return pd.read_json(path, dtype=False)
    except ValueError:
        return pd.read_json(path, lines=True, dtype=False)


def load_from_hub(source: Source) -> pd.DataFrame:
    """The public dataset through `datasets` (needs network access to the Hugging Face Hub)."""
    import datasets

    try:
        dataset = datasets.load_dataset(source.hub_id, source.hub_config, split=source.hub_split)
    except Exception as error:
        raise RuntimeError(
            f"Could not load {source.hub_id} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            f"Download it elsewhere and pass the file with --input."
        ) from error
    return dataset.to_pandas()
