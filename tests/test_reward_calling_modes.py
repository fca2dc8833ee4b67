"""The reward judges, or stops with a clear error, in every way users call it.

Each mode runs for real: a script file, `python -c`, `python -` fed from a pipe, an
interactive session (`python -i` reading stdin: `__main__` has no `__file__`), and a Ray
actor calling it from its executor thread as verl's reward workers do. A judge environment
whose math-verify is broken (a `math_verify` package earlier on PYTHONPATH that fails to
import) must raise `JudgesUnavailable` naming the import error, never score -1.
"""

import asyncio
import os
import subprocess
import sys

import pytest

CALL = 'from skpo_verl.reward import compute_score\nprint("RESULT", compute_score("math", "\\\\boxed{5}", "5"))\n'
CORRECT = "RESULT {'score': 1.0, 'acc': 1.0, 'pred': '5', 'reason': 'correct', 'judge_failure': 0.0}"


def run_python(args, stdin="", env_extra=None):
    environment = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, env=environment, timeout=120
    )


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "score_one.py"
    path.write_text(CALL)
    return str(path)


@pytest.fixture
def broken_math_verify(tmp_path):
    package = tmp_path / "broken" / "math_verify"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("math_verify broken on purpose")\n')
    return {"PYTHONPATH": str(tmp_path / "broken")}


MODES = {
    "script file": lambda script: ([script], ""),
    "python -c": lambda script: (["-c", CALL], ""),
    "python - from a pipe": lambda script: (["-"], CALL),
    "interactive python -i": lambda script: (["-i"], CALL),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_judging_works_in_each_calling_mode(mode, script):
    args, stdin = MODES[mode](script)
    completed = run_python(args, stdin)
    assert CORRECT in completed.stdout.splitlines(), completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("mode", ["script file", "python - from a pipe"])
def test_judges_that_cannot_import_math_verify_stop_with_the_cause(mode, script, broken_math_verify):
    args, stdin = MODES[mode](script)
    completed = run_python(args, stdin, env_extra=broken_math_verify)
    assert completed.returncode == 1
    assert "RESULT" not in completed.stdout  # no -1 was returned
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("skpo_verl.reward.judge_pool.JudgesUnavailable: SKPO's reward cannot judge answers")
    assert "ImportError: math_verify broken on purpose" in last_line
    assert f"`{sys.executable} -c 'import skpo_verl.reward.score, math_verify'`" in last_line


def test_inside_a_ray_actors_executor_thread_like_verls_reward_loop_worker():
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=0)
    class RewardWorker:
        async def score(self, response: str, ground_truth: str, timeout_s: int) -> str:
            from skpo_verl.reward import compute_score

            loop = asyncio.get_running_loop()
            call = lambda: compute_score("math500", response, ground_truth, None, timeout_s)  # noqa: E731
            return (await loop.run_in_executor(None, call))["reason"]

    try:
        worker = RewardWorker.remote()
        assert ray.get(worker.score.remote("\\boxed{0.5}", "\\frac{1}{2}", 5)) == "correct"
        assert ray.get(worker.score.remote("\\boxed{9^{9^{9^{9}}}}", "2", 1)) == "timeout"
        ray.kill(worker)
    finally:
        if started_here:
            ray.shutdown()


def test_a_math_verify_that_imports_but_cannot_judge_fails_the_first_calls_self_test(tmp_path):
    # A math_verify that imports but parses nothing (a broken install, a stub): every answer would be -1.
    package = tmp_path / "stub" / "math_verify"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "def parse(*args, **kwargs):\n    return []\n\n\ndef verify(*args, **kwargs):\n    return False\n"
    )
    (package / "errors.py").write_text("class TimeoutException(Exception):\n    pass\n")
    # The first call has no answer to judge; it still stops, so no response scores -1 unjudged.
    no_answer_call = CALL.replace("\\\\boxed{5}", "I do not know")
    completed = run_python(["-"], no_answer_call, env_extra={"PYTHONPATH": str(tmp_path / "stub")})
    assert completed.returncode == 1 and "RESULT" not in completed.stdout
    last_line = completed.stderr.strip().splitlines()[-1]
    assert "the self-test judged `1` against `1` as 'unparseable_ground_truth', not 'correct'" in last_line
