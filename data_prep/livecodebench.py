"""LiveCodeBench code generation (livecodebench/code_generation_lite, the `test*.jsonl` files).

Public columns: question_title, question_content, platform, question_id, contest_id,
contest_date, starter_code, difficulty, public_test_cases (JSON string: a list of
{"input", "output", "testtype": "stdin" | "functional"}), private_test_cases (the same list,
as a JSON string or, in the lite releases, base64 of zlib of a pickled JSON string) and
metadata (JSON string; "func_name" for LeetCode-style functional problems).

The ground truth written to the parquet is verl's APPS test layout as a JSON string,
`{"inputs": [...], "outputs": [...]}` plus `"fn_name"` for functional problems: public tests
first, then private ones (LiveCodeBench grades on both). A row whose tests cannot be decoded,
or whose functional tests lack a func_name, is refused as missing_answer.

The hub loader of code_generation_lite is a dataset script that recent `datasets` releases no
longer run: download the jsonl files of the release you evaluate on and pass them with --input
(one file, or concatenate several; filter by contest_date before converting for a date window).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from collections.abc import Mapping
from typing import Any

from skpo_verl.data_prep.sources import Layout, Source, column

PROMPT_TEMPLATE = (
    "You will be given a programming problem. Write a correct Python 3 program that solves it and passes "
    "all its tests, and put the whole program in one ```python code block at the end of your response.\n\n"
    "{problem}"
)
STDIN_INSTRUCTION = (
    "Read the input from standard input and write the answer to standard output; do not test on the sample "
    "inputs yourself."
)
STARTER_INSTRUCTION = "Complete this starter code (keep its class and method names):\n```python\n{starter_code}\n```"


class _TextOnlyUnpickler(pickle.Unpickler):
    """The private tests are a pickled *string*: refuse any class, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name}: LiveCodeBench test data is a pickled string")


def decode_test_cases(value: Any) -> list[dict] | None:
    """A public or private test-case cell as a list of {"input", "output", "testtype"}, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        cases = json.loads(value)
    except json.JSONDecodeError:
        try:
            text = _TextOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
            cases = json.loads(text)
        except (ValueError, zlib.error, pickle.UnpicklingError, TypeError, EOFError):
            return None
    if not isinstance(cases, list) or not all(
        isinstance(case, dict) and "input" in case and "output" in case for case in cases
    ):
        return None
    return cases


def func_name(row: Mapping[str, Any]) -> str | None:
    metadata = row.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError:
            return None
    return metadata.get("func_name") if isinstance(metadata, Mapping) else None


def livecodebench_problem(row: Mapping[str, Any]) -> str | None:
    content = row.get("question_content")
    if not isinstance(content, str) or not content.strip():
        return None
    starter = row.get("starter_code")
    if isinstance(starter, str) and starter.strip():
        instruction = STARTER_INSTRUCTION.replace("{starter_code}", starter.strip("\n"))
    else:
        instruction = STDIN_INSTRUCTION
    return content.strip() + "\n\n" + instruction


def livecodebench_tests(row: Mapping[str, Any]) -> str | None:
    public = decode_test_cases(row.get("public_test_cases"))
    private = decode_test_cases(row.get("private_test_cases")) if row.get("private_test_cases") else []
    if public is None or private is None or not public + private:
        return None
    cases = public + private
    tests: dict[str, Any] = {"inputs": [case["input"] for case in cases], "outputs": [case["output"] for case in cases]}
    if any(case.get("testtype") == "functional" for case in cases):
        name = func_name(row)
        if not name:
            return None
        tests["fn_name"] = name
    return json.dumps(tests)


SOURCE = Source(
    name="livecodebench",
    data_source="livecodebench",
    split="test",
    hub_id="livecodebench/code_generation_lite",
    hub_config=None,
    hub_split="test",
    layouts=(
        Layout(
            "livecodebench/code_generation_lite",
            ("question_content", "public_test_cases", "question_id"),
            livecodebench_problem,
            livecodebench_tests,
            column("question_id"),
        ),
    ),
    ability="code",
    prompt_template=PROMPT_TEMPLATE,
)
