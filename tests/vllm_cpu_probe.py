"""Drive verl's own trainer and vLLM server on CPU step by step, recording what the tests check.

    VERL_PLATFORM=cpu python tests/vllm_cpu_probe.py WORKDIR RAY_DIR OUT.json

Run by `tests/test_e2e_vllm_cpu.py` in a subprocess (the CPU platform is chosen once per
process, when verl is imported). It does what `python -m verl.trainer.main_ppo` does for the
launcher's SKPO command with `ROLLOUT=vllm` (TaskRunnerV1.run: TransferQueue, the sync trainer's
`init`, the agent-loop manager, `fit`), with probes around one training step:

1. `trainer.init()`: FSDP2 actor, verl's `vLLMReplica` in hybrid mode, first weight sync.
2. Rollout of two prompts by verl's V1 agent-loop worker (`AgentLoopWorkerTQ`, in this process)
   with `skpo_agent`, through verl's `LLMServerClient` to that server; every request and
   answer is recorded (the client is wrapped, the requests pass through unchanged). The rows
   land in a TransferQueue partition of their own.
3. The actor's log-probs of those rows (`trainer._compute_old_log_prob`), beside the engine's.
4. One SKPO training step (`trainer.fit`, 1 step), which ends with verl's weight sync.
5. The same rows again: the engine's log-probs (vLLM prompt log-probs of prompt + response)
   and the actor's.
6. A request vLLM refuses, through the same client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROBE_PARTITION = "probe"
# t_q of the two probed prompts: well inside an answer (no candidate can end), and the whole
# answer budget (the warm-started model ends most candidates with EOS before it).
SPLIT_LENGTHS = (6, 32)


def launcher_overrides(workdir: str) -> list[str]:
    """The overrides `ROLLOUT=vllm bash examples/cpu_tiny_skpo.sh` passes to main_ppo."""
    env = dict(os.environ, PRINT_OVERRIDES="1", ROLLOUT="vllm", ALGO="skpo", WORKDIR=workdir)
    out = subprocess.run(
        ["bash", str(REPO / "examples" / "cpu_tiny_skpo.sh")], env=env, capture_output=True, check=True
    ).stdout
    return [item for item in out.decode().split("\0") if item]


class RecordingClient:
    """verl's LLMServerClient, with each request and its output recorded in completion order."""

    def __init__(self, client):
        self.client = client
        self.calls: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        output = await self.client.generate(
            request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs
        )
        self.calls.append(
            {
                "prompt_ids": [int(t) for t in prompt_ids],
                "max_tokens": int(sampling_params["max_tokens"]),
                "token_ids": [int(t) for t in output.token_ids],
                "log_probs": list(output.log_probs or []),
                "stop_reason": output.stop_reason,
                "global_steps": output.extra_fields.get("global_steps"),
            }
        )
        return output

    def __getattr__(self, name):
        return getattr(self.client, name)


async def engine_log_probs(client, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
    """vLLM's log-probs of `response_ids` after `prompt_ids` (its prompt log-probs, temperature 1)."""
    output = await client.generate(
        "probe",
        prompt_ids=list(prompt_ids) + list(response_ids),
        sampling_params={"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0},
    )
    # verl drops the first position (no log-prob) and pads one after the last
    # (vllm_rollout/utils.py extract_prompt_logprobs): position i scores token i + 1.
    scored = [row[0] for row in output.extra_fields["prompt_logprobs"][:-1]]
    return scored[len(prompt_ids) - 1 :]


def actor_log_probs(trainer, keys: list[str], tags: list[dict]) -> list[list[float]]:
    """The FSDP actor's recomputed log-probs of stored rows (verl's old-log-prob pass)."""
    import transfer_queue as tq
    from transfer_queue import KVBatchMeta

    batch = KVBatchMeta(partition_id=PROBE_PARTITION, keys=list(keys), tags=[dict(tag) for tag in tags])
    trainer._compute_old_log_prob(batch, metrics={})
    data = tq.kv_batch_get(keys=list(keys), partition_id=PROBE_PARTITION, select_fields=["old_log_probs"])
    return [row.tolist() for row in data["old_log_probs"]]


def main(workdir: str, ray_dir: str, out_path: str) -> None:
    import pandas as pd
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf
    from v1_rollout import V1Rollout

    from skpo_verl.verl_config import compose_ppo_config

    started = time.monotonic()
    overrides = [o for o in launcher_overrides(workdir) if "ray_kwargs" not in o and "total_training_steps" not in o]
    overrides += [
        "trainer.total_training_steps=1",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.logger=[console]",
        "+algorithm.skpo.prioritized_sampling=false",
    ]
    config = compose_ppo_config(overrides)
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    ray.init(
        address="local",
        num_cpus=32,
        num_gpus=1,
        include_dashboard=False,
        _temp_dir=ray_dir,
        runtime_env=get_ppo_ray_runtime_env(),
    )
    try:
        from verl.trainer.ppo.v1 import AgentLoopManagerTQ, get_trainer_cls

        config.transfer_queue.enable = True
        OmegaConf.resolve(config)
        tq.init(config.transfer_queue)
        trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)
        trainer.init()
        report: dict = {"init_s": time.monotonic() - started}

        # 2. rollout of two prompts with skpo_agent, through the trainer's own vLLM server.
        two = Path(out_path).with_suffix(".parquet")
        pd.read_parquet(config.data.train_files).head(len(SPLIT_LENGTHS)).to_parquet(two)
        rollout_config = OmegaConf.merge(config, {"data": {"train_files": str(two)}})
        client = RecordingClient(trainer.get_llm_client())
        rollout = V1Rollout(rollout_config, trainer.tokenizer, client, tq, global_steps=1)
        # verl's V1 worker stores rows in the "train" partition; they move to a partition of their
        # own, so that the training step below neither samples nor clears them.
        uids, listing = rollout.generate(rollout.dataset_batch(list(SPLIT_LENGTHS)), "train")
        keys = sorted(key for key in listing if key.rsplit("_", 2)[0] in uids and key not in uids)
        if not keys:
            raise RuntimeError(f"the probe rollout stored no rows: {listing}")
        tags = [listing[key] for key in keys]
        tq.kv_batch_put(
            keys=keys, partition_id=PROBE_PARTITION, fields=tq.kv_batch_get(keys=keys, partition_id="train"), tags=tags
        )
        tq.kv_clear(keys=[*uids, *keys], partition_id="train")
        fields = [
            "prompts",
            "responses",
            "rollout_log_probs",
            "rm_scores",
            "skpo_is_upstream",
            "skpo_split_length",
            "skpo_segment_length",
            "skpo_candidate_tokens",
            "skpo_early_eos_candidates",
        ]
        data = tq.kv_batch_get(keys=keys, partition_id=PROBE_PARTITION, select_fields=fields)
        rows = {
            key: {
                "prompt_ids": data["prompts"][i].tolist(),
                "response_ids": data["responses"][i].tolist(),
                "rollout_log_probs": data["rollout_log_probs"][i].tolist(),
                "score": float(data["rm_scores"][i].sum()),
                **{name: data[name][i].item() for name in fields if name.startswith("skpo_")},
            }
            for i, key in enumerate(keys)
        }
        report.update(uids=uids, statuses={uid: listing[uid]["status"] for uid in uids}, rows=rows)
        report["calls"] = client.calls
        report["eos_token_ids"] = sorted({int(trainer.tokenizer.eos_token_id)})
        report["actor_before"] = dict(zip(keys, actor_log_probs(trainer, keys, tags)))

        # 4. one SKPO training step, ending with verl's weight sync into the engine.
        manager = AgentLoopManagerTQ.create(
            config=config,
            llm_client=trainer.get_llm_client(),
            teacher_client=trainer.get_teacher_client(),
            reward_loop_worker_handles=trainer.get_reward_handles(),
        )
        step_started = time.monotonic()
        trainer.fit(manager)
        report["step_s"] = time.monotonic() - step_started

        # 5. the same rows, after the step.
        async def rescore():
            llm = trainer.get_llm_client()
            return await asyncio.gather(
                *(engine_log_probs(llm, row["prompt_ids"], row["response_ids"]) for row in rows.values())
            )

        report["engine_after"] = dict(zip(keys, asyncio.run(rescore())))
        report["actor_after"] = dict(zip(keys, actor_log_probs(trainer, keys, tags)))

        # 6. a request vLLM refuses: its error reaches the caller.
        async def refused():
            try:
                await trainer.get_llm_client().generate(
                    "refused", prompt_ids=rows[keys[0]]["prompt_ids"], sampling_params={"max_tokens": 4, "top_p": 0.0}
                )
            except Exception as error:  # noqa: BLE001 - the probe reports whatever reached the caller
                return f"{type(error).__name__}: {error}"
            return None

        report["refused"] = asyncio.run(refused())
        rollout.close()
        report["wall_s"] = time.monotonic() - started
        Path(out_path).write_text(json.dumps(report))
    finally:
        tq.close()
        ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
