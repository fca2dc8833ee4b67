"""skpo-analyze: Appendix A's sign accuracy (hand-checked), Fig. 3 and Sec. 4.3 on CPU with tiny models."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from openai_server import LoopbackServer, build_app

from skpo_verl.analysis import cli
from skpo_verl.analysis.conditioning import conditioned, cut
from skpo_verl.analysis.implicit_advantage import match_on_correctness
from skpo_verl.analysis.shortcut import group_statistics
from skpo_verl.analysis.sign_accuracy import all_signs_correct, sign_accuracy
from skpo_verl.core.advantages import downstream_advantages
from skpo_verl.data_prep import prepare
from skpo_verl.demo.tiny_model import TinyModelSpec, build_tiny_model

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")


def test_all_signs_correct_compares_centred_counts_with_the_true_centred_probabilities():
    truth = np.array([0.2, 0.5, 0.8])  # centred signs: -, 0, +
    successes = np.array([[0, 2, 4], [1, 2, 3], [0, 3, 4], [2, 2, 2], [4, 2, 0]])
    # Row 3: mean 7/3, the middle estimate is below it; row 4: all tied, every estimated sign 0.
    assert all_signs_correct(successes, truth).tolist() == [True, True, False, False, False]


def test_signs_agree_with_skpos_group_relative_advantages():
    rng = np.random.default_rng(1)
    truth = np.linspace(0.3, 0.7, 4)
    successes = rng.binomial(5, truth, size=(200, 4))
    rewards = (successes / 5).ravel()
    advantages = downstream_advantages(rewards, np.repeat(np.arange(200), 4), eps=1e-6).reshape(200, 4)
    # An estimate equal to its group's mean leaves a float residual (~1e-16) in the float advantage;
    # all_signs_correct counts in integers and sees an exact 0.
    estimated = np.sign(np.where(np.abs(advantages) < 1e-9, 0.0, advantages))
    expected = np.all(estimated == np.sign(truth - truth.mean()), axis=1)
    assert np.array_equal(all_signs_correct(successes, truth), expected)


@pytest.mark.parametrize(
    ("continuations", "exact"),
    [
        # G = 2, p = (0.2, 0.6): both signs right iff X1 < X2.
        (1, 0.8 * 0.6),  # X1 = 0 and X2 = 1: 0.48
        (2, (2 * 0.6 * 0.4) * 0.8**2 + 0.6**2 * (0.8**2 + 2 * 0.2 * 0.8)),  # 0.3072 + 0.3456 = 0.6528
    ],
)
def test_two_prefix_sign_accuracy_matches_the_closed_form(continuations, exact):
    probability, stderr = sign_accuracy(np.array([0.2, 0.6]), continuations, 400_000, np.random.default_rng(0))
    assert abs(probability - exact) < 4 * stderr
    assert stderr < 0.001


def test_mc_sign_command_writes_one_row_per_spread_and_n(tmp_path):
    args = [
        "mc-sign",
        "--group-size",
        "8",
        "--spreads",
        "0.45-0.55,0.3-0.7",
        "--continuations",
        "8,64",
        "--trials",
        "2000",
        "--out-dir",
        str(tmp_path),
    ]
    assert cli.main(args) == 0
    rows = pd.read_csv(tmp_path / "mc_sign.csv")
    assert list(zip(rows["p_low"], rows["p_high"], rows["continuations"])) == [
        (0.45, 0.55, 8),
        (0.45, 0.55, 64),
        (0.3, 0.7, 8),
        (0.3, 0.7, 64),
    ]
    assert (tmp_path / "mc_sign.png").read_bytes()[:4] == b"\x89PNG"


def test_mc_sign_rejects_a_spread_outside_zero_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["mc-sign", "--spreads", "0.5-1.5", "--out-dir", str(tmp_path)])
    assert "0 <= LOW <= HIGH <= 1" in capsys.readouterr().err


def test_cut_ends_before_a_whitespace_and_keeps_everything_at_one():
    text = "alpha beta gamma delta"  # 22 characters
    assert cut(text, 0.5) == "alpha beta"  # cut at 11, back to the space at 10
    assert cut(text, 1.0) == text and cut(text, 0.0) == ""


def test_conditionings_place_the_segment_where_the_agent_loop_does():
    messages = ({"role": "user", "content": "q"},)
    assert (
        conditioned(messages, "s", "unconditional", 0).lead,
        conditioned(messages, "s", "unconditional", 0).prefix,
    ) == ("", "")
    assert conditioned(messages, "s", "continual", 0).prefix == "s"
    assert conditioned(messages, "s", "skip", 0).lead == "s"


def test_group_statistics():
    stats = group_statistics([1.0, 1.0, 1.0], ["2", "2", ""], [3, 5, 10])
    assert stats == {"diversity": 2, "advantage_zero": 1.0, "length": 6.0}
    assert group_statistics([1.0, 0.0], ["2", "3"], [1, 1])["advantage_zero"] == 0.0


def test_matching_keeps_equal_counts_of_right_and_wrong_per_problem():
    a = pd.DataFrame(
        {"problem": [0, 0, 0, 1], "sample": [0, 1, 2, 0], "response": list("abcd"), "correct": [1.0, 1.0, 0.0, 0.0]}
    )
    b = pd.DataFrame(
        {"problem": [0, 0, 1, 1], "sample": [0, 1, 0, 1], "response": list("efgh"), "correct": [1.0, 0.0, 0.0, 0.0]}
    )
    kept_a, kept_b = match_on_correctness(a, b)
    # problem 0: one wrong and one right each (a's second right one is dropped); problem 1: one wrong each.
    assert list(kept_a["response"]) == ["c", "a", "d"]
    assert list(kept_b["response"]) == ["f", "e", "g"]


@pytest.fixture(scope="module")
def math500(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    args = ["--source", "math500", "--input", os.path.join(FIXTURES, "math500.jsonl"), "--output-dir", str(out)]
    assert prepare.main(args) == 0
    return str(out / "math500.parquet")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")))


def test_shortcut_through_an_openai_server_sends_each_conditioning_and_summarises(math500, model_dir, tmp_path):
    app, log = build_app(model_dir, "tiny")
    with LoopbackServer(app) as server:
        args = [
            "shortcut",
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
            "--data",
            math500,
            "--positions",
            "0.25,0.5",
            "--group-size",
            "2",
            "--max-tokens",
            "12",
            "--temperature",
            "1.0",
            "--concurrency",
            "2",
            "--out-dir",
            str(tmp_path),
        ]
        assert cli.main(args) == 0
    # 2 responses from q, then 2 problems x 2 positions x 3 conditionings x G = 2 continuations.
    assert log.requests == 2 + 24
    summary = pd.read_csv(tmp_path / "shortcut.csv")
    assert list(zip(summary["position"], summary["conditioning"])) == [
        (p, c) for p in (0.25, 0.5) for c in ("unconditional", "continual", "skip")
    ]
    assert set(summary["groups"]) == {2}
    assert summary["diversity"].between(1, 2).all() and summary["advantage_zero_rate"].between(0, 1).all()
    samples = pd.read_json(tmp_path / "shortcut_samples.jsonl", lines=True)
    assert len(samples) == 24
    opening, answer_turn = "<|im_start|>user\n", "<|im_start|>assistant\n"
    prompts = log.prompts[2:]
    plain = [p for p in prompts if p.startswith(opening) and p.endswith(answer_turn)]
    continual = [p.split(answer_turn, 1)[1] for p in prompts if p.startswith(opening) and not p.endswith(answer_turn)]
    skip = [p.split(opening, 1)[0] for p in prompts if not p.startswith(opening) and p.endswith(answer_turn)]
    # 8 of each; continual opens the answer with the same segments that skip puts before the problem.
    assert (len(plain), len(continual), len(skip)) == (8, 8, 8)
    assert sorted(continual) == sorted(skip) and all(skip)
    assert (tmp_path / "shortcut.png").exists()


def test_implicit_advantage_with_two_local_checkpoints_and_a_served_continuation_model(math500, model_dir, tmp_path):
    other = build_tiny_model(str(tmp_path / "other"), TinyModelSpec(seed=1))
    app, log = build_app(model_dir, "judge-model")
    with LoopbackServer(app) as server:
        args = [
            "implicit-advantage",
            "--backend",
            "hf",
            "--device",
            "cpu",
            "--model-a",
            model_dir,
            "--model-b",
            other,
            "--names",
            "GRPO,SKPO",
            "--data",
            math500,
            "--responses",
            "2",
            "--continuations",
            "2",
            "--continuation-backend",
            "openai",
            "--continuation-base-url",
            server.url,
            "--continuation-model",
            "judge-model",
            "--continuation-api",
            "completions",
            "--continuation-tokenizer",
            model_dir,
            "--max-tokens",
            "6",
            "--out-dir",
            str(tmp_path),
        ]
        assert cli.main(args) == 0
    # An untrained model answers nothing right: all 2 x 2 responses of each side are matched as wrong.
    # 2 checkpoints x 4 responses x 5 bins x 2 continuations.
    assert log.requests == 80
    summary = pd.read_csv(tmp_path / "implicit_advantage.csv")
    bins = ["0%-20%", "20%-40%", "40%-60%", "60%-80%", "80%-100%"]
    assert list(zip(summary["checkpoint"], summary["bin"])) == [
        (c, b) for c in ("GRPO", "SKPO", "SKPO - GRPO") for b in bins
    ]
    assert set(summary["final_correct"]) == {0.0}
    assert set(summary["mc_success"]) == {0.0}
    assert set(summary["responses"].dropna()) == {4.0}
    assert len(pd.read_csv(tmp_path / "implicit_advantage_prefixes.csv")) == 2 * 4 * 5


def test_implicit_advantage_reaches_each_checkpoint_on_its_own_server(math500, model_dir, tmp_path):
    other = build_tiny_model(str(tmp_path / "other"), TinyModelSpec(seed=1))
    app_a, log_a = build_app(model_dir, "grpo")
    app_b, log_b = build_app(other, "skpo")
    with LoopbackServer(app_a) as server_a, LoopbackServer(app_b) as server_b:
        args = [
            "implicit-advantage",
            "--backend",
            "openai",
            "--base-url",
            server_a.url,
            "--base-url-b",
            server_b.url,
            "--api",
            "completions",
            "--tokenizer",
            model_dir,
            "--model-a",
            "grpo",
            "--model-b",
            "skpo",
            "--data",
            math500,
            "--responses",
            "2",
            "--continuations",
            "1",
            "--bin-edges",
            "0,0.5,1",
            "--continuation-backend",
            "hf",
            "--continuation-model",
            model_dir,
            "--continuation-device",
            "cpu",
            "--max-tokens",
            "4",
            "--out-dir",
            str(tmp_path),
        ]
        assert cli.main(args) == 0
    # Each server answered its own checkpoint's 2 problems x 2 responses, nothing else.
    assert (log_a.requests, log_b.requests) == (4, 4)
    summary = pd.read_csv(tmp_path / "implicit_advantage.csv")
    assert list(summary["bin"]) == ["0%-50%", "50%-100%"] * 3
