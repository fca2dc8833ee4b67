"""Raw dataset rows -> verl RL parquet rows, with every bad row accounted for.

Output row (verl 0.9.1 `RLHFDataset` layout):
    data_source, prompt=[{"role": "user", "content": <template(problem)>}], ability,
    reward_model={"style": "rule", "ground_truth": <answer>},
    extra_info={"split", "index" (0..N-1, stable for the same input), "source_id", "problem"}

Bad-row rules (docs/data.md):
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

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd
from tqdm import tqdm

from skpo_verl.data_prep.sources import DAPO_PREFIX, DAPO_SUFFIX, Source

TEMPLATES = {
    # DAPO-Math-17k's own wording: the paper's training prompts, and our default everywhere.
    "dapo": DAPO_PREFIX + "{problem}" + DAPO_SUFFIX,
    # Qwen2.5-Math's evaluation wording.
    "boxed": "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}.",
}
DEFAULT_TEMPLATE = "dapo"


@dataclass
class Report:
    """What happened to every input row of one conversion."""

    source: str
    input_rows: int = 0
    written_rows: int = 0
    refused: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    dropped_duplicates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "input_rows": self.input_rows,
            "written_rows": self.written_rows,
            "dropped_duplicates": {"count": len(self.dropped_duplicates), "row_ids": self.dropped_duplicates},
            "refused": {reason: {"count": len(ids), "row_ids": ids} for reason, ids in self.refused.items()},
        }

    def summary(self) -> str:
        parts = [f"{self.source}: {self.input_rows} rows read, {self.written_rows} written"]
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


def render_prompt(problem: str, template: str) -> list[dict[str, str]]:
    if template not in TEMPLATES:
        raise ValueError(f"Unknown template {template!r}; choose one of: {', '.join(TEMPLATES)}.")
    return [{"role": "user", "content": TEMPLATES[template].replace("{problem}", problem)}]


def _source_prompt(problem: str, source: Source, template: str) -> list[dict[str, str]]:
    if source.prompt_template is None:
        return render_prompt(problem, template)
    return [{"role": "user", "content": source.prompt_template.replace("{problem}", problem)}]


def convert(raw: pd.DataFrame, source: Source, template: str = DEFAULT_TEMPLATE) -> tuple[pd.DataFrame, Report]:
    """Convert one source's raw rows; returns the verl rows and the report of bad rows."""
    report = Report(source=source.name, input_rows=len(raw))
    candidates = _read_candidates(raw.to_dict(orient="records"), source, report)
    kept = _deduplicate(candidates, report)
    rows = [_verl_row(candidate, index, source, template) for index, candidate in enumerate(kept)]
    report.written_rows = len(rows)
    return pd.DataFrame(rows, columns=["data_source", "prompt", "ability", "reward_model", "extra_info"]), report


def _read_candidates(records: list[Mapping[str, Any]], source: Source, report: Report) -> list[_Candidate]:
    candidates = []
    for position, record in enumerate(tqdm(records, desc=f"reading {source.name}", unit="row", leave=False)):
        row_id = _text(source.row_id(record)) or f"row{position}"
        problem = _text(source.problem(record))
        answer = _text(source.answer(record))
        if not problem:
            report.refused["missing_problem"].append(row_id)
        elif not answer:
            report.refused["missing_answer"].append(row_id)
        else:
            candidates.append(_Candidate(row_id, problem, answer))
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
    return {
        "data_source": source.data_source,
        "prompt": _source_prompt(candidate.problem, source, template),
        "ability": source.ability,
        "reward_model": {"style": "rule", "ground_truth": candidate.answer},
        "extra_info": {
            "split": source.split,
            "index": index,
            "source_id": candidate.row_id,
            "problem": candidate.problem,
        },
    }


def _text(value: Any) -> str:
    """A cell as stripped text; None/NaN -> ""; 27.0 -> "27"."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def read_table(path: str) -> pd.DataFrame:
    """A local parquet / jsonl / json / csv file as a DataFrame."""
    readers = {
        ".parquet": pd.read_parquet,
        ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
        ".json": _read_json,
        ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
    }
    for suffix, reader in readers.items():
        if path.endswith(suffix):
            return reader(path)
    raise ValueError(f"{path}: unsupported file type; give a .parquet, .jsonl, .json or .csv file.")


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

