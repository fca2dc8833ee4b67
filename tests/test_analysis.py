"""skpo-analyze: Appendix A (hand-checked), Fig. 3 and Sec. 4.3 on CPU with tiny models, and the [s, q] layout
on Llama-3.2-Instruct's published chat template."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openai_server import LoopbackServer, build_app

from skpo_verl.analysis import cli, token_advantages
from skpo_verl.analysis.conditioning import conditioned, load_segment_tokenizer, token_cut
from skpo_verl.analysis.implicit_advantage import continuation_message, normalised_advantages
from skpo_verl.analysis.shortcut import group_statistics
from skpo_verl.analysis.sign_accuracy import all_signs_correct, sign_accuracy, sign_accuracy_by_distance
from skpo_verl.analysis.skip_layout import downstream_inputs, find, landmarks
from skpo_verl.core.advantages import downstream_advantages
from skpo_verl.data_prep import prepare
from skpo_verl.demo.tiny_model import build_tiny_model

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


def test_token_cut_keeps_the_first_round_fraction_of_the_tokens(model_dir):
    tokenizer = load_segment_tokenizer(model_dir)  # byte-level, no merges: one token per ASCII character
    text = "alpha beta gamma"  # 16 tokens
    assert token_cut(text, 0.5, tokenizer) == ("alpha be", 8)
    assert token_cut(text, 0.25, tokenizer) == ("alph", 4)
    assert token_cut(text, 0.1, tokenizer) == ("al", 2)  # round(1.6)
    assert token_cut(text, 1.0, tokenizer) == (text, 16) and token_cut(text, 0.0, tokenizer) == ("", 0)


def test_token_cut_never_splits_a_character_it_counts_bytes_of(model_dir):
    tokenizer = load_segment_tokenizer(model_dir)
    # "é" is two byte tokens; a cut after its first byte ends after the whole character (offsets are characters).
    assert token_cut("éa", 1 / 3, tokenizer) == ("é", 1)


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
    # Positions count the tokens of the response from q: each segment is its first round(p x n).
    for row in samples.itertuples():
        assert row.segment_tokens == round(row.position * row.response_tokens)


# --- Appendix A.2, Fig. 6a -----------------------------------------------------------------------------------------


def test_per_prefix_sign_accuracy_matches_the_three_prefix_closed_form():
    # p = (0.2, 0.5, 0.8), N = 1 (module docstring of sign_accuracy): the middle prefix (true advantage 0) is right
    # iff X = (0,0,0) or (1,1,1): 0.8*0.5*0.2 + 0.2*0.5*0.8 = 0.16; an outer one iff it alone is on its side:
    # 0.8 * (1 - 0.5*0.2) = 0.72.
    rows = sign_accuracy_by_distance([1], 200_000, seed=3, probabilities=[0.2, 0.5, 0.8])
    by_distance = {round(row["distance"], 6): row for row in rows}
    assert sorted(by_distance) == [0.0, 0.3]
    middle, outer = by_distance[0.0], by_distance[0.3]
    assert (middle["prefixes"], outer["prefixes"]) == (200_000, 400_000)
    assert abs(middle["accuracy"] - 0.16) < 4 * middle["std_error"]
    # The two outer prefixes of a group are correlated, so their pooled standard error is understated: 8 of them.
    assert abs(outer["accuracy"] - 0.72) < 8 * outer["std_error"]


def test_mc_sign_distance_command_bins_drawn_groups_and_accuracy_grows_with_distance(tmp_path):
    args = ["mc-sign-distance", "--continuations", "8", "--trials", "4000", "--bins", "4", "--out-dir", str(tmp_path)]
    assert cli.main(args) == 0
    rows = pd.read_csv(tmp_path / "mc_sign_distance.csv")
    assert list(rows["continuations"]) == [8] * 4 and rows["prefixes"].sum() == 4000 * 8
    # Prefixes near the group mean flip sign most (the paper's Fig. 6a finding).
    assert rows["accuracy"].is_monotonic_increasing
    assert (tmp_path / "mc_sign_distance.png").read_bytes()[:4] == b"\x89PNG"


# --- Appendix A.3, Figs. 7 and 8 -------------------------------------------------------------------------------------


def test_token_errors_match_the_two_response_closed_form():
    # G = 2 responses with prefix values (0.6, 0.2), outcomes (right, wrong): true centred advantages (+0.2, -0.2);
    # GRPO's constant gives (+0.5, -0.5): every sign right, MAE 0.3. MC with K = 1: X ~ Bernoulli(0.6), Bernoulli(0.2).
    # Signs right iff X = (1, 0): 0.6 * 0.8 = 0.48. MAE: (1,0) -> |0.5 - 0.2| = 0.3 (p 0.48); (0,1) -> 0.7 (p 0.08);
    # ties -> Â = 0, error 0.2 (p 0.44): 0.144 + 0.056 + 0.088 = 0.288.
    groups = 100_000
    values = np.broadcast_to(np.array([[0.6], [0.2]]), (groups, 2, 1))
    outcomes = np.broadcast_to(np.array([True, False]), (groups, 2))
    errors = token_advantages.token_errors(values, outcomes, 1, np.random.default_rng(0))
    assert errors["grpo_sign"].all() and np.allclose(errors["grpo_error"], 0.3)
    assert abs(errors["mc_sign"].mean() - 0.48) < 4 * np.sqrt(0.48 * 0.52 / groups)
    assert np.array_equal(errors["mc_all_signs"][:, 0], errors["mc_sign"][:, 0, 0])  # G = 2: both or neither
    assert abs(errors["mc_error"].mean() - 0.288) < 0.003


def test_value_paths_start_at_the_prompts_success_probability_and_end_at_the_outcome():
    rng = np.random.default_rng(1)
    p0 = np.full(20_000, 0.3)
    values, outcomes = token_advantages.value_paths(p0, 4, 10, rng)
    assert np.allclose(values[..., 0], 0.3) and np.array_equal(values[..., -1], outcomes.astype(float))
    # A value is a martingale: at every position its expectation is p0 (and so is the share of right outcomes).
    for t in (3, 9, 10):
        assert abs(values[..., t].mean() - 0.3) < 4 * values[..., t].std() / np.sqrt(values[..., t].size)
    conditioned, fixed = token_advantages.correctness_groups(3, 50, 8, 10, rng)
    assert fixed.sum(axis=1).tolist() == [3] * 50
    assert np.array_equal(conditioned[..., -1], fixed.astype(float))
    # Conditioned on ending right, a path's value rises on average from p0 towards 1.
    assert (conditioned[:, :3, 5].mean() > conditioned[:, :3, 0].mean()) and (conditioned[:, 3:, 5].mean() < 0.5)


def test_grpo_constant_is_zero_in_an_all_wrong_group_so_its_error_is_the_true_advantages_size():
    values, outcomes = token_advantages.correctness_groups(0, 200, 8, 20, np.random.default_rng(2))
    inner = token_advantages.interior(values)
    errors = token_advantages.token_errors(inner, outcomes, 8, np.random.default_rng(3))
    true = inner - inner.mean(axis=1, keepdims=True)
    assert np.allclose(errors["grpo_error"], np.abs(true))


def test_mc_correctness_command_writes_one_panel_row_per_case_and_position(tmp_path):
    args = ["mc-correctness", "--group-size", "4", "--positions", "10", "--groups", "200", "--out-dir", str(tmp_path)]
    assert cli.main(args) == 0
    rows = pd.read_csv(tmp_path / "mc_correctness.csv")
    assert len(rows) == 5 * 9 and sorted(set(rows["correct"])) == [0, 1, 2, 3, 4]
    summary = pd.read_csv(tmp_path / "mc_correctness_summary.csv")
    # With none right GRPO's advantages are all 0, and a true advantage is never exactly 0 inside a response
    # except where every value has collapsed to the same end: its sign accuracy is small there.
    assert summary.loc[summary["correct"] == 0, "grpo_sign_accuracy"].item() < 0.2
    assert rows.loc[rows["correct"] == 4, "value_wrong"].isna().all()
    assert (tmp_path / "mc_correctness.png").read_bytes()[:4] == b"\x89PNG"


def test_mc_k_sweep_command_mc_error_falls_with_k_and_grpos_stays(tmp_path):
    args = ["mc-k-sweep", "--continuations", "8,64,512", "--groups", "300", "--positions", "20"]
    assert cli.main(args + ["--out-dir", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "mc_k_sweep.csv")
    assert list(rows["continuations"]) == [8, 64, 512]
    assert rows["mc_mae"].is_monotonic_decreasing and rows["mc_sign_accuracy"].is_monotonic_increasing
    assert rows["grpo_mae"].nunique() == 1 and rows["grpo_sign_accuracy"].nunique() == 1
    # Seeded: the same command writes the same table.
    assert cli.main(args + ["--out-dir", str(tmp_path / "again")]) == 0
    assert pd.read_csv(tmp_path / "again" / "mc_k_sweep.csv").equals(rows)


# --- Sec. 4.3, Fig. 4 ------------------------------------------------------------------------------------------------


def test_advantages_are_normalised_across_methods_per_problem_and_position():
    per_prefix = pd.DataFrame(
        {
            "method": ["A", "A", "B", "C", "A", "B"],
            "data_source": ["math500"] * 6,
            "index": [0, 0, 0, 0, 1, 1],
            "position": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
            "success": [1.0, 0.5, 0.25, 0.0, 0.5, 0.5],
        }
    )
    cells = normalised_advantages(per_prefix).set_index(["index", "method"])
    # Problem 0: R = (0.75, 0.25, 0.0), mean 1/3, population std sqrt((25 + 1 + 16)/144 / 3) = sqrt(7/72).
    std = np.sqrt(7 / 72)
    assert cells.loc[(0, "A"), "success_rate"] == 0.75 and cells.loc[(0, "A"), "responses"] == 2
    assert np.isclose(cells.loc[(0, "A"), "advantage"], (0.75 - 1 / 3) / std)
    assert np.isclose(cells.loc[(0, "C"), "advantage"], (0.0 - 1 / 3) / std)
    # Problem 1: equal rates give 0 for both.
    assert cells.loc[(1, "A"), "advantage"] == cells.loc[(1, "B"), "advantage"] == 0.0


def write_generations(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"{path.stem.upper()}={path}"


def implicit_arguments(math500: str, model_dir: str, methods: list[str], url: str, out_dir) -> list[str]:
    """implicit-advantage on the math500 fixture with the tiny tokenizer, the evaluator served at `url`."""
    args = ["implicit-advantage", "--data-dir", os.path.dirname(math500), "--tokenizer", model_dir]
    args += [item for method in methods for item in ("--method", method)]
    args += ["--continuation-backend", "openai", "--continuation-base-url", url, "--continuation-model", "evaluator"]
    return args + ["--out-dir", str(out_dir)]


def generation(index: int, response: str, sample: int = 0) -> dict:
    truth = {0: "\\frac{14}{3}", 1: "(3, \\frac{\\pi}{2})"}[index]
    return {"data_source": "math500", "index": index, "sample": sample, "ground_truth": truth, "response": response}


def test_implicit_advantage_end_to_end_against_an_openai_server(math500, model_dir, tmp_path):
    pad = "x" * 100
    early = lambda index, truth: f"\\boxed{{{truth}}} " + pad  # noqa: E731 - the answer in the first quarter
    late = lambda index, truth: pad + f" \\boxed{{{truth}}}"  # noqa: E731 - only the whole response has it
    middle = lambda index, truth: "y" * 40 + f" \\boxed{{{truth}}} " + "z" * 40  # noqa: E731 - within 50-75%
    truths = {0: "\\frac{14}{3}", 1: "(3, \\frac{\\pi}{2})"}
    methods = [
        write_generations(tmp_path / "a.jsonl", [generation(i, early(i, truths[i])) for i in (0, 1)]),
        write_generations(tmp_path / "b.jsonl", [generation(i, late(i, truths[i])) for i in (0, 1)]),
        write_generations(tmp_path / "c.jsonl", [generation(0, "\\boxed{999}"), generation(1, middle(1, truths[1]))]),
    ]
    app, log = build_app(model_dir, "evaluator")
    with LoopbackServer(app) as server:
        args = implicit_arguments(math500, model_dir, methods, server.url, tmp_path / "out")
        args += ["--positions", "4", "--continuations", "2", "--max-tokens", "4", "--replicates", "2000"]
        assert cli.main(args + ["--continuation-api", "chat"]) == 0
    # C's answer to problem 0 is wrong and left out: 5 correct responses x 4 cuts x K = 2.
    assert log.requests == 5 * 4 * 2
    prompt = log.prompts[0]
    assert "Carry on from exactly the point where the partial solution stops" in prompt
    assert "do not repeat or redo any step" in prompt
    cut = early(0, truths[0])[: round(0.25 * len(early(0, truths[0])))]
    assert f"## Partial solution\n{cut}<|im_end|>" in "".join(log.prompts)
    curve = pd.read_csv(tmp_path / "out" / "implicit_advantage.csv").set_index(["method", "position"])
    # The evaluator (a random tiny model) never writes an answer, so R = 1 exactly where the cut holds the boxed
    # answer. Problem 0 (A, B): at 1/4..3/4 R = (1, 0) -> Â = (+1, -1); at 1 all equal -> 0. Problem 1 (A, B, C):
    # at 1/4 and 1/2 R = (1, 0, 0) -> Â_A = (2/3)/sqrt(2/9) = sqrt(2), Â_B = Â_C = -sqrt(2)/2; at 3/4
    # R = (1, 0, 1) -> Â_A = Â_C = sqrt(2)/2, Â_B = -sqrt(2).
    root2 = np.sqrt(2)
    expected_a = {0.25: (1 + root2) / 2, 0.5: (1 + root2) / 2, 0.75: (1 + root2 / 2) / 2, 1.0: 0.0}
    expected_b = {0.25: (-1 - root2 / 2) / 2, 0.5: (-1 - root2 / 2) / 2, 0.75: (-1 - root2) / 2, 1.0: 0.0}
    for position in expected_a:
        assert np.isclose(curve.loc[("A", position), "mean_advantage"], expected_a[position])
        assert np.isclose(curve.loc[("B", position), "mean_advantage"], expected_b[position])
    assert np.isclose(curve.loc[("C", 0.75), "mean_advantage"], root2 / 2)
    assert curve.loc[("C", 0.75), "problems"] == 1 and curve.loc[("A", 0.75), "problems"] == 2
    # The band resamples A's two problems: its ends are the two problems' own values.
    assert np.isclose(curve.loc[("A", 0.25), "ci_low"], 1.0) and np.isclose(curve.loc[("A", 0.25), "ci_high"], root2)
    prefixes = pd.read_csv(tmp_path / "out" / "implicit_advantage_prefixes.csv")
    assert len(prefixes) == 5 * 4 and set(prefixes["success"]) == {0.0, 1.0}
    assert (tmp_path / "out" / "implicit_advantage.png").read_bytes()[:4] == b"\x89PNG"


def test_implicit_advantage_raw_mode_opens_the_evaluators_answer_with_the_prefix(math500, model_dir, tmp_path):
    methods = [
        write_generations(tmp_path / "a.jsonl", [generation(0, "\\boxed{\\frac{14}{3}} done")]),
        write_generations(tmp_path / "b.jsonl", [generation(0, "so \\boxed{\\frac{14}{3}}")]),
    ]
    app, log = build_app(model_dir, "evaluator")
    with LoopbackServer(app) as server:
        args = implicit_arguments(math500, model_dir, methods, server.url, tmp_path / "out")
        args += ["--positions", "2", "--continuations", "1", "--max-tokens", "2", "--continuation-mode", "raw"]
        args += ["--continuation-api", "completions", "--continuation-tokenizer", model_dir]
        assert cli.main(args) == 0
    # The problem's own prompt, then the assistant turn opened by the cut: half of each response's tokens (one byte
    # one token here), then the whole.
    answer_turn = "<|im_start|>assistant\n"
    openings = sorted(prompt.split(answer_turn, 1)[1] for prompt in log.prompts)
    responses = ["\\boxed{\\frac{14}{3}} done", "so \\boxed{\\frac{14}{3}}"]
    assert openings == sorted([text[: round(len(text) / 2)] for text in responses] + responses)
    assert all("Simplify $\\frac{28}{6}$." in prompt for prompt in log.prompts)


def test_implicit_advantage_refuses_one_method(math500, model_dir, tmp_path, capsys):
    method = write_generations(tmp_path / "a.jsonl", [generation(0, "\\boxed{1}")])
    args = ["implicit-advantage", "--method", method, "--data-dir", os.path.dirname(math500)]
    args += ["--tokenizer", model_dir, "--continuation-backend", "openai", "--continuation-model", "m"]
    assert cli.main(args + ["--out-dir", str(tmp_path)]) == 1
    assert "two or more methods" in capsys.readouterr().err


def test_implicit_advantage_names_a_problem_missing_from_the_data(math500, model_dir, tmp_path, capsys):
    methods = [
        write_generations(tmp_path / "a.jsonl", [generation(0, "\\boxed{\\frac{14}{3}}") | {"index": 7}]),
        write_generations(tmp_path / "b.jsonl", [generation(0, "\\boxed{\\frac{14}{3}}")]),
    ]
    args = implicit_arguments(math500, model_dir, methods, "http://127.0.0.1:9/v1", tmp_path)
    assert cli.main(args) == 1
    assert "A: math500 problem 7 is not in the benchmark parquet" in capsys.readouterr().err


def test_continuation_message_holds_the_problem_and_the_partial_solution_verbatim():
    message = continuation_message("Add 1 and 2.", "We add: 1 + ")
    assert message.endswith("## Problem\nAdd 1 and 2.\n\n## Partial solution\nWe add: 1 + ")
    assert "\\boxed{}" in message


# --- Where [s, q] puts s: Llama-3.2-Instruct's published chat template ----------------------------------------------

LLAMA_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)


@pytest.fixture(scope="module")
def llama_tokenizer(tmp_path_factory):
    """A byte-level tokenizer with Llama 3's special tokens and Llama-3.2-3B-Instruct's chat template, built here
    (the real BPE vocabulary needs the Hub; layouts depend on the template and the special tokens only)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("llama32")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(LLAMA_SPECIALS))
    tokenizer.save(str(directory / "tokenizer.json"))
    template = (Path(FIXTURES).parent / "templates" / "llama3.2_instruct_chat_template.jinja").read_text()
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(str(directory))


def test_skip_format_tokens_puts_the_segment_before_llamas_bos_and_system_header(llama_tokenizer):
    messages = [{"role": "user", "content": "What is 6 times 7?"}]
    segment = " First, 6 times 7 means"
    inputs = downstream_inputs(llama_tokenizer, messages, segment, "llama")
    bos = llama_tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    # verl's templated q opens with BOS and the system header (with the cut-off and today's date).
    assert inputs["prompt"][0] == bos
    assert llama_tokenizer.decode(inputs["prompt"][:2]) == "<|begin_of_text|><|start_header_id|>"
    # tokens: s's 23 byte tokens first, BOS right after them, then q exactly as verl templated it.
    assert inputs["tokens"][:23] == inputs["segment"] and len(inputs["segment"]) == 23
    assert inputs["tokens"].index(bos) == 23 and inputs["tokens"][23:] == inputs["prompt"]
    # chat: BOS and the whole system turn first; s opens the user turn, trimmed by the template's `| trim`,
    # then the separator, then the problem.
    chat = llama_tokenizer.decode(inputs["chat"])
    user_turn = "<|start_header_id|>user<|end_header_id|>\n\n"
    assert inputs["chat"][0] == bos and chat.count("<|begin_of_text|>") == 1
    assert f"<|eot_id|>{user_turn}First, 6 times 7 means\n\nWhat is 6 times 7?<|eot_id|>" in chat
    assert chat.index("Cutting Knowledge Date") < chat.index("First, 6 times")
    assert find(inputs["chat"], llama_tokenizer("First,", add_special_tokens=False)["input_ids"]) > inputs[
        "chat"
    ].index(llama_tokenizer.convert_tokens_to_ids("<|eot_id|>"))


def test_skip_layout_lists_the_landmarks_in_input_order(llama_tokenizer):
    messages = [{"role": "user", "content": "What is 6 times 7?"}]
    inputs = downstream_inputs(llama_tokenizer, messages, "Six sevens.", "llama")
    found = [what for _, what in landmarks(llama_tokenizer, inputs["tokens"], "Six sevens.", "What is 6 times 7?")]
    assert found[:4] == ["segment s starts", "segment s ends", "<|begin_of_text|>", "<|start_header_id|> (system)"]
    found = [what for _, what in landmarks(llama_tokenizer, inputs["chat"], "Six sevens.", "What is 6 times 7?")]
    assert found.index("<|start_header_id|> (user)") < found.index("segment s starts") < found.index("problem q starts")
    assert found[0] == "<|begin_of_text|>"
