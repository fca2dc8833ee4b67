"""End to end on CPU: SKPO's reward inside verl's real V1 GRPO run (`examples/cpu_tiny_skpo.sh`).

- Healthy judges: every step's logged metrics carry `reward/judge_failure_share`, computed
  from the reward extra info verl stored for that step's rows. This run is also the e2e GRPO
  run: two FSDP2 ranks (gloo), two hf_cpu replicas, the KL loss with its reference model
  (forward-only FSDP2 with CPU offload), verl's stock `single_turn_agent` (G rows per prompt);
  the gradient of a step that trains is checked by the SKPO e2e tests.
- Broken judges (math-verify cannot import in the judge processes): verl's reward worker
  raises `JudgesUnavailable`, its message reaches the run's log, and the run stops with a
  non-zero exit before any step is trained.

The tiny model never writes `\\boxed{}`, so a small reward file wraps the response in one to
make every call reach the judges. Run alone with `pytest -m e2e`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2e_cpu_harness import end_ray_processes, rows_per_prompt, run_training, short_ray_dir
from test_e2e_cpu import GROUP_SIZE, MAX_ROLLOUT_ACTOR_LOGPROB_DIFF, PROMPTS_PER_STEP

pytestmark = pytest.mark.e2e

REWARD = """
import sys
{setup}
from skpo_verl.reward import compute_score as skpo_compute_score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return skpo_compute_score(data_source, "\\\\boxed{{" + solution_str[:8] + "}}", ground_truth, extra_info)
"""


def train_grpo(workdir: Path, tmp_path: Path, setup: str, *overrides: str, ranks: int = 1):
    reward = tmp_path / "boxed_reward.py"
    reward.write_text(REWARD.format(setup=setup))
    ray_dir = short_ray_dir()
    try:
        return run_training(
            workdir,
            tmp_path / "run",
            ray_dir,
            "grpo",
            2,
            f"reward.custom_reward_function.path={reward}",
            "reward.custom_reward_function.name=compute_score",
            *overrides,
            ranks=ranks,
            timeout_s=400,
        )
    finally:
        end_ray_processes(ray_dir)
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_grpo_on_two_ranks_logs_the_judge_failure_share_each_step(workdir, tmp_path):
    run = train_grpo(
        workdir,
        tmp_path,
        "",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        ranks=2,
    )
    assert run.returncode == 0, run.output[-6000:]
    assert sorted(run.metrics) == [0, 1, 2]  # 0: the launcher's validation before training
    for step in (1, 2):
        # Trained on what the rollout generated with the actor's weights (the sync reached both replicas). The
        # boxed reward judges only the first 8 characters, so the advantages may all be 0: no gradient check here.
        assert run.metrics[step]["training/global_step"] == step
        assert run.metrics[step]["training/rollout_probs_diff_max"] < MAX_ROLLOUT_ACTOR_LOGPROB_DIFF
        share = run.metrics[step]["reward/judge_failure_share"]
        assert 0.0 <= share <= 1.0, (step, share)
        assert run.metrics[step]["actor/kl_loss"] >= 0
        groups = rows_per_prompt(run.rollouts[step])
        assert len(groups) == PROMPTS_PER_STEP
        assert all(sorted(rows) == [(s, 0) for s in range(GROUP_SIZE)] for rows in groups.values())


def test_judges_that_cannot_start_stop_the_run_with_the_cause_in_its_log(workdir, tmp_path):
    broken = tmp_path / "broken" / "math_verify"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("math_verify broken on purpose")\n')
    # Judge processes get the reward worker's sys.path, so they import the broken package first.
    run = train_grpo(workdir, tmp_path, setup=f"sys.path.insert(0, {str(broken.parent)!r})")
    assert run.returncode not in (0, None) and not run.killed, run.output[-6000:]
    assert run.metrics == {}
    assert "JudgesUnavailable: SKPO's reward cannot judge answers" in run.output
    assert "ImportError: math_verify broken on purpose" in run.output
