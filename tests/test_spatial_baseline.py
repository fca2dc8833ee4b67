"""The spatial upstream baseline (`algorithm.skpo.upstream_baseline=spatial`, ours; docs/algorithm.md,
"Spatial upstream baseline (ours)"): the start-up refusals.
"""

import pytest

from skpo_verl.config import SKPOConfig
from skpo_verl.verl_config import compose_ppo_config

SPATIAL = SKPOConfig(upstream_baseline="spatial")

# --- start-up refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"upstream_baseline": "spatiall"},
            "algorithm.skpo.upstream_baseline='spatiall' is not one of tracker, spatial",
        ),
        ({"num_splits": 2}, "upstream_baseline=spatial with num_splits=2: each later stage continues"),
        ({"upstream_reward": "own_completion"}, "own_completion credits a segment with one completion"),
        ({"first_visit_upstream": "zero"}, "the spatial baseline does not read the tracker"),
        ({"num_candidates": 1}, "num_candidates=1: it keeps two different candidates per prompt"),
    ],
)
def test_settings_that_do_not_fit_the_spatial_baseline_are_refused_naming_the_key(settings, message):
    with pytest.raises(ValueError) as error:
        SKPOConfig(**{"upstream_baseline": "spatial", **settings})
    assert message in str(error.value)


def test_the_spatial_baseline_accepts_the_other_settings():
    config = SKPOConfig(
        upstream_baseline="spatial", upstream_reward="first_answer", upstream_norm="rms", num_candidates=2
    )
    assert (config.upstream_baseline, config.selection, config.conditioning) == ("spatial", "median", "skip")
    assert SKPOConfig().upstream_baseline == "tracker"  # the paper


def test_start_up_refuses_an_odd_group_naming_rollout_n():
    from skpo_verl.validation import SKPOConfigError, validate_config

    skpo = [
        "algorithm.adv_estimator=skpo",
        "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
        "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
        "actor_rollout_ref.rollout.prompt_length=1024",
        "+algorithm.skpo.upstream_baseline=spatial",
    ]
    with pytest.raises(SKPOConfigError) as error:
        validate_config(compose_ppo_config([*skpo, "actor_rollout_ref.rollout.n=7"]))
    assert "upstream_baseline=spatial with actor_rollout_ref.rollout.n=7" in str(error.value)
    assert "G must be even. Set rollout.n to an even number" in str(error.value)
    assert validate_config(compose_ppo_config([*skpo, "actor_rollout_ref.rollout.n=8"])) == SPATIAL
