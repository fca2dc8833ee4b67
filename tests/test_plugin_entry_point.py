"""The installed entry point registers SKPO in a fresh process that only imports verl."""

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import verl
loaded = "skpo_verl.plugin" in sys.modules
heavy = sorted(m for m in ("verl.trainer.ppo.core_algos", "verl.experimental.agent_loop.agent_loop",
                           "verl.trainer.ppo.v1.trainer_base") if m in sys.modules)
from verl.trainer.ppo import core_algos
from skpo_verl.hooks import failed_shims
print(json.dumps({
    "plugin_loaded": loaded,
    "heavy_modules_after_import_verl": heavy,
    "estimator": getattr(core_algos.ADV_ESTIMATOR_REGISTRY.get("skpo"), "__module__", None),
    "loss": getattr(core_algos.POLICY_LOSS_REGISTRY.get("skpo"), "__module__", None),
    "failed": failed_shims(),
}))
"""


def _probe(**env):
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_verl_registers_skpo_estimator_and_loss_through_the_entry_point():
    found = _probe()
    assert found == {
        "plugin_loaded": True,
        "heavy_modules_after_import_verl": [],
        "estimator": "skpo_verl.training.estimator",
        "loss": "skpo_verl.training.loss",
        "failed": {},
    }


def test_without_the_entry_point_nothing_is_registered():
    found = _probe(VERL_USE_EXTERNAL_PLUGINS="none")
    assert found["plugin_loaded"] is False
    assert found["estimator"] is None and found["loss"] is None
