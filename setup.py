"""skpo-verl: SKPO (Skip-Connected Policy Optimization) as a plugin for verl 0.9.1.

`patches/` holds the version-pinned verl shims; it is installed as `skpo_verl.patches`
so the repository layout stays as designed while the code imports as one package.
"""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

# The one pin, shared with the run-time gate (skpo_verl/verl_version.py imports only the stdlib).
SUPPORTED_VERL = runpy.run_path(str(Path(__file__).parent / "skpo_verl" / "verl_version.py"))["SUPPORTED_VERL_VERSION"]

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
        "test": ["pytest", "pytest-asyncio", "pytest-timeout", "ruff==0.17.6"],
        "gpu": [f"verl[vllm]=={SUPPORTED_VERL}"],
        "sglang": [f"verl[sglang]=={SUPPORTED_VERL}"],
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
