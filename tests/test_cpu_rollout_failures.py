"""On the CPU backend a failed rollout request fails the step, with the request's error
(`patches/cpu_rollout_failures.py`), where verl's sync replay buffer would train on the prompts left.

verl's V1 agent-loop worker (`AgentLoopWorkerTQ`, in this process, with verl's `single_turn_agent`
and its reward loop) rolls out two prompts against a local model whose requests for one of them
fail; TransferQueue is the real one (the suite's local Ray). The CPU shim's wrapper is installed
by hand here: its hook only installs with `VERL_PLATFORM=cpu`, and this process runs without it.
"""

from __future__ import annotations

import pandas as pd
import pytest
from test_cpu_replay_buffer import CUSTOM_SAMPLER, build_buffer
from transformers import AutoModelForCausalLM, AutoTokenizer
from v1_rollout import V1Rollout

from skpo_verl.cpu.local_server import LocalTokenServer, compose_rollout_config
from skpo_verl.demo.tiny_model import build_tiny_model
from skpo_verl.patches import cpu_rollout_failures

G = 2
PROBLEMS = ["Add 2 and 3.", "What is 4 times 5?"]
REFUSED = "top_p must be in (0, 1], got 0.0."
REWARD_SOURCE = """
def parity_reward(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return 1.0 if len(solution_str) % 2 == 0 else -1.0
"""


class RefusesOneProblem:
    """The local model's server, except that every request for the second problem fails, as vLLM
    refuses a request (the error reaches the agent loop through verl's client)."""

    def __init__(self, server, refused_prompt_ids):
        self.server, self.refused = server, list(refused_prompt_ids)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        if list(prompt_ids) == self.refused:
            raise ValueError(REFUSED)
        return await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)


@pytest.fixture
def rolled_out(tmp_path, transfer_queue, monkeypatch):
    """Both prompts rolled out with the CPU shim's wrapper; yields (uids, listing of "train")."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    monkeypatch.setattr(
        AgentLoopWorker, "_run_agent_loop", cpu_rollout_failures._tag_errors(AgentLoopWorker._run_agent_loop)
    )
    model_dir = build_tiny_model(str(tmp_path / "tiny"))
    (tmp_path / "reward.py").write_text(REWARD_SOURCE)
    pd.DataFrame(
        {
            "data_source": ["toy"] * 2,
            "prompt": [[{"role": "user", "content": problem}] for problem in PROBLEMS],
            "ability": ["math"] * 2,
            "reward_model": [{"style": "rule", "ground_truth": "5"}, {"style": "rule", "ground_truth": "20"}],
            "extra_info": [{"split": "train", "index": i} for i in range(2)],
        }
    ).to_parquet(tmp_path / "train.parquet")
    config = compose_rollout_config(
        model_dir,
        [
            f"actor_rollout_ref.rollout.n={G}",
            "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
            "data.max_prompt_length=64",
            "data.max_response_length=8",
            f"data.train_files={tmp_path / 'train.parquet'}",
            f"reward.custom_reward_function.path={tmp_path / 'reward.py'}",
            "reward.custom_reward_function.name=parity_reward",
        ],
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    refused = tokenizer.apply_chat_template([{"role": "user", "content": PROBLEMS[1]}], add_generation_prompt=True)
    refused = refused["input_ids"] if hasattr(refused, "keys") else refused
    server = LocalTokenServer(
        AutoModelForCausalLM.from_pretrained(model_dir).eval(), [tokenizer.eos_token_id], default_max_tokens=8
    )
    rollout = V1Rollout(config, tokenizer, RefusesOneProblem(server, refused), transfer_queue)
    try:
        yield rollout.generate(rollout.dataset_batch(), "train")
    finally:
        rollout.close()


def test_a_failed_request_is_recorded_on_its_prompt_before_verl_marks_the_prompt_failed(rolled_out):
    uids, listing = rolled_out
    good, bad = uids
    assert listing[good]["status"] == "finished" and cpu_rollout_failures.ERROR_TAG not in listing[good]
    assert listing[bad]["status"] == "failure"
    error = listing[bad][cpu_rollout_failures.ERROR_TAG]
    assert f"of prompt uid={bad}: ValueError: {REFUSED}" in error


def test_the_cpu_replay_buffer_stops_the_step_with_the_error_where_verls_trains_on_the_rest(rolled_out):
    uids, _ = rolled_out
    good, bad = uids
    with pytest.raises(cpu_rollout_failures.RolloutFailed) as failed:
        build_buffer(*CUSTOM_SAMPLER).sample(global_steps=3, partition_id="train", batch_size=2)
    message = str(failed.value)
    assert "1 prompt(s) of partition 'train' failed in rollout" in message
    assert f"prompt uid={bad}: session" in message and REFUSED in message
    # verl's own buffer samples both groups, the failed one without a single row: the step would
    # train on the G answers of the other prompt alone.
    batch, _ = build_buffer().sample(global_steps=3, partition_id="train", batch_size=2)
    assert sorted(batch.keys) == [f"{good}_{s}_0" for s in range(G)]
