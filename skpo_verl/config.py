"""SKPO's configuration: the `algorithm.skpo` section, with the paper's numbers as defaults.

Every default is written once, here. Users override any of them with Hydra, e.g.
`+algorithm.skpo.selection=extreme` (the `+` is needed because verl's own config schema
does not know the `skpo` section). `docs/config.md` documents each key.

This module imports nothing from verl: the driver, the agent loop and the loss all read
the same dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skpo_verl.core.selection import SELECTION_RULES
from skpo_verl.core.split import SPLIT_RULES

CONDITIONING_MODES = ("skip", "continual", "unconditional")
SKIP_FORMATS = ("tokens", "chat")
UPSTREAM_REWARDS = ("mc_mean", "own_completion", "first_answer")
DOWNSTREAM_NORMS = ("group", "batch")
DIVERGENCE_MEASURES = ("steps", "logprob")
FIRST_VISIT_RULES = ("initial_value", "zero")
UPSTREAM_NORMS = ("batch", "rms")
UPSTREAM_BASELINES = ("tracker", "spatial")
UPSTREAM_ADVANTAGES = ("paper", "oracle", "random")
LOSS_AGGREGATIONS = ("per_role", "token_mean")


@dataclass(frozen=True)
class TrackerConfig:
    """Per-prompt value and length trackers (docs/algorithm.md, Trackers; SPO's Beta/EMA tracker)."""

    rho_min: float = 0.875
    rho_max: float = 0.96
    # How far the policy moved since it last acted on a prompt (D in rho = 2^(-D/D_half)).
    # "steps": training steps since the prompt was last seen (SKPO appendix, half-life 8.0
    # steps; free). "logprob": token-mean |log pi_then - log pi_now| over the prompt's last
    # kept segment re-scored by the current actor (SPO's recipe, half-life 0.06; one extra
    # actor forward pass over the returning prompts' segments each step). docs/config.md.
    divergence: str = "steps"
    half_life_steps: float = 8.0
    half_life_logprob: float = 0.06
    # SKPO starts every prompt at V = 0 in reward space (0.5 in tracker space) and lets the
    # first observation overwrite it: no offline n0 warm-up.
    initial_value: float = 0.0
    initial_length: float = 1024.0
    # SPO's offline warm start (ours to offer; not the SKPO paper's): a values file written by
    # `python -m skpo_verl.training.offline_values` with each training prompt's estimated success rate in
    # [0, 1]. Each prompt's value tracker starts there with N0 = 1 / (1 - rho_min) observations.
    # None (the paper): every prompt starts at initial_value with zero counts. docs/config.md.
    initial_values: str | None = None


@dataclass(frozen=True)
class LossConfig:
    """The asymmetric loss (docs/algorithm.md, Loss)."""

    upstream_weight: float = 0.5
    downstream_weight: float = 0.5
    upstream_clip: float = 0.2
    downstream_clip_low: float = 0.2
    downstream_clip_high: float = 0.28
    # How the two terms are averaged (docs/algorithm.md, Loss). "per_role" (Eq. 6, the default): the
    # upstream term is a per-sequence mean, then a mean over the upstream rows; the downstream term a
    # token-mean over the downstream tokens; each then weighted. An upstream token then weighs about
    # G x |o| / |s| times a downstream one. "token_mean" (ours, Appendix C read literally: "gradients
    # from all tokens contribute equally"): one token-mean over every response token of both roles,
    # each token's loss times its role's weight, so with equal weights every token weighs the same.
    aggregation: str = "per_role"


@dataclass(frozen=True)
class SKPOConfig:
    """The `algorithm.skpo` section. The group size G is verl's `actor_rollout_ref.rollout.n`."""

    # Split length t ~ U[split_low * L_q, split_high * L_q]; "fixed" alternates the two ends by step.
    split_rule: str = "adaptive"
    split_low: float = 1.0 / 6.0
    split_high: float = 0.5
    # Kept segment: "median" = candidate whose mean NLL is closest to the median;
    # "extreme" alternates the min- and max-NLL candidate by step (Table 2 ablation).
    selection: str = "median"
    # Downstream input: "skip" = [s, q]; "continual" = q then s as a hard prefix;
    # "unconditional" = q alone.
    conditioning: str = "skip"
    # How [s, q] is built in skip mode: "tokens" = segment tokens then the original prompt
    # tokens (the paper); "chat" = the decoded segment inside the user turn, before the problem.
    skip_format: str = "tokens"
    # Upstream reward R_I (docs/algorithm.md, Rewards): "mc_mean" = mean of the G downstream
    # rewards (the paper); "own_completion" = the paper's "w/o MC" ablation: the kept candidate
    # is generated on to its end (q -> s -> rest) and that completion's own outcome is R_I;
    # "first_answer" = the reward of the first of the G answers from [s, q] (one MC sample at
    # no extra generation; not the paper's ablation).
    upstream_reward: str = "mc_mean"
    # Downstream advantage denominator: "group" = Eq. 5, (R - mean_g) / (std_g + eps);
    # "batch" = Appendix C's "batch statistics", (R - mean_g) / (std over the batch's centred
    # downstream rewards + eps).
    downstream_norm: str = "group"
    # Upstream advantage of a prompt's first visit (its tracker has no observation yet, online or
    # offline): "initial_value" = R_I - tracker.initial_value, normalised with the batch (the paper);
    # "zero" = A = 0, and the batch normalisation runs over the other upstream rows only (ours: an
    # intervention on the dip of docs/algorithm.md, "When SKPO learns slower than GRPO").
    first_visit_upstream: str = "initial_value"
    # Upstream advantage normalisation over the batch's upstream rows: "batch" = (a - mean_B a) /
    # (std_B a + eps), a = R_I - V_prev (SPO, the paper); "rms" = a / (sqrt(mean_B a^2) + eps), not
    # centred, so each row keeps the sign of its own R_I - V_prev (ours, the same intervention).
    upstream_norm: str = "batch"
    # The baseline of the upstream advantage a = R_I - b: "tracker" = b = V_prev(q), the prompt's tracked value
    # from before this step (SPO, the paper); "spatial" (ours; docs/algorithm.md, "Spatial upstream baseline") =
    # the rollout keeps two segments s_a, s_b, each answered by G/2 of the G answers, and b = the mean of the
    # prompt's two R_I, so a = +-(R_I(s_a) - R_I(s_b)) / 2 compares the segments, not the prompt's difficulty.
    # Needs an even G and num_candidates >= 2; refused with num_splits > 1, own_completion and
    # first_visit_upstream=zero.
    upstream_baseline: str = "tracker"
    # Diagnostics, never the default (docs/algorithm.md, "Why SKPO loses on the CPU tasks"): what the upstream
    # term gives with a perfect signal and costs as pure noise. "paper": a = R_I - V_prev(q). "oracle": a = +1
    # if the kept segment's completed steps are all right, -1 otherwise, as `segment_judge` says. "random": a =
    # +1 or -1 at random (seeded by `seed` and the step). Either is then normalised as the paper's a (upstream_norm,
    # first_visit_upstream); the trackers still learn R_I. Both need `segment_judge`.
    upstream_advantage: str = "paper"
    # A task's judge of a kept segment, "module:function" with function(prompt: str, segment: str) -> bool (True:
    # every completed step right). With it every step logs how often the paper's upstream advantage has the
    # judge's sign (skpo/upstream/oracle_agreement_*). The chain-sum tasks': skpo_verl.demo.task:segment_is_clean.
    # None (the default): no task judge; oracle and random refused.
    segment_judge: str | None = None
    adv_eps: float = 1e-6
    # When the model's context cannot hold the worst-case [s, q] plus a full answer (e.g.
    # Qwen2.5-Math-7B's 4096 positions with the paper's 1024/3072 budgets), SKPO refuses to
    # start. True instead caps each answer at the context left after its [s, q], said at
    # start-up with the smallest answer budget it implies (docs/rollout.md, Lengths).
    clamp_answers_to_context: bool = False
    # Backstop on one prompt's rollout: candidates not done, or a kept segment not shared,
    # after this many seconds fail the prompt instead of holding its G sessions.
    rollout_timeout_s: float = 1800.0
    # Candidates sampled from q per prompt (Rollout step 2); None = G (the paper). Fewer cut the
    # candidate tokens decoded (docs/algorithm.md, Cost); start-up checks 1 <= value <= G.
    num_candidates: int | None = None
    # Kept segments per prompt (ours, beyond the paper; docs/algorithm.md, "Multi-split"). 1 = the
    # paper's single early split. K >= 2: stage k's candidates continue [q, s_1..s_{k-1}], its answers
    # come from [s_1..s_k, q], and its upstream row (q, s_1..s_{k-1} -> s_k) gets its own MC reward and
    # value tracker. Needs conditioning=skip and an MC upstream reward (mc_mean or first_answer).
    num_splits: int = 1
    # SPO prioritized prompt sampling, w(q) ∝ sqrt(V(1-V)) + priority_eps; on in the paper
    # (Appendix C). It makes the train dataloader load in the driver (no worker prefetch) so
    # each draw sees the tracker as of the previous step (docs/algorithm.md, Sampling).
    prioritized_sampling: bool = True
    priority_eps: float = 0.05
    seed: int = 0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        _check_choice("split_rule", self.split_rule, SPLIT_RULES)
        _check_choice("selection", self.selection, SELECTION_RULES)
        _check_choice("conditioning", self.conditioning, CONDITIONING_MODES)
        _check_choice("skip_format", self.skip_format, SKIP_FORMATS)
        if self.upstream_reward == "single":
            raise ValueError(
                'algorithm.skpo.upstream_reward=single was renamed: use own_completion for the paper\'s "w/o MC" '
                "ablation (the kept candidate's own completion is judged), or first_answer for the former behaviour "
                "(the reward of the first answer from [s, q])."
            )
        _check_choice("upstream_reward", self.upstream_reward, UPSTREAM_REWARDS)
        _check_choice("downstream_norm", self.downstream_norm, DOWNSTREAM_NORMS)
        _check_choice("tracker.divergence", self.tracker.divergence, DIVERGENCE_MEASURES)
        _check_choice("first_visit_upstream", self.first_visit_upstream, FIRST_VISIT_RULES)
        _check_choice("upstream_norm", self.upstream_norm, UPSTREAM_NORMS)
        _check_choice("loss.aggregation", self.loss.aggregation, LOSS_AGGREGATIONS)
        if not 0.0 < self.split_low <= self.split_high:
            raise ValueError(
                f"algorithm.skpo.split_low={self.split_low} and split_high={self.split_high} must satisfy "
                "0 < split_low <= split_high (the paper uses 1/6 and 1/2)."
            )
        if not 0.0 < self.tracker.rho_min <= self.tracker.rho_max <= 1.0:
            raise ValueError(
                f"algorithm.skpo.tracker.rho_min={self.tracker.rho_min} and rho_max={self.tracker.rho_max} "
                "must satisfy 0 < rho_min <= rho_max <= 1 (the paper uses 0.875 and 0.96)."
            )
        for key in ("half_life_steps", "half_life_logprob"):
            if getattr(self.tracker, key) <= 0:
                raise ValueError(f"algorithm.skpo.tracker.{key}={getattr(self.tracker, key)} must be > 0.")
        if not -1.0 <= self.tracker.initial_value <= 1.0:
            raise ValueError(
                f"algorithm.skpo.tracker.initial_value={self.tracker.initial_value} is a reward in [-1, 1]."
            )
        if self.tracker.initial_values is not None:
            if not isinstance(self.tracker.initial_values, str) or not self.tracker.initial_values:
                raise ValueError(
                    f"algorithm.skpo.tracker.initial_values={self.tracker.initial_values!r} must be the path of a "
                    "values file (python -m skpo_verl.training.offline_values), or null."
                )
            if self.tracker.rho_min >= 1.0:
                raise ValueError(
                    "algorithm.skpo.tracker.initial_values needs tracker.rho_min < 1: loaded values start with "
                    f"N0 = 1 / (1 - rho_min) observations, infinite at rho_min={self.tracker.rho_min}."
                )
        if self.tracker.initial_length < 1:
            raise ValueError(f"algorithm.skpo.tracker.initial_length={self.tracker.initial_length} must be >= 1.")
        if self.loss.upstream_weight < 0 or self.loss.downstream_weight < 0:
            raise ValueError("algorithm.skpo.loss.upstream_weight and downstream_weight must be >= 0.")
        if self.rollout_timeout_s <= 0:
            raise ValueError(f"algorithm.skpo.rollout_timeout_s={self.rollout_timeout_s} must be > 0 (seconds).")
        if self.num_candidates is not None and self.num_candidates < 1:
            raise ValueError(f"algorithm.skpo.num_candidates={self.num_candidates} must be >= 1 (null = G, the paper).")
        if self.priority_eps <= 0:
            raise ValueError(f"algorithm.skpo.priority_eps={self.priority_eps} must be > 0.")
        self._check_num_splits()
        self._check_upstream_baseline()
        self._check_diagnostics()

    def _check_diagnostics(self) -> None:
        _check_choice("upstream_advantage", self.upstream_advantage, UPSTREAM_ADVANTAGES)
        if self.upstream_advantage != "paper" and self.segment_judge is None:
            raise ValueError(
                f"algorithm.skpo.upstream_advantage={self.upstream_advantage} is a diagnostic that needs a task which "
                "can judge a kept segment: set algorithm.skpo.segment_judge=module:function (the chain-sum tasks': "
                "skpo_verl.demo.task:segment_is_clean), or upstream_advantage=paper (the default) on other tasks."
            )
        if self.segment_judge is not None:
            if not isinstance(self.segment_judge, str) or self.segment_judge.count(":") != 1:
                raise ValueError(
                    f"algorithm.skpo.segment_judge={self.segment_judge!r} must be 'module:function', e.g. "
                    "skpo_verl.demo.task:segment_is_clean."
                )
            if self.num_splits > 1:
                raise ValueError(
                    f"algorithm.skpo.segment_judge with num_splits={self.num_splits}: the judge reads one kept segment "
                    "after the problem; a later stage's segment continues earlier ones. Use num_splits=1, or unset "
                    "segment_judge."
                )

    def _check_num_splits(self) -> None:
        if isinstance(self.num_splits, bool) or not isinstance(self.num_splits, int) or self.num_splits < 1:
            raise ValueError(
                f"algorithm.skpo.num_splits={self.num_splits!r} must be an integer >= 1 (1 = the paper's single split)."
            )
        if self.num_splits == 1:
            return
        if self.conditioning != "skip":
            raise ValueError(
                f"algorithm.skpo.num_splits={self.num_splits} needs algorithm.skpo.conditioning=skip (it is "
                f"{self.conditioning!r}): each later stage answers from the skip-connected input [s_1..s_k, q]; "
                + (
                    "answers from q alone would give every stage the same reward, so its segments get no credit. "
                    if self.conditioning == "unconditional"
                    else "the continual layout (q then s as a prefix) is not implemented for several segments. "
                )
                + "Set conditioning=skip, or num_splits=1."
            )
        if self.upstream_reward == "own_completion":
            raise ValueError(
                f"algorithm.skpo.num_splits={self.num_splits} with algorithm.skpo.upstream_reward=own_completion: "
                "each stage's upstream row is credited with the answers from its own skip-connected input; one "
                "completion of the first candidate cannot credit the later segments. Use upstream_reward=mc_mean "
                "(the paper) or first_answer, or num_splits=1."
            )

    def _check_upstream_baseline(self) -> None:
        _check_choice("upstream_baseline", self.upstream_baseline, UPSTREAM_BASELINES)
        if self.upstream_baseline == "tracker":
            return
        spatial = "algorithm.skpo.upstream_baseline=spatial"
        back = "or upstream_baseline=tracker (the paper)."
        if self.num_splits > 1:
            raise ValueError(
                f"{spatial} with num_splits={self.num_splits}: each later stage continues the one segment kept "
                f"before it; two kept segments per stage would branch that chain (not implemented). Use num_splits=1, "
                + back
            )
        if self.upstream_reward == "own_completion":
            raise ValueError(
                f"{spatial} with upstream_reward=own_completion: the spatial baseline compares the two kept segments "
                "by the mean reward of each one's own G/2 answers from [s, q]; own_completion credits a segment with "
                "one completion of its own candidate instead, which leaves the answers crediting nothing. Use "
                "upstream_reward=mc_mean (the paper) or first_answer, " + back
            )
        if self.first_visit_upstream == "zero":
            raise ValueError(
                f"{spatial} with first_visit_upstream=zero: zero sets aside the rows judged against the tracker's "
                "initial value, and the spatial baseline does not read the tracker (a first visit is compared with "
                "its prompt's other segment like any visit), so it would only drop rows. Leave "
                "first_visit_upstream=initial_value, " + back
            )
        if self.num_candidates is not None and self.num_candidates < 2:
            raise ValueError(
                f"{spatial} with num_candidates={self.num_candidates}: it keeps two different candidates per prompt. "
                "Set num_candidates >= 2 (or null = G), " + back
            )

    def check_group_size(self, group_size: int) -> None:
        """Refuse a G (`actor_rollout_ref.rollout.n`) this section cannot roll out, naming the keys."""
        if self.upstream_baseline == "spatial" and group_size % 2:
            raise ValueError(
                f"algorithm.skpo.upstream_baseline=spatial with actor_rollout_ref.rollout.n={group_size}: the G "
                "answers are shared equally by the two kept segments (G/2 each), so G must be even. Set rollout.n "
                "to an even number, or upstream_baseline=tracker (the paper)."
            )

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> SKPOConfig:
        """Build from the `algorithm.skpo` mapping, rejecting unknown keys by name."""
        section = dict(section or {})
        tracker = _build(TrackerConfig, section.pop("tracker", None), "algorithm.skpo.tracker")
        loss = _build(LossConfig, section.pop("loss", None), "algorithm.skpo.loss")
        top = _build(cls, section, "algorithm.skpo", tracker=tracker, loss=loss)
        return top

    @property
    def half_life(self) -> float:
        """D_half of the configured divergence measure."""
        t = self.tracker
        return t.half_life_steps if t.divergence == "steps" else t.half_life_logprob

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def skpo_config_from_algorithm(algorithm_config: Any) -> SKPOConfig:
    """Read `algorithm.skpo` from verl's algorithm config (a DictConfig or a plain mapping)."""
    section = _get(algorithm_config, "skpo")
    if section is not None and not isinstance(section, Mapping):
        section = _to_container(section)
    return SKPOConfig.from_mapping(section)


def _build(cls, section: Mapping[str, Any] | None, path: str, **fixed: Any):
    section = dict(_to_container(section) or {})
    names = {f.name for f in dataclasses.fields(cls)} - set(fixed)
    unknown = sorted(set(section) - names)
    if unknown:
        raise ValueError(
            f"Unknown key(s) {', '.join(f'{path}.{k}' for k in unknown)}. "
            f"Valid keys under {path}: {', '.join(sorted(names))} (see docs/config.md)."
        )
    return cls(**section, **fixed)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"algorithm.skpo.{key}={value!r} is not one of {', '.join(choices)}.")


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if hasattr(config, "get"):
        return config.get(key, None)
    return getattr(config, key, None)


def _to_container(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    except (ImportError, ValueError):
        return dict(value)
