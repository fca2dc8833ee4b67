"""Registers the `skpo` estimator and policy loss in verl's registries (core_algos)."""

from skpo_verl.verl_version import require_verl_version

ESTIMATOR_NAME = "skpo"
LOSS_NAME = "skpo"


def register_estimator_and_loss(core_algos) -> None:
    """Hook run after `verl.trainer.ppo.core_algos` is imported."""
    require_verl_version("register skpo estimator/loss")
    from skpo_verl.training.estimator import compute_skpo_advantage
    from skpo_verl.training.loss import skpo_policy_loss

    core_algos.register_adv_est(ESTIMATOR_NAME)(compute_skpo_advantage)
    core_algos.register_policy_loss(LOSS_NAME)(skpo_policy_loss)
