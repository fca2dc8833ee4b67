"""Start-up checks for an SKPO run: each error names the key and the fix.

Run by the V1 trainer shim before verl builds anything, so a wrong setting fails in
seconds instead of after model loading, or worse, trains something that is not SKPO.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skpo_verl.config import SKPOConfig, skpo_config_from_algorithm
from skpo_verl.hooks import failed_shims
from skpo_verl.rollout.lengths import SKPOLengthError, check_lengths

ESTIMATOR = "skpo"
LOSS_MODE = "skpo"
AGENT_LOOP = "skpo_agent"


class SKPOConfigError(ValueError):
    pass


def is_skpo_run(config: Any) -> bool:
    return _select(config, "algorithm.adv_estimator") == ESTIMATOR


def validate_config(config: Any) -> SKPOConfig:
    """Check a full verl config for an SKPO run; returns the parsed `algorithm.skpo` section."""
    problems = list(_config_problems(config))
    if problems:
        raise SKPOConfigError("SKPO cannot start:\n  - " + "\n  - ".join(problems))
    return skpo_config_from_algorithm(config.algorithm)


def check_not_half_configured(config: Any) -> None:
    """A non-SKPO run must not use SKPO's loss or agent loop alone (it would silently train something else)."""
    if is_skpo_run(config):
        return
    if _select(config, "actor_rollout_ref.actor.policy_loss.loss_mode") == LOSS_MODE:
        raise SKPOConfigError(
            "actor_rollout_ref.actor.policy_loss.loss_mode=skpo needs algorithm.adv_estimator=skpo "
            f"(it is {_select(config, 'algorithm.adv_estimator')!r}): set both, or neither."
        )
    if _select(config, "actor_rollout_ref.rollout.agent.default_agent_loop") == AGENT_LOOP:
        raise SKPOConfigError(
            "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent needs algorithm.adv_estimator=skpo "
            f"(it is {_select(config, 'algorithm.adv_estimator')!r}): set both, or neither."
        )


def _config_problems(config: Any) -> Iterable[str]:
    failures = failed_shims()
    for shim, error in failures.items():
        yield f"skpo_verl shim {shim} failed to install ({error}); SKPO would not run as specified."
    try:
        skpo = skpo_config_from_algorithm(config.algorithm)
    except (ValueError, TypeError) as error:
        yield str(error)
    else:
        try:
            check_lengths(config)
        except SKPOLengthError as error:
            yield from error.problems
        try:
            skpo.check_group_size(int(_select(config, "actor_rollout_ref.rollout.n") or 0))
        except ValueError as error:
            yield str(error)
        if skpo.segment_judge is not None:
            from skpo_verl.training.segment_judge import load_segment_judge

            try:
                load_segment_judge(skpo.segment_judge)
            except ValueError as error:
                yield str(error)
        if skpo.tracker.initial_values is not None:
            from skpo_verl.training.initial_values import InitialValuesError, read_initial_values

            try:
                read_initial_values(skpo.tracker.initial_values)
            except InitialValuesError as error:
                yield str(error)
    if _select(config, "trainer.use_v1") is False:
        yield "trainer.use_v1=false: SKPO supports verl's V1 trainer only. Set trainer.use_v1=true (the default)."
    mode = _select(config, "trainer.v1.trainer_mode")
    if mode not in (None, "sync"):
        yield (
            f"trainer.v1.trainer_mode={mode}: SKPO is implemented and tested for sync mode. "
            "Set trainer.v1.trainer_mode=sync."
        )
    loss_mode = _select(config, "actor_rollout_ref.actor.policy_loss.loss_mode")
    if loss_mode != LOSS_MODE:
        yield f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}: set it to skpo (SKPO's asymmetric loss)."
    agent_loop = _select(config, "actor_rollout_ref.rollout.agent.default_agent_loop")
    if agent_loop != AGENT_LOOP:
        yield (
            f"actor_rollout_ref.rollout.agent.default_agent_loop={agent_loop}: set it to skpo_agent "
            "(SKPO's skip-connected rollout produces the upstream and downstream rows)."
        )
    n = _select(config, "actor_rollout_ref.rollout.n")
    if n is None or int(n) < 2:
        yield f"actor_rollout_ref.rollout.n={n}: SKPO needs a group of at least 2 (the paper uses G=8)."
    candidates = _select(config, "algorithm.skpo.num_candidates")
    if n is not None and candidates is not None and int(candidates) > int(n):
        yield (
            f"algorithm.skpo.num_candidates={candidates} exceeds actor_rollout_ref.rollout.n={n}: at most G candidates "
            "per prompt. Lower it, or leave it null (= G, the paper)."
        )
    if _select(config, "algorithm.use_kl_in_reward"):
        yield "algorithm.use_kl_in_reward=true: SKPO uses no KL penalty (beta=0). Set algorithm.use_kl_in_reward=false."
    if _select(config, "actor_rollout_ref.actor.use_kl_loss"):
        yield (
            "actor_rollout_ref.actor.use_kl_loss=true: SKPO uses no KL loss. "
            "Set actor_rollout_ref.actor.use_kl_loss=false."
        )
    entropy = _select(config, "actor_rollout_ref.actor.entropy_coeff")
    if entropy:
        yield f"actor_rollout_ref.actor.entropy_coeff={entropy}: SKPO has no entropy bonus. Set it to 0."
    if _select(config, "algorithm.filter_groups.enable"):
        yield (
            "algorithm.filter_groups.enable=true: DAPO group filtering takes the reward std over all rows of a "
            "uid, upstream included, and would drop SKPO rows. Set algorithm.filter_groups.enable=false."
        )
    correction = _select(config, "algorithm.rollout_correction") or {}
    if any(_get(correction, key) for key in ("rollout_is", "rollout_rs", "bypass_mode")):
        yield (
            "algorithm.rollout_correction is enabled: SKPO's advantage step and loss do not apply rollout "
            "correction. Leave algorithm.rollout_correction.rollout_is/rollout_rs null and bypass_mode=false."
        )
    if _select(config, "critic.enable"):
        yield "critic.enable=true: SKPO is critic-free. Set critic.enable=false."
    if _select(config, "algorithm.norm_adv_by_std_in_grpo") is False:
        yield (
            "algorithm.norm_adv_by_std_in_grpo=false: SKPO does not read it (its downstream advantage divides by the "
            "group std, Eq. 5). Leave it true; algorithm.skpo.downstream_norm chooses SKPO's normalisation."
        )


def _select(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = _get(node, part)
        if node is None:
            return None
    return node


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    if hasattr(node, "get"):
        try:
            return node.get(key, None)
        except Exception:  # noqa: BLE001 - OmegaConf raises on missing struct keys in some modes
            return None
    return getattr(node, key, None)


def prompt_keys_from_extra_info(extra_infos: Iterable[Any], files: Any = None) -> list:
    """Each row's stable prompt key (`extra_info.index`); refuses missing or duplicated ones.

    verl turns a missing index into 0 (rl_dataset.py l.402), which would merge every prompt
    into one tracker entry, so SKPO checks the dataset itself.
    """
    keys, missing, seen, duplicated = [], [], {}, []
    for row, info in enumerate(extra_infos):
        key = info.get("index") if isinstance(info, dict) else None
        if key is None:
            missing.append(row)
        elif key in seen:
            duplicated.append((seen[key], row, key))
        else:
            seen[key] = row
        keys.append(key)
    where = f" in {files}" if files is not None else ""
    if missing:
        raise SKPOConfigError(
            f"{len(missing)} training row(s){where} have no extra_info.index (first rows: {missing[:5]}). SKPO keys "
            "its per-prompt trackers on it: give every row a unique extra_info.index (data_prep/ scripts do)."
        )
    if duplicated:
        first = ", ".join(f"rows {a} and {b} share index {k!r}" for a, b, k in duplicated[:3])
        raise SKPOConfigError(
            f"{len(duplicated)} training row(s){where} repeat an extra_info.index ({first}). Make extra_info.index "
            "unique per problem (deduplicate the problems, or renumber)."
        )
    return keys
