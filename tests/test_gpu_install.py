"""The documented GPU install provides the attention the GPU launchers load.

verl 0.9.1 builds the actor's (and reference's) Hugging Face config with
`actor_rollout_ref.model.override_config.attn_implementation`, flash_attention_2 when unset
(`HFModelConfig.__post_init__`, verl/workers/config/model.py). `skpo-verl[gpu]` is verl's vLLM
extra, which has no flash-attn, so the GPU install commands in the README and
docs/reproduction.md (between `<!-- gpu-install -->` markers) must install it: these tests fail
when flash-attn is dropped from them, or when the launchers' attention changes and the installs do not.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from test_launchers import LAUNCHERS, REPO, compose_verl, launcher_overrides

# The pip package each attention implementation (transformers' names) needs beyond torch.
ATTENTION_PACKAGE = {"flash_attention_2": "flash-attn", "sdpa": None, "eager": None}
GPU_INSTALL_DOCS = ("README.md", "docs/reproduction.md")
SET_SDPA = "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"


@pytest.fixture(scope="module")
def stub_model(tmp_path_factory) -> str:
    """A model directory verl's HFModelConfig loads offline: config.json and the tiny tokenizer, no weights."""
    from transformers import Qwen2Config

    from skpo_verl.demo.tiny_model import build_tokenizer

    directory = str(tmp_path_factory.mktemp("stub_model"))
    build_tokenizer(directory)
    Qwen2Config(architectures=["Qwen2ForCausalLM"]).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def launcher_attention(stub_model) -> dict[str, str]:
    return {name: loaded_attention(launcher_overrides(name), stub_model) for name in LAUNCHERS}


def loaded_attention(overrides: list[str], model_dir: str) -> str:
    """The attention verl resolves for actor_rollout_ref.model, built as its actor worker builds it
    (`omega_conf_to_dataclass(config.model)`, workers/engine_workers.py), with the model at `model_dir`."""
    from verl.utils.config import omega_conf_to_dataclass

    config = compose_verl([*overrides, f"actor_rollout_ref.model.path={model_dir}"])
    return omega_conf_to_dataclass(config.actor_rollout_ref.model).hf_config._attn_implementation


def gpu_install_commands(doc: str) -> list[list[str]]:
    """The arguments of each `pip install` in the doc's GPU install block."""
    with open(os.path.join(REPO, doc)) as f:
        block = re.search(r"<!-- gpu-install -->\n```bash\n(.*?)```\n<!-- /gpu-install -->", f.read(), re.S)
    assert block, f"{doc} has no ```bash block between <!-- gpu-install --> and <!-- /gpu-install -->"
    commands = []
    for line in block.group(1).splitlines():
        for command in line.split("&&"):
            words = shlex.split(command, comments=True)
            if words[:2] == ["pip", "install"]:
                commands.append(words[2:])
    return commands


def named_packages(arguments: list[str]) -> dict[str, Requirement]:
    """The requirements among pip arguments (options and local paths such as `.[gpu]` are not)."""
    requirements = {}
    for argument in arguments:
        try:
            requirement = Requirement(argument)
        except InvalidRequirement:
            continue
        requirements[requirement.name] = requirement
    return requirements


def test_attention_is_verls_default_unless_the_models_override_config_names_one(stub_model):
    assert loaded_attention([], stub_model) == "flash_attention_2"
    assert loaded_attention([SET_SDPA], stub_model) == "sdpa"
    assert loaded_attention(launcher_overrides("cpu_tiny_skpo.sh", WORKDIR="/w"), stub_model) == "eager"


def test_gpu_launchers_keep_verls_flash_attention_2(launcher_attention):
    # The README's GPU install says so.
    assert launcher_attention == dict.fromkeys(LAUNCHERS, "flash_attention_2")


@pytest.mark.parametrize("doc", GPU_INSTALL_DOCS)
def test_gpu_install_installs_exactly_the_attention_packages_the_gpu_launchers_load(doc, launcher_attention):
    unknown = set(launcher_attention.values()) - set(ATTENTION_PACKAGE)
    assert not unknown, f"name the pip package attention {unknown} needs in ATTENTION_PACKAGE and in {doc}"
    needed = {ATTENTION_PACKAGE[attention] for attention in launcher_attention.values()} - {None}
    attention_packages = set(ATTENTION_PACKAGE.values()) - {None}
    installed = {name for arguments in gpu_install_commands(doc) for name in named_packages(arguments)}
    loaded = set(launcher_attention.values())
    assert installed & attention_packages == needed, (
        f"the GPU launchers load {loaded}, so {doc}'s GPU install must install {sorted(needed)} "
        f"and no other of {sorted(attention_packages)}"
    )


@pytest.mark.parametrize("doc", GPU_INSTALL_DOCS)
def test_flash_attn_is_installed_after_verls_torch_without_build_isolation_at_verls_pin(doc):
    commands = gpu_install_commands(doc)
    gpu_extra = next(i for i, arguments in enumerate(commands) if any("[gpu]" in a for a in arguments))
    flash_attn = next(i for i, arguments in enumerate(commands) if "flash-attn" in named_packages(arguments))
    # flash-attn's build imports torch: it needs the torch the gpu extra installs, outside pip's isolated build.
    assert gpu_extra < flash_attn and "--no-build-isolation" in commands[flash_attn]
    verl_pins = [Requirement(line) for line in importlib.metadata.requires("verl")]
    # verl 0.9.1's flash-attn-cu130torch211 extra, for the torch 2.11.0 its vllm extra pins.
    (verl_pin,) = {str(pin.specifier) for pin in verl_pins if pin.name == "flash-attn"}
    assert str(named_packages(commands[flash_attn])["flash-attn"].specifier) == verl_pin == "==2.8.3"
