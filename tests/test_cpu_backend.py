"""Fast tests of the CPU backend's pieces: the hf_cpu server (alone and batched), the opt-in
switch and the shims (the bundled task: tests/test_cpu_demo.py). verl-level checks run in a
subprocess because the switch (`VERL_PLATFORM`) is read when verl modules are imported."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from skpo_verl.demo.tiny_model import build_tiny_model

PROMPT = [258, 72, 105, 10]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture()
def server(model_dir):
    from skpo_verl.cpu.rollout import HFCPUServer

    config = SimpleNamespace(max_model_len=None, prompt_length=16, response_length=12, seed=0)
    return HFCPUServer(config, model_path=model_dir, trust_remote_code=False, replica_rank=0)


def generate(server, prompt=PROMPT, **sampling_params):
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, **sampling_params}
    return asyncio.run(server.generate(prompt_ids=prompt, sampling_params=params, request_id="r"))


def test_server_honours_max_tokens_and_reports_version(server):
    output = generate(server, max_tokens=5, ignore_eos=True)
    assert len(output.token_ids) == 5
    assert len(output.log_probs) == 5
    assert output.stop_reason == "completed"
    assert output.extra_fields == {"global_steps": 0, "min_global_steps": 0, "max_global_steps": 0}


def test_server_defaults_to_response_length_and_clamps_to_context(server):
    assert len(generate(server, ignore_eos=True).token_ids) == 12  # response_length
    long_prompt = [65] * 25  # context = prompt_length + response_length = 28
    assert len(generate(server, prompt=long_prompt, max_tokens=10, ignore_eos=True).token_ids) == 3
    with pytest.raises(ValueError, match="no room"):
        generate(server, prompt=[65] * 28)


def test_server_stops_at_eos(server):
    first = generate(server, max_tokens=4, temperature=0, ignore_eos=True).token_ids[0]
    server.eos_token_ids = [first]  # make the greedy first token an end-of-sequence token
    output = generate(server, max_tokens=4, temperature=0)
    assert output.token_ids == [first]
    assert output.stop_reason == "completed"


def test_log_probs_match_a_full_forward_pass_at_the_temperature(server):
    output = generate(server, max_tokens=8, ignore_eos=True, temperature=0.7)
    sequence = torch.tensor([PROMPT + output.token_ids])
    with torch.no_grad():
        logits = server.model(sequence).logits[0, len(PROMPT) - 1 : -1] / 0.7
    expected = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(output.token_ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(output.log_probs), expected, atol=1e-5, rtol=0)


PROMPTS = [PROMPT, [65] * 9, [1, 2, 3], [100, 101, 102, 103, 104, 105, 106]]


async def _together(server, requests: list[dict]):
    """Issue all requests before any is served: the server decodes them as one batch."""
    return await asyncio.gather(
        *(
            server.generate(prompt_ids=r.pop("prompt"), sampling_params=r, request_id=str(i))
            for i, r in enumerate(requests)
        )
    )


def test_concurrent_requests_are_decoded_in_one_batch_with_the_tokens_and_log_probs_of_each_alone(server):
    """Greedy, prompts of 4, 9, 3 and 7 tokens (left padding up to 9), max_tokens 5..8."""
    greedy = dict(temperature=0, logprobs=True, ignore_eos=True)
    alone = [generate(server, prompt=p, max_tokens=5 + i, **greedy) for i, p in enumerate(PROMPTS)]
    assert server.batch_sizes == [1, 1, 1, 1]
    together = asyncio.run(
        _together(server, [dict(prompt=p, max_tokens=5 + i, **greedy) for i, p in enumerate(PROMPTS)])
    )
    assert server.batch_sizes[4:] == [4]
    for single, batched in zip(alone, together):
        assert batched.token_ids == single.token_ids
        assert len(batched.token_ids) == len(single.token_ids)
        torch.testing.assert_close(torch.tensor(batched.log_probs), torch.tensor(single.log_probs), atol=1e-5, rtol=0)
    assert [len(output.token_ids) for output in together] == [5, 6, 7, 8]


def test_a_batch_honours_each_requests_eos_logprobs_and_temperature(server):
    first_tokens = [generate(server, prompt=p, max_tokens=1, temperature=0).token_ids[0] for p in PROMPTS[:2]]
    server.eos_token_ids = sorted(set(first_tokens))  # both greedy first tokens end a response
    outputs = asyncio.run(
        _together(
            server,
            [
                dict(prompt=PROMPTS[0], max_tokens=6, temperature=0, logprobs=True),
                dict(prompt=PROMPTS[1], max_tokens=6, temperature=0, logprobs=False),
                dict(prompt=PROMPTS[0], max_tokens=6, temperature=0, ignore_eos=True, logprobs=True),
                dict(prompt=PROMPTS[2], max_tokens=6, temperature=0.7, ignore_eos=True, logprobs=True, seed=3),
            ],
        )
    )
    assert server.batch_sizes[-1] == 4
    assert outputs[0].token_ids == [first_tokens[0]] and len(outputs[0].log_probs) == 1
    assert outputs[1].token_ids == [first_tokens[1]] and outputs[1].log_probs is None
    assert len(outputs[2].token_ids) == 6 and outputs[2].token_ids[0] == first_tokens[0]
    # The sampled row used its own seeded generator and the 0.7-scaled distribution, as alone.
    alone = generate(server, prompt=PROMPTS[2], max_tokens=6, temperature=0.7, ignore_eos=True, seed=3)
    assert outputs[3].token_ids == alone.token_ids
    torch.testing.assert_close(torch.tensor(outputs[3].log_probs), torch.tensor(alone.log_probs), atol=1e-5, rtol=0)


def test_eos_ids_are_gathered_from_generation_config_model_config_and_tokenizer(model_dir):
    from transformers import AutoModelForCausalLM

    from skpo_verl.cpu.rollout import _eos_token_ids

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.generation_config.eos_token_id = [258, 7]
    model.config.eos_token_id = 9
    tokenizer = SimpleNamespace(eos_token_id=258)
    assert _eos_token_ids(model, tokenizer) == [7, 9, 258]


def test_log_probs_only_when_requested(server):
    assert generate(server, max_tokens=3, logprobs=False).log_probs is None


def test_server_refuses_what_it_cannot_honour(server):
    with pytest.raises(ValueError, match="stop_token_ids"):
        generate(server, stop_token_ids=[1])
    with pytest.raises(NotImplementedError, match="repetition_penalty"):
        generate(server, repetition_penalty=1.1)


def test_weight_update_changes_generation_and_version(server):
    greedy = dict(max_tokens=6, temperature=0, ignore_eos=True)
    before = generate(server, **greedy).token_ids
    generator = torch.Generator().manual_seed(1)
    new_weights = {
        name: torch.randn(tensor.shape, generator=generator) for name, tensor in server.model.state_dict().items()
    }
    asyncio.run(server.update_weights(new_weights, global_steps=7))
    after = generate(server, **greedy)
    assert after.token_ids != before
    assert after.extra_fields["global_steps"] == 7
    with pytest.raises(ValueError, match="do not match"):
        asyncio.run(server.update_weights({"not.a.weight": torch.zeros(1)}, global_steps=8))


_VERL_PROBE = """
import json, os
from verl.plugin.platform import get_platform
from verl.plugin.platform.platform_manager import PlatformRegistry, _detect_platform_name
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.trainer import main_ppo
from verl.workers.engine.fsdp import transformer_impl
from verl.workers.engine.base import EngineRegistry
import verl.utils.distributed as distributed
report = {
    "registered": "cpu" in PlatformRegistry.registered_names(),
    "auto_detects_cpu": PlatformRegistry.get("cpu")().is_platform_available(use_smi_check=True),
    "detected": _detect_platform_name(),
    "rollout_adapter": _ROLLOUT_REGISTRY.get(("hf_cpu", "async")),
    "rollout_replica": "hf_cpu" in RolloutReplicaRegistry._registry,
    "runtime_env_platform": main_ppo.get_ppo_ray_runtime_env()["env_vars"].get("VERL_PLATFORM"),
    "offload_pins": transformer_impl.CPUOffloadPolicy(pin_memory=True).pin_memory,
}
if report["detected"] == "cpu":
    from verl.utils.device import get_device_id, get_device_name, get_torch_device
    import torch.distributed as dist
    report["device"] = [get_device_name(), str(get_device_id()), get_platform().communication_backend_name()]
    report["engine"] = EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__
    report["free_memory"] = get_torch_device().mem_get_info()[0] > 0
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.initialize_global_process_group_ray()
    report["process_group"] = dist.get_backend()
    dist.destroy_process_group()
print("REPORT" + json.dumps(report))
"""


def probe_verl(platform: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    if platform is not None:
        env["VERL_PLATFORM"] = platform
    result = subprocess.run([sys.executable, "-c", _VERL_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


def test_cpu_backend_is_selected_by_verl_platform_only():
    report = probe_verl("cpu")
    assert report["detected"] == "cpu"
    assert report["device"] == ["cpu", "cpu", "gloo"]
    assert report["engine"] == "FSDPEngineWithLMHead"
    assert report["rollout_adapter"] == "skpo_verl.cpu.rollout.HFCPUServerAdapter"
    assert report["rollout_replica"] is True
    assert report["runtime_env_platform"] == "cpu"
    assert report["offload_pins"] is False
    assert report["free_memory"] is True
    assert report["process_group"] == "cpu:gloo"


def test_cpu_backend_never_auto_selected():
    report = probe_verl(None)
    assert report["registered"] is True
    assert report["auto_detects_cpu"] is False
    assert report["detected"] != "cpu"
    assert report["rollout_adapter"] is None
    assert report["rollout_replica"] is False
    assert report["runtime_env_platform"] is None
    assert report["offload_pins"] is True
