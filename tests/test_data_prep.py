"""Converters: real column layouts in, parquet that verl 0.9.1's own RLHFDataset loads out."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from skpo_verl.data_prep import prepare
from skpo_verl.data_prep.convert import TEMPLATES, convert, read_table
from skpo_verl.data_prep.sources import SOURCES

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
FIXTURE_FILES = {
    "dapo_math": "dapo_math.parquet",
    "math500": "math500.jsonl",
    "aime2024": "aime2024.parquet",
    "aime2025": "aime2025.jsonl",
    "amc2023": "amc2023.jsonl",
    "minerva": "minerva.jsonl",
    "olympiadbench": "olympiadbench.json",
    "gsm8k_train": "gsm8k_train.csv",
    "gsm8k_test": "gsm8k_test.jsonl",
    "mmlu_pro": "mmlu_pro.jsonl",
    "livecodebench": "livecodebench.jsonl",
}
# source -> (data_source, ground truths in order, rows written)
EXPECTED = {
    "dapo_math": ("math_dapo", ["2", "5"]),
    "math500": ("math500", ["\\frac{14}{3}", "(3, \\frac{\\pi}{2})"]),
    "aime2024": ("aime2024", ["25", "33"]),
    "aime2025": ("aime2025", ["70", "117"]),
    "amc2023": ("amc2023", ["27", "4"]),
    "minerva": ("minerva", ["0.49", "10"]),
    "olympiadbench": ("olympiadbench", ["(2,3),(-1,0)", "8", "120"]),
    "gsm8k_train": ("gsm8k", ["72", "2400"]),
    "gsm8k_test": ("gsm8k", ["18"]),
    "mmlu_pro": ("mmlu_pro", ["B", "B"]),
    "livecodebench": (
        "livecodebench",
        [
            '{"inputs": ["1 2\\n", "10 -4\\n", "0 0\\n"], "outputs": ["3\\n", "6\\n", "0\\n"]}',
            '{"inputs": ["[2, 7, 11, 15]\\n9", "[3, 2, 4]\\n6"], "outputs": ["[0, 1]", "[1, 2]"], "fn_name": "twoSum"}',
        ],
    ),
}
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained here on a few strings (no Hub download)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["Solve the following math problem step by step.", "What is 1+1? Answer: 2"], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", chat_template=CHAT_TEMPLATE
    )


def run_converter(source: str, output_dir, *extra: str) -> pd.DataFrame:
    fixture = os.path.join(FIXTURES, FIXTURE_FILES[source])
    assert prepare.main(["--source", source, "--input", fixture, "--output-dir", str(output_dir), *extra]) == 0
    return pd.read_parquet(os.path.join(output_dir, f"{source}.parquet"))


def load_report(output_dir, source: str) -> dict:
    with open(os.path.join(output_dir, f"{source}.report.json")) as handle:
        return json.load(handle)


def test_every_source_has_a_fixture():
    assert set(FIXTURE_FILES) == set(SOURCES)


@pytest.mark.parametrize("source", sorted(FIXTURE_FILES))
def test_converter_output_loads_through_verl_rlhf_dataset(source, tmp_path, tiny_tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    run_converter(source, tmp_path)
    config = OmegaConf.create(
        {
            "max_prompt_length": 512,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    dataset = RLHFDataset(str(tmp_path / f"{source}.parquet"), tiny_tokenizer, config)

    data_source, ground_truths = EXPECTED[source]
    items = [dataset[i] for i in range(len(dataset))]
    assert [item["reward_model"]["ground_truth"] for item in items] == ground_truths
    assert {item["data_source"] for item in items} == {data_source}
    assert [item["index"] for item in items] == list(range(len(ground_truths)))
    assert {item["extra_info"]["split"] for item in items} == {SOURCES[source].split}
    assert items[0]["raw_prompt"][0]["role"] == "user"


def test_dapo_prompts_are_unwrapped_and_rewrapped_identically(tmp_path):
    rows = run_converter("dapo_math", tmp_path)
    raw = pd.read_parquet(os.path.join(FIXTURES, "dapo_math.parquet"))
    assert rows["prompt"][0][0]["content"] == raw["prompt"][0][0]["content"]
    assert rows["extra_info"][0]["problem"] == "What is $1+1$?"


def test_dapo_duplicates_keep_the_first_copy_and_conflicts_are_refused(tmp_path):
    rows = run_converter("dapo_math", tmp_path)
    report = load_report(tmp_path, "dapo_math")
    assert [info["source_id"] for info in rows["extra_info"]] == ["a0", "a1"]
    # a3 differs from a0 only in whitespace.
    assert report["dropped_duplicates"] == {"count": 2, "first_row_ids": ["a2", "a3"]}
    assert report["refused"]["conflicting_duplicate"] == {"count": 2, "first_row_ids": ["a4", "a5"]}
    assert report["refused"]["missing_answer"] == {"count": 1, "first_row_ids": ["a6"]}
    assert (report["input_rows"], report["written_rows"]) == (7, 2)


def test_every_input_row_is_written_or_reported(tmp_path):
    for source in FIXTURE_FILES:
        run_converter(source, tmp_path)
        report = load_report(tmp_path, source)
        refused = sum(entry["count"] for entry in report["refused"].values())
        assert report["input_rows"] == report["written_rows"] + report["dropped_duplicates"]["count"] + refused


def test_bad_rows_are_named_by_their_source_ids(tmp_path):
    run_converter("math500", tmp_path)
    run_converter("olympiadbench", tmp_path)
    run_converter("gsm8k_train", tmp_path)
    assert load_report(tmp_path, "math500")["refused"] == {
        "missing_problem": {"count": 1, "first_row_ids": ["test/algebra/2.json"]},
        "missing_answer": {"count": 1, "first_row_ids": ["test/algebra/3.json"]},
    }
    assert load_report(tmp_path, "olympiadbench")["refused"] == {
        "missing_answer": {"count": 1, "first_row_ids": ["1608"]}
    }
    # GSM8K rows have no id column: the row position names them.
    assert load_report(tmp_path, "gsm8k_train")["refused"] == {
        "missing_answer": {"count": 1, "first_row_ids": ["row2"]}
    }


def test_strict_mode_fails_when_rows_are_refused(tmp_path):
    fixture = os.path.join(FIXTURES, FIXTURE_FILES["math500"])
    assert prepare.main(["--source", "math500", "--input", fixture, "--output-dir", str(tmp_path), "--strict"]) == 2


def test_boxed_template_wraps_the_problem(tmp_path):
    rows = run_converter("aime2025", tmp_path, "--template", "boxed")
    assert rows["prompt"][0][0]["content"] == TEMPLATES["boxed"].replace("{problem}", rows["extra_info"][0]["problem"])
    assert rows["prompt"][0][0]["content"].endswith("within \\boxed{}.")


def test_all_sources_from_an_input_dir(tmp_path):
    input_dir = tmp_path / "raw"
    input_dir.mkdir()
    for source, name in FIXTURE_FILES.items():
        os.symlink(os.path.join(FIXTURES, name), input_dir / (source + os.path.splitext(name)[1]))
    assert prepare.main(["--source", "all", "--input-dir", str(input_dir), "--output-dir", str(tmp_path / "out")]) == 0
    assert sorted(p for p in os.listdir(tmp_path / "out") if p.endswith(".parquet")) == sorted(
        f"{source}.parquet" for source in FIXTURE_FILES
    )


def test_unsupported_file_type_names_the_accepted_ones(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("")
    with pytest.raises(ValueError, match=r"\.parquet, \.jsonl, \.json or \.csv"):
        read_table(str(path))


def test_converter_keeps_input_order_for_stable_indices():
    raw = pd.DataFrame({"question": ["b", "a", "c"], "answer": ["#### 1", "#### 2", "#### 3"]})
    rows, _ = convert(raw, SOURCES["gsm8k_test"])
    assert [(info["problem"], info["index"]) for info in rows["extra_info"]] == [("b", 0), ("a", 1), ("c", 2)]


def test_prepare_data_example_writes_every_source_offline(tmp_path):
    import subprocess
    import sys

    raw = tmp_path / "raw"
    raw.mkdir()
    for source, name in FIXTURE_FILES.items():
        os.symlink(os.path.join(FIXTURES, name), raw / (source + os.path.splitext(name)[1]))
    script = os.path.join(os.path.dirname(FIXTURES), "..", "..", "examples", "prepare_data.sh")
    environment = {
        **os.environ,
        "RAW_DIR": str(raw),
        "DATA_DIR": str(tmp_path / "data"),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    subprocess.run(["bash", script], env=environment, check=True, capture_output=True)
    assert len(list((tmp_path / "data").glob("*.parquet"))) == len(FIXTURE_FILES)


def test_offline_hub_failure_names_the_local_file_option(tmp_path, monkeypatch, capsys):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert prepare.main(["--source", "math500", "--output-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "Could not load HuggingFaceH4/MATH-500" in error and "pass the file with --input" in error


# ---- bad input never passes silently (each gets one line on stderr, exit 1, no parquet) ----


def run_bad(capsys, source: str, path, output_dir) -> str:
    status = prepare.main(["--source", source, "--input", str(path), "--output-dir", str(output_dir)])
    error = capsys.readouterr().err
    assert status == 1
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in error, error
    assert not os.path.exists(os.path.join(output_dir, f"{source}.parquet"))
    return lines[0]


def test_columns_of_no_layout_name_the_expected_found_and_accepted_columns(tmp_path, capsys):
    path = tmp_path / "aime.jsonl"
    path.write_text(json.dumps({"question": "What is 2+2?", "solution": "4"}) + "\n")
    error = run_bad(capsys, "aime2024", path, tmp_path / "out")
    assert "columns found (question, solution) match no layout of aime2024" in error
    assert "Maxwell-Jia/AIME_2024: Problem, Answer; HuggingFaceH4/aime_2024: problem, answer" in error


@pytest.mark.parametrize(
    ("source", "name", "content", "message"),
    [
        ("math500", "empty.jsonl", "", "is empty: no rows to convert"),
        ("math500", "empty.json", "[]", "no rows to convert"),
        ("gsm8k_train", "header_only.csv", "question,answer\n", "no rows to convert"),
        ("math500", "broken.jsonl", '{"problem": "1+1", "answer": ', "is not a valid .jsonl file"),
        ("aime2024", "broken.parquet", "PAR1 not really a parquet file", "is not a valid .parquet file"),
    ],
)
def test_empty_and_corrupt_files_are_one_line_errors(tmp_path, capsys, source, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    error = run_bad(capsys, source, path, tmp_path / "out")
    assert str(path) in error and message in error


def test_a_file_in_another_encoding_says_to_save_it_as_utf8(tmp_path, capsys):
    path = tmp_path / "gsm8k.csv"
    path.write_bytes("question,answer\nCafé costs 3 €?,#### 3\n".encode("cp1252"))
    error = run_bad(capsys, "gsm8k_train", path, tmp_path / "out")
    assert "is not UTF-8 text" in error and "save it as UTF-8" in error


def test_every_row_refused_is_an_error_with_the_report_written(tmp_path, capsys):
    path = tmp_path / "math500.jsonl"
    path.write_text("".join(json.dumps({"problem": "", "answer": "1", "unique_id": f"u{i}"}) + "\n" for i in range(2)))
    error = run_bad(capsys, "math500", path, tmp_path / "out")
    assert "every one of its 2 rows was refused" in error and "No parquet written" in error
    assert load_report(tmp_path / "out", "math500")["refused"]["missing_problem"]["count"] == 2


def test_nulls_in_nested_json_columns_are_refused_rows(tmp_path):
    fixture = os.path.join(FIXTURES, "dapo_math_nulls.jsonl")
    assert prepare.main(["--source", "dapo_math", "--input", fixture, "--output-dir", str(tmp_path)]) == 0
    report = load_report(tmp_path, "dapo_math")
    assert report["refused"] == {
        "missing_problem": {"count": 1, "first_row_ids": ["c1"]},
        "missing_answer": {"count": 1, "first_row_ids": ["c2"]},
    }
    rows = pd.read_parquet(tmp_path / "dapo_math.parquet")
    assert [info["problem"] for info in rows["extra_info"]] == ["What is $1+2$?"]


def test_missing_file_directory_input_and_file_as_output_dir(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "test.jsonl"
    assert f"{missing}: not found" in run_bad(capsys, "math500", missing, tmp_path / "out")
    folder = tmp_path / "MATH-500.jsonl"
    folder.mkdir()
    assert "is a directory; give the .jsonl file itself" in run_bad(capsys, "math500", folder, tmp_path / "out")
    output_file = tmp_path / "out.txt"
    output_file.write_text("")
    fixture = os.path.join(FIXTURES, FIXTURE_FILES["math500"])
    assert f"--output-dir {output_file} is a file" in run_bad(capsys, "math500", fixture, output_file)


def test_an_unreadable_file_names_the_permission_problem(tmp_path, capsys, monkeypatch):
    # Tests run as root here, where chmod cannot make a file unreadable: the reader raises what open() would.
    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pd, "read_json", denied)
    fixture = os.path.join(FIXTURES, FIXTURE_FILES["math500"])
    error = run_bad(capsys, "math500", fixture, tmp_path / "out")
    assert "cannot be read (Permission denied); check its permissions" in error


@pytest.mark.parametrize(
    ("source", "fixture", "layout", "ground_truths", "source_ids"),
    [
        ("aime2024", "aime2024.parquet", "Maxwell-Jia/AIME_2024", ["25", "33"], ["2024-I-2", "2024-II-4"]),
        ("aime2024", "aime2024_h4.parquet", "HuggingFaceH4/aime_2024", ["204", "113"], ["60", "61"]),
        ("dapo_math", "dapo_math.parquet", "BytedTsinghua-SIA/DAPO-Math-17k", ["2", "5"], ["a0", "a1"]),
        ("dapo_math", "dapo_math_processed.parquet", "open-r1/DAPO-Math-17k-Processed", ["5", "16"], ["b0", "b1"]),
    ],
)
def test_each_public_layout_is_detected_and_named(tmp_path, capsys, source, fixture, layout, ground_truths, source_ids):
    path = os.path.join(FIXTURES, fixture)
    assert prepare.main(["--source", source, "--input", path, "--output-dir", str(tmp_path)]) == 0
    assert f"({layout} layout)" in capsys.readouterr().out
    assert load_report(tmp_path, source)["layout"] == layout
    rows = pd.read_parquet(tmp_path / f"{source}.parquet")
    assert [row["ground_truth"] for row in rows["reward_model"]] == ground_truths
    assert [info["source_id"] for info in rows["extra_info"]] == source_ids


def test_flat_dapo_prompts_are_unwrapped_like_the_nested_ones(tmp_path):
    path = os.path.join(FIXTURES, "dapo_math_processed.parquet")
    assert prepare.main(["--source", "dapo_math", "--input", path, "--output-dir", str(tmp_path)]) == 0
    rows = pd.read_parquet(tmp_path / "dapo_math.parquet")
    assert rows["extra_info"][0]["problem"] == "What is $2+3$?"
    assert rows["prompt"][0][0]["content"] == TEMPLATES["dapo"].replace("{problem}", "What is $2+3$?")


def test_olympiad_context_precedes_the_question_and_the_unit_reaches_the_reward(tmp_path):
    rows = run_converter("olympiadbench", tmp_path)
    infos = {info["source_id"]: info for info in rows["extra_info"]}
    assert infos["1609"]["problem"] == (
        "A car drives at a constant speed of $60$ km per hour.\n\nHow far does the car travel in the first 2 hours?"
    )
    assert infos["1609"]["unit"] == "km"
    assert infos["1607"]["unit"] is None  # pyarrow gives every row the key; the reward treats None as no unit


def test_source_all_goes_on_past_a_failing_source_and_lists_what_succeeded(tmp_path, capsys):
    input_dir = tmp_path / "raw"
    input_dir.mkdir()
    for source, name in FIXTURE_FILES.items():
        os.symlink(os.path.join(FIXTURES, name), input_dir / (source + os.path.splitext(name)[1]))
    os.remove(input_dir / "minerva.jsonl")
    (input_dir / "minerva.jsonl").write_text("")
    output_dir = tmp_path / "out"
    assert prepare.main(["--source", "all", "--input-dir", str(input_dir), "--output-dir", str(output_dir)]) == 1
    error = capsys.readouterr().err
    written = sorted(source for source in FIXTURE_FILES if source != "minerva")
    assert "minerva.jsonl is empty" in error
    assert f"failed: minerva; written: {', '.join(s for s in SOURCES if s != 'minerva')}" in error
    assert sorted(p[: -len(".parquet")] for p in os.listdir(output_dir) if p.endswith(".parquet")) == written
    assert not [p for p in os.listdir(output_dir) if p.endswith(".partial")]


def test_a_parquet_write_that_fails_midway_leaves_no_parquet(tmp_path, monkeypatch):
    def write_half_then_fail(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PAR1 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", write_half_then_fail)
    fixture = os.path.join(FIXTURES, FIXTURE_FILES["math500"])
    assert prepare.main(["--source", "math500", "--input", fixture, "--output-dir", str(tmp_path)]) == 1
    assert [p for p in os.listdir(tmp_path) if "parquet" in p] == []


def test_reports_keep_counts_and_first_ids_and_gzip_every_id(tmp_path):
    import gzip

    # 3,000 copies of one DAPO problem: 2,999 duplicates, as DAPO-Math-17k repeats its problems.
    raw = pd.read_parquet(os.path.join(FIXTURES, "dapo_math.parquet")).iloc[[0] * 3000].reset_index(drop=True)
    raw["extra_info"] = [{"index": f"d{i}"} for i in range(3000)]
    path = tmp_path / "dapo.parquet"
    raw.to_parquet(path)
    assert prepare.main(["--source", "dapo_math", "--input", str(path), "--output-dir", str(tmp_path)]) == 0
    report = load_report(tmp_path, "dapo_math")
    assert report["dropped_duplicates"] == {"count": 2999, "first_row_ids": [f"d{i}" for i in range(1, 21)]}
    assert os.path.getsize(tmp_path / "dapo_math.report.json") < 2000
    with gzip.open(tmp_path / report["all_row_ids_file"], "rt") as handle:
        ids = json.load(handle)
    assert ids["dropped_duplicates"] == [f"d{i}" for i in range(1, 3000)]
