"""Compose verl 0.9.1's own trainer config (`ppo_trainer.yaml`) with Hydra overrides.

Lets users and tests check a launcher's overrides offline, exactly as
`python -m verl.trainer.main_ppo` would compose them:

    python -m skpo_verl.verl_config algorithm.adv_estimator=skpo ...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def verl_config_dir() -> str:
    import verl.trainer

    return os.path.join(os.path.dirname(verl.trainer.__file__), "config")


def compose_ppo_config(overrides: Sequence[str] = (), config_name: str = "ppo_trainer"):
    """The DictConfig main_ppo would see for these overrides (no resolution of ${oc.env})."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> int:
    from skpo_verl.validation import SKPOConfigError, is_skpo_run, validate_config

    config = compose_ppo_config(sys.argv[1:] if argv is None else argv)
    if not is_skpo_run(config):
        print("algorithm.adv_estimator is not skpo: nothing SKPO-specific to check.")
        return 0
    try:
        skpo = validate_config(config)
    except SKPOConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"SKPO config OK: {skpo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
