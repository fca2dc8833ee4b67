"""verl's V1 rollout path run in this process: dataset batch -> `AgentLoopWorkerTQ.generate_sequences`
-> `_run_prompt` -> G sessions -> TransferQueue rows, scored by verl's real reward loop.

Everything is verl's code except transport: the agent-loop worker and its reward-loop worker
run in this process (verl makes them Ray actors), and the rollout server is whatever `server`
the test gives (a local tiny model, or a scripted one with verl's `generate` interface).
"""

import asyncio
import uuid
from types import SimpleNamespace

import numpy as np
import torch

from skpo_verl import rows as R


class InProcessActor:
    """`handle.method.remote(...)` for an object living in this process (verl holds Ray actor handles)."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        method = getattr(self._target, name)
        return SimpleNamespace(remote=lambda *args, **kwargs: asyncio.ensure_future(method(*args, **kwargs)))


class V1Rollout:
    """One `AgentLoopWorkerTQ` (the class verl runs as a Ray actor) with an in-process reward-loop worker."""

    def __init__(self, config, tokenizer, server, transfer_queue, global_steps=3):
        import verl.experimental.agent_loop  # noqa: F401 - registers skpo_agent through the plugin hook
        from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
        from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

        self.config, self.tokenizer, self.tq, self.global_steps = config, tokenizer, transfer_queue, global_steps

        async def build():  # inside the loop that runs them, as in a Ray actor: both keep get_event_loop()
            worker_cls = AgentLoopWorkerTQ.__ray_actor_class__
            return worker_cls(config, server, None, [InProcessActor(RewardLoopWorker(config))])

        self.loop = asyncio.new_event_loop()
        self.worker = self.loop.run_until_complete(build())

    def close(self):
        self.loop.close()

    def dataset_batch(self, split_lengths=None, validate=False):
        """One dataloader batch as verl's V1 trainer submits it (trainer_base.py ~l.1474-1509, ~l.1049-1073)."""
        from verl.utils import tensordict_utils as tu
        from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

        dataset = RLHFDataset(self.config.data.train_files, self.tokenizer, self.config.data)
        batch_dict = collate_fn([dataset[i] for i in range(len(dataset))])
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(dataset))], dtype=object)  # as verl does
        batch = tu.get_tensordict(batch_dict)
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        if validate:
            tu.assign_non_tensor_data(batch, "validate", True)
        elif split_lengths is not None:
            batch[R.PROMPT_SPLIT_LENGTH] = torch.as_tensor(split_lengths)  # as skpo_verl's V1 trainer shim adds it
        return batch

    def generate(self, batch, partition):
        """Roll the batch out; returns (prompt uids, TransferQueue listing of the partition)."""
        uids = list(batch["uid"])
        tags = [{"is_prompt": True, "status": "pending", "global_steps": self.global_steps} for _ in uids]
        self.tq.kv_batch_put(keys=uids, partition_id=partition, tags=tags)

        async def run():
            await self.worker.generate_sequences(batch)
            while self.worker.background_tasks:
                await asyncio.gather(*list(self.worker.background_tasks))

        self.loop.run_until_complete(asyncio.wait_for(run(), timeout=120))
        return uids, self.tq.kv_list(partition)[partition]


def tiny_model(directory, problem):
    """The tiny model built in `directory`, its tokenizer, EOS id and the templated `problem` as q."""
    import verl.experimental.agent_loop  # noqa: F401 - registers skpo_agent through the plugin hook
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skpo_verl.demo.tiny_model import build_tiny_model

    model_dir = build_tiny_model(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return SimpleNamespace(
        dir=model_dir, tokenizer=tokenizer, model=model, eos=tokenizer.eos_token_id, q=question_ids(tokenizer, problem)
    )


def toy_task_rollout(directory, transfer_queue, overrides):
    """A `V1Rollout` of the tiny model (built in `directory`) on `test_agent_loop_v1`'s toy task (its two
    problems, the parity reward), with 64 + 16 token budgets and room for a segment before q; `overrides`
    set G and the SKPO keys under test. Close its `rollout` after use."""
    import verl.experimental.agent_loop  # noqa: F401 - registers skpo_agent through the plugin hook
    from test_agent_loop_v1 import write_toy_task
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skpo_verl.cpu.local_server import LocalTokenServer, compose_rollout_config
    from skpo_verl.demo.tiny_model import build_tiny_model

    model_dir = build_tiny_model(str(directory / "tiny_model"))
    write_toy_task(directory)
    config = compose_rollout_config(
        model_dir,
        [
            "data.max_prompt_length=64",
            "data.max_response_length=16",
            "actor_rollout_ref.rollout.prompt_length=96",
            "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
            f"data.train_files={directory / 'train.parquet'}",
            f"reward.custom_reward_function.path={directory / 'reward.py'}",
            "reward.custom_reward_function.name=parity_reward",
            *overrides,
        ],
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    server = LocalTokenServer(model, [tokenizer.eos_token_id], default_max_tokens=16, global_steps=3)
    rollout = V1Rollout(config, tokenizer, server, transfer_queue)
    return SimpleNamespace(config=config, tokenizer=tokenizer, tq=transfer_queue, rollout=rollout)


def question_ids(tokenizer, problem):
    """q as the agent loop tokenizes it: the chat template with the generation prompt."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text, add_special_tokens=False)
