"""`skpo_verl.analysis.upstream_signs` on a hand-written rollout dump in verl's V1 layout."""

import json

import pytest

from skpo_verl.analysis.upstream_signs import count_signs, first_step_kind, format_counts, main, read_dump


def _prompt(uid, problem, segment, scores, step):
    """verl's dump rows of one SKPO prompt: upstream `<uid>_0_0`, answers `<uid>_0_1`, `<uid>_1_0`, ..."""
    keys = [f"{uid}_0_1"] + [f"{uid}_{s}_0" for s in range(1, len(scores))]
    rows = [{"input": f"{problem}\n", "output": segment, "score": scores[0], "step": step, "uid": f"{uid}_0_0"}]
    rows += [
        {"input": f"{segment}{problem}\n", "output": f"{segment}...", "score": score, "step": step, "uid": key}
        for key, score in zip(keys, scores)
    ]
    return rows


def _write(directory, step, rows):
    (directory / f"{step}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_first_step_kind():
    assert first_step_kind("3+5=8. 8+4=12.", (3, 5, 4)) == "right"
    assert first_step_kind("3+5=9. ", (3, 5, 4)) == "wrong"
    assert first_step_kind("3+4=7. ", (3, 5, 4)) == "wrong"  # right sum of the wrong operands
    assert first_step_kind("3+5", (3, 5, 4)) == "cut before"


def test_counts_negative_upstream_advantages_per_segment_kind(tmp_path, capsys):
    # Step 1: A's right segment, answers all right (R_I = 1); B's slipped one, all wrong (-1): A +, B -.
    _write(
        tmp_path,
        1,
        _prompt("a", "Add 3, 5, 4.", "3+5=8. ", [1, 1], 1) + _prompt("b", "Add 2, 2, 1.", "2+2=5. ", [-1, -1], 1),
    )
    # Step 4: R_I = 1 (C, right), 0 (D, right first step, one answer wrong later), 1 (A again, cut before):
    # mean 2/3, so D's advantage is negative although its first step is right; A is a revisit.
    _write(
        tmp_path,
        4,
        _prompt("c", "Add 1, 1, 1.", "1+1=2. 2+1=3.", [1, 1], 4)
        + _prompt("d", "Add 6, 7, 2.", "6+7=13. ", [1, -1], 4)
        + _prompt("e", "Add 3, 5, 4.", "3+", [1, 1], 4),
    )
    counts = count_signs(read_dump(str(tmp_path)), early_steps=3)
    assert counts == {
        ("early", "right"): {"rows": 1, "negative": 0, "revisits": 0},
        ("early", "wrong"): {"rows": 1, "negative": 1, "revisits": 0},
        ("late", "right"): {"rows": 2, "negative": 1, "revisits": 0},
        ("late", "cut before"): {"rows": 1, "negative": 0, "revisits": 1},
    }
    main([str(tmp_path)])
    assert "| 4- | right | 2 | 1 (50%) | 0 |" in capsys.readouterr().out
    assert format_counts(counts, 3).count("\n") == 1 + 4


def test_a_dump_without_skpo_rows_is_refused(tmp_path):
    _write(tmp_path, 1, [{"input": "Add 1, 2, 3.\n", "output": "x", "score": 1.0, "step": 1, "uid": "u_1_0"}])
    with pytest.raises(ValueError, match="lacks its upstream row"):
        count_signs(read_dump(str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="trainer.rollout_data_dir"):
        read_dump(str(tmp_path / "missing"))


def test_a_multi_split_dump_is_refused(tmp_path):
    # num_splits = 2: session 0 emits up_1, down_1_0, up_2, down_2_0 (outputs 0-3); its stage-2 rows would
    # otherwise be read as more answers of stage 1.
    rows = _prompt("a", "Add 3, 5, 4.", "3+5=8. ", [1, 1], 1)
    rows.append({"input": "Add 3, 5, 4.\n3+5=8. ", "output": "8+4=12.", "score": 1.0, "step": 1, "uid": "a_0_2"})
    _write(tmp_path, 1, rows)
    with pytest.raises(ValueError, match="multi-split run"):
        count_signs(read_dump(str(tmp_path)))
