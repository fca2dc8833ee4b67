"""End to end on CPU with multi-split (`NUM_SPLITS=2`, i.e. `+algorithm.skpo.num_splits=2`): verl's
real trainer through `examples/cpu_tiny_skpo.sh` trains 3 steps and checkpoints the stage
trackers. Run alone with `pytest -m e2e tests/test_e2e_multi_split.py`.
"""

from __future__ import annotations

import pytest
from test_e2e_cpu import (
    GROUP_SIZE,
    PROMPTS_PER_STEP,
    assert_trained,
    checkpoint_step,
    rows_per_prompt,
    skpo_state,
    train,
)

pytestmark = pytest.mark.e2e


def test_two_splits_train_and_checkpoint_the_stage_trackers(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("NUM_SPLITS", "2")
    checkpoints = tmp_path / "checkpoints"
    run = train(
        workdir,
        tmp_path / "run",
        "skpo",
        3,
        f"trainer.default_local_dir={checkpoints}",
        "trainer.save_freq=3",
        timeout_s=1200,
    )
    assert_trained(run, [1, 2, 3])
    stage_two_prompts = 0
    for step in (1, 2, 3):
        groups = rows_per_prompt(run.rollouts[step])
        assert len(groups) == PROMPTS_PER_STEP, step
        for rows in groups.values():
            # Session 0 emits [up_1, down_1_0, up_2, down_2_0] (or the first two when stage 2 was skipped),
            # sessions 1..G-1 one answer per stage.
            stages = sum(1 for session, _ in rows if session == 1)
            assert stages in (1, 2), (step, rows)
            answers = [(s, i) for s in range(1, GROUP_SIZE) for i in range(stages)]
            expected = [(0, i) for i in range(2 * stages)] + answers
            assert sorted(rows) == expected, (step, rows)
            stage_two_prompts += stages == 2
        metrics = run.metrics[step]
        up_1, up_2 = metrics["skpo/upstream/rows_stage1"], metrics["skpo/upstream/rows_stage2"]
        assert up_1 == PROMPTS_PER_STEP and metrics["skpo/upstream/rows"] == up_1 + up_2
        assert metrics["skpo/downstream/rows"] == GROUP_SIZE * (up_1 + up_2)
        assert metrics["skpo/multi_split/stages_mean"] == pytest.approx((up_1 + up_2) / PROMPTS_PER_STEP)
        assert up_2 == sum(
            sum(1 for session, _ in rows if session == 1) == 2 for rows in rows_per_prompt(run.rollouts[step]).values()
        )
    assert stage_two_prompts >= 1  # the demo's 6-16-token first segments leave room for a second one

    assert checkpoint_step(checkpoints) == 3
    state = skpo_state(checkpoints, 3)
    stage_keys = state["stage_values"]["keys"]
    assert stage_keys and all(isinstance(key, tuple) and key[1] == 2 for key in stage_keys)
    assert {key for key, _ in stage_keys} <= set(state["values"]["keys"])  # every stage-2 prompt has a stage 1
