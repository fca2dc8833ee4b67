"""verl's real `ppo_loss` (through our role shim) computes SKPO's asymmetric loss.

Micro-batch of three rows: row 0 upstream (prompt 2, response 2 tokens), rows 1-2
downstream (prompt 2 / response 3, prompt 1 / response 1). The driver's normalisers say the
mini-batch divides by 2 upstream rows and 10 downstream tokens (other micro-batches hold the
rest), so the normalisers are global, as in verl's token-mean.
"""

import math

import pytest
import torch
from tensordict import TensorDict

from skpo_verl.verl_config import compose_ppo_config

LN = math.log


def _nested(rows, dtype=torch.float32):
    return torch.nested.nested_tensor([torch.tensor(r, dtype=dtype) for r in rows], layout=torch.jagged)


LOSS = {
    "upstream_weight": 0.5,
    "downstream_weight": 0.5,
    "upstream_clip": 0.2,
    "downstream_clip_low": 0.2,
    "downstream_clip_high": 0.28,
    "aggregation": "per_role",
}
NORMALISERS = {"upstream_rows": 2.0, "upstream_tokens": 5.0, "downstream_tokens": 10.0}


def _micro_batch(**shipped):
    """The micro-batch, with the driver's entries `shipped` (default: both, as the driver sends them)."""
    from verl.utils import tensordict_utils as tu

    prompt_lens, response_lens = [2, 2, 1], [2, 3, 1]
    data = TensorDict(
        {
            "prompts": _nested([[5] * p for p in prompt_lens], torch.int64),
            "responses": _nested([[6] * r for r in response_lens], torch.int64),
            "response_mask": _nested([[1] * r for r in response_lens], torch.int64),
            "old_log_probs": _nested([[0.0, 0.0], [0.0, 0.0, 0.0], [0.0]]),
            "advantages": _nested([[1.0, 1.0], [-0.5, -0.5, -0.5], [2.0]]),
            "skpo_upstream_mask": torch.tensor([1, 0, 0]),
        },
        batch_size=[3],
    )
    tu.assign_non_tensor(
        data,
        dp_size=1,
        batch_num_tokens=6,
        global_batch_size=3,
    )
    tu.assign_non_tensor(data, **(shipped or {"skpo_loss": LOSS, "skpo_loss_normalisers": NORMALISERS}))
    response_log_probs = [[LN(1.5), LN(0.5)], [LN(2.0), LN(1.0), LN(0.9)], [LN(0.7)]]
    flat, response_positions = [], []
    for p, responses in zip(prompt_lens, response_log_probs):
        start = len(flat)
        flat.extend([0.0] * (p + len(responses)))
        for k, value in enumerate(responses):
            # verl left-shifts model output by one token: response token k sits at p - 1 + k.
            flat[start + p - 1 + k] = value
            response_positions.append(start + p - 1 + k)
    log_probs = torch.tensor(flat, requires_grad=True)
    return data, log_probs, response_positions


@pytest.fixture(scope="module")
def actor_config():
    from verl.utils.config import omega_conf_to_dataclass

    config = compose_ppo_config(
        ["actor_rollout_ref.actor.policy_loss.loss_mode=skpo", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]
    )
    return omega_conf_to_dataclass(config.actor_rollout_ref.actor)


def test_verl_ppo_loss_returns_the_hand_computed_skpo_loss_for_both_roles(actor_config):
    from verl.workers import engine_workers
    from verl.workers.utils import losses

    assert engine_workers.ppo_loss.__wrapped__ is losses.ppo_loss
    data, log_probs, _ = _micro_batch()
    loss, _metrics = engine_workers.ppo_loss(actor_config, {"log_probs": log_probs}, data)

    # Upstream row, A=+1, r=[1.5, 0.5]: -min(r A, clip(r, .8, 1.2) A) = [-1.2, -0.5], seq mean -0.85;
    # weight 0.5 over 2 upstream rows: 0.5 * -0.85 / 2 = -0.2125.
    upstream = 0.5 * (-0.85) / 2
    # Downstream, -sg(clip(r, .8, 1.28)) A log pi, r = exp(log pi) since old = 0:
    # row 1 (A=-0.5): 0.5*1.28*ln2 + 0 + 0.5*0.9*ln0.9 ; row 2 (A=2): -0.8*2*ln0.7.
    downstream_sum = 0.5 * 1.28 * LN(2.0) + 0.5 * 0.9 * LN(0.9) - 0.8 * 2 * LN(0.7)
    downstream = 0.5 * downstream_sum / 10
    assert loss.item() == pytest.approx(upstream + downstream, abs=1e-6)
    assert loss.item() == pytest.approx(-0.164155, abs=1e-5)


def test_gradients_reach_only_response_log_probs_with_the_skpo_weights(actor_config):
    from verl.workers import engine_workers

    data, log_probs, response_positions = _micro_batch()
    loss, _ = engine_workers.ppo_loss(actor_config, {"log_probs": log_probs}, data)
    loss.backward()
    grad = log_probs.grad
    # Upstream: token 0 is clipped (r=1.5 > 1.2, A>0) → 0; token 1 unclipped: d(-r A)/dlogp = -0.5,
    # times seq-mean 1/2, weight 0.5, 1/2 upstream rows → -0.0625.
    # Downstream: -w A * 0.5 / 10 with w = clipped ratio (no gradient through w).
    expected = [0.0, -0.0625, 1.28 * 0.5 * 0.05, 1.0 * 0.5 * 0.05, 0.9 * 0.5 * 0.05, -0.8 * 2 * 0.05]
    assert grad[response_positions].tolist() == pytest.approx(expected, abs=1e-6)
    prompt_positions = [i for i in range(len(grad)) if i not in response_positions]
    assert grad[prompt_positions].abs().max().item() == 0.0


def test_the_skpo_loss_refuses_to_run_without_the_role_shim(actor_config):
    from verl.workers.utils import losses

    data, log_probs, _ = _micro_batch()
    with pytest.raises(RuntimeError, match="outside skpo_verl's ppo_loss shim"):
        losses.ppo_loss(actor_config, {"log_probs": log_probs}, data)


def test_step_role_counts_count_upstream_rows_with_tokens_and_each_roles_tokens():
    from skpo_verl.training.loss import step_role_counts

    upstream = torch.tensor([1, 0, 0, 1])
    # Row 3 is a padding copy of an upstream row: no response tokens, so it is not counted.
    mask = _nested([[1, 1], [1, 1, 1], [1], [0]], torch.int64)
    expected = {"upstream_rows": 1, "upstream_tokens": 2, "downstream_tokens": 4}
    assert step_role_counts(upstream, mask) == expected
    assert step_role_counts(upstream, mask.to_padded_tensor(0)) == expected


@pytest.mark.parametrize("missing", ["skpo_loss", "skpo_loss_normalisers"])
def test_a_micro_batch_with_roles_but_without_a_driver_entry_fails_naming_it(actor_config, missing):
    from verl.workers import engine_workers

    shipped = {"skpo_loss": LOSS, "skpo_loss_normalisers": NORMALISERS}
    del shipped[missing]
    data, log_probs, _ = _micro_batch(**shipped)
    with pytest.raises(RuntimeError, match=f"no '{missing}' entry"):
        engine_workers.ppo_loss(actor_config, {"log_probs": log_probs}, data)


@pytest.mark.parametrize(
    "entry, field",
    [("skpo_loss", "upstream_weight"), ("skpo_loss", "aggregation"), ("skpo_loss_normalisers", "upstream_rows")],
)
def test_a_driver_entry_missing_a_field_fails_naming_the_field_instead_of_a_default(actor_config, entry, field):
    from verl.workers import engine_workers

    shipped = {"skpo_loss": dict(LOSS), "skpo_loss_normalisers": dict(NORMALISERS)}
    del shipped[entry][field]
    data, log_probs, _ = _micro_batch(**shipped)
    with pytest.raises(RuntimeError, match=rf"'{entry}' entry lacks \['{field}'\]"):
        engine_workers.ppo_loss(actor_config, {"log_probs": log_probs}, data)
