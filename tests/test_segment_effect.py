"""`skpo_verl.analysis.segment_effect` on the demo's warm-started model (the session's `workdir`, built once for
every test that needs it)."""

import pytest
import torch

from skpo_verl.analysis.segment_effect import first_step_tokens, segment_effect
from skpo_verl.demo import task


@pytest.fixture(scope="module")
def demo_model(workdir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skpo_verl.demo.prepare import prepare

    path = prepare(str(workdir), "demo")["MODEL_PATH"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_the_segment_is_the_first_worked_step(demo_model):
    _, tokenizer = demo_model
    assert tokenizer.decode(first_step_tokens(tokenizer, (3, 5, 4), 0)) == "3+5=8. "
    assert tokenizer.decode(first_step_tokens(tokenizer, (3, 5, 4), 1)) == "3+5=9. "


def test_the_warm_started_model_builds_on_the_segment_it_is_shown(demo_model):
    model, tokenizer = demo_model
    train, _ = task.problems(task.TaskSpec())
    rates = segment_effect(model, tokenizer, train[:16], answers=4)
    assert set(rates) == {(f, c) for f in ("right", "slipped") for c in ("skip", "continual")}
    assert all(rate * 64 == int(rate * 64) for rate in rates.values())  # shares of 16 x 4 answers
    # Continuing a worked first step carries it into the answer: a slip makes the answer wrong.
    assert rates[("right", "continual")] >= rates[("slipped", "continual")] + 0.5, rates
    # So do SKPO's answers from [s, q], after the demo's 600-step warm start (measured 95% vs 3%
    # on all 48 training problems x 8 answers; after 300 steps it was 52% vs 41%, and R_I was noise).
    assert rates[("right", "skip")] >= rates[("slipped", "skip")] + 0.5, rates


def test_the_long_tasks_segment_is_its_first_step_and_its_answers_get_its_budget():
    from skpo_verl.demo.prepare import task_lengths

    assert task_lengths("long") == (64, 64) and task_lengths("benchmark") == (64, 32)
    operands = (8, 5, 9, 7, 3)  # "8+5=13. 13+9=22. 22+7=29. 29+3=32.\nAnswer: 32": 45 byte tokens
    assert len(task.worked_solution(operands)) + 1 <= task_lengths("long")[1]  # + EOS
    assert task.carries(operands) == [True, True, False, True]
    assert task.worked_solution(operands, slips=(0, 1, 0, 0)) == "8+5=13. 13+9=23. 23+7=30. 30+3=33.\nAnswer: 33"
