"""The learning benchmark's tasks, methods and settings (`python -m skpo_verl.benchmarks.learning`).

What runs: `METHODS` (each a launcher ALGO and its Hydra overrides), `Settings` (prompts per step,
G, steps, learning rate, mini-batches per step, task), the seeds' overrides, and the pace each task
was measured at (`TASK_DEFAULTS`, for the estimate printed before a run). docs/learning_benchmark.md
describes each method; `learning.py` runs them, `learning_report.py` reads their metrics back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

PROMPTS_PER_STEP = 8
GROUP_SIZE = 8
# From one-seed probes of GRPO and SKPO on this task before the full run: at 5e-4
# both were unstable (GRPO 89% at step 5 -> 70% at step 30; SKPO 44-70%, 44% at step 30); at 2e-4 both
# rose and stayed (GRPO 98%, SKPO 94% at step 40). docs/learning_benchmark.md, "Sizing".
LR = 2e-4
STEPS = 50
SEEDS = (0, 1, 2)
VAL_EVERY = 1
BASELINE = "grpo"
TASK = "benchmark"  # the larger chain-sum task (skpo_verl.demo.prepare.TASKS)
N0 = 8  # answers per training prompt of skpo_offline_values' estimate (SPO's n0)
# The paper's method, the loss variants and ablations that ran on the benchmark task from the start.
ORIGINAL_METHODS = (
    "grpo",
    "skpo",
    "cispo",
    "skpo_wo_skip",
    "skpo_wo_mc",
    "skpo_half_candidates",
    "skpo_upstream_0.1",
    "skpo_upstream_0",
)


@dataclass(frozen=True)
class TaskDefaults:
    """A task's default seeds, steps, validation schedule and methods, and the pace measured on it
    (seconds; they make the estimate printed before a run)."""

    seeds: tuple[int, ...]
    steps: int
    val_every: int
    methods: tuple[str, ...]
    start_up_s: float
    step_s_grpo: float
    step_s_skpo: float
    validation_s: float
    offline_values_s: float  # one skpo_offline_values estimate (n0 = 8 answers per training prompt)


TASK_DEFAULTS = {
    # From the full run (docs/learning_benchmark.md), rounded up.
    "benchmark": TaskDefaults(
        seeds=SEEDS,
        steps=STEPS,
        val_every=VAL_EVERY,
        methods=ORIGINAL_METHODS,
        start_up_s=50.0,
        step_s_grpo=1.2,
        step_s_skpo=1.6,
        validation_s=1.1,
        offline_values_s=120.0,
    ),
    # Sizing runs on the long task (docs/learning_benchmark.md, "The long task").
    "long": TaskDefaults(
        seeds=(0, 1, 2, 3, 4),
        steps=STEPS,
        val_every=5,
        methods=(
            *ORIGINAL_METHODS,
            "skpo_first_visit_zero",
            "skpo_upstream_rms",
            "skpo_offline_values",
            "skpo_split_late",
        ),
        # One run alone, seed 2 (docs/learning_benchmark.md, "Threads and --jobs"): GRPO 227 s, SKPO 269 s.
        start_up_s=50.0,
        step_s_grpo=1.6,
        step_s_skpo=2.3,
        validation_s=4.2,
        offline_values_s=150.0,
    ),
}

# The CPU demo's task (48 training / 16 held-out problems, a 600-step warm start): a small one, for a quick look and
# the harness test; its pace is the benchmark task's, with a quarter of its held-out problems to validate.
TASK_DEFAULTS["demo"] = replace(
    TASK_DEFAULTS["benchmark"], steps=30, val_every=5, methods=("grpo", "skpo"), validation_s=0.5, offline_values_s=60.0
)


@dataclass(frozen=True)
class Method:
    algo: str  # the launcher's ALGO
    overrides: tuple[str, ...] = ()
    offline_values: bool = False  # estimate initial values first and load them (SPO's offline warm start)
    split: tuple[float, float] | None = None  # (split_low, split_high) other than the paper's (1/6, 1/2)
    splits: int = 1  # algorithm.skpo.num_splits (multi-split, ours)


METHODS = {
    "grpo": Method("grpo"),
    "skpo": Method("skpo"),
    "cispo": Method(
        "grpo",
        (
            "actor_rollout_ref.actor.policy_loss.loss_mode=cispo",
            "actor_rollout_ref.actor.clip_ratio_low=0.2",
            "actor_rollout_ref.actor.clip_ratio_high=0.28",
        ),
    ),
    "skpo_wo_skip": Method("skpo", ("+algorithm.skpo.conditioning=continual",)),
    "skpo_wo_mc": Method("skpo", ("+algorithm.skpo.upstream_reward=own_completion",)),
    "skpo_half_candidates": Method("skpo", (f"+algorithm.skpo.num_candidates={GROUP_SIZE // 2}",)),
    # The balance of the two loss terms (docs/algorithm.md, "When SKPO learns slower than GRPO"):
    # less weight on the upstream term, and none (the downstream answers from [s, q] alone).
    "skpo_upstream_0.1": Method(
        "skpo", ("+algorithm.skpo.loss.upstream_weight=0.1", "+algorithm.skpo.loss.downstream_weight=0.9")
    ),
    "skpo_upstream_0": Method(
        "skpo", ("+algorithm.skpo.loss.upstream_weight=0.0", "+algorithm.skpo.loss.downstream_weight=1.0")
    ),
    # Interventions on the dip (docs/algorithm.md, "Interventions on the dip").
    "skpo_first_visit_zero": Method("skpo", ("+algorithm.skpo.first_visit_upstream=zero",)),
    "skpo_upstream_rms": Method("skpo", ("+algorithm.skpo.upstream_norm=rms",)),
    "skpo_offline_values": Method("skpo", offline_values=True),
    # Two kept segments per prompt, each judged against the other (docs/algorithm.md, "Spatial upstream baseline").
    "skpo_spatial": Method("skpo", ("+algorithm.skpo.upstream_baseline=spatial",)),
    # Later splits than the paper's t_q ~ U[L/6, L/2].
    "skpo_split_mid": Method("skpo", split=(1 / 3, 2 / 3)),
    "skpo_split_late": Method("skpo", split=(1 / 2, 5 / 6)),
    # Multi-split (ours, docs/algorithm.md): two kept segments per prompt, G answers after each.
    "skpo_two_splits": Method("skpo", splits=2),
    # The decomposition of docs/algorithm.md, "Why SKPO loses on the CPU tasks": the upstream term with a
    # perfect signal (the chain-sum judge's sign), with pure noise (random signs) at the paper's weight, and
    # the paper's signal at the weight of a downstream token (one token-mean over both roles).
    "skpo_oracle": Method("skpo", ("+algorithm.skpo.upstream_advantage=oracle",)),
    "skpo_random": Method("skpo", ("+algorithm.skpo.upstream_advantage=random",)),
    "skpo_token_mean": Method("skpo", ("+algorithm.skpo.loss.aggregation=token_mean",)),
    # The two levers together: a signal without the prompt's difficulty, at a downstream token's weight
    # (and, as a diagnostic, the perfect signal at that weight).
    "skpo_spatial_token_mean": Method(
        "skpo", ("+algorithm.skpo.upstream_baseline=spatial", "+algorithm.skpo.loss.aggregation=token_mean")
    ),
    "skpo_oracle_token_mean": Method(
        "skpo", ("+algorithm.skpo.upstream_advantage=oracle", "+algorithm.skpo.loss.aggregation=token_mean")
    ),
}
# Every one-split SKPO run asks the chain-sum tasks' judge about each kept segment: it logs how often the
# upstream advantage has the segment's true sign (skpo/upstream/oracle_agreement_*), and the oracle and
# random methods need it. It changes nothing in training.
SEGMENT_JUDGE = "skpo_verl.demo.task:segment_is_clean"


@dataclass(frozen=True)
class Settings:
    steps: int
    val_every: int
    prompts_per_step: int = PROMPTS_PER_STEP
    group_size: int = GROUP_SIZE
    lr: float = LR
    val_max_samples: int = -1  # verl's data.val_max_samples; -1 = the whole held-out set
    task: str = TASK  # skpo_verl.demo.prepare.TASKS
    # Actor updates per step: the step's prompts in this many mini-batches (actor.ppo_mini_batch_size =
    # prompts_per_step / mini_batches). 1 (the CPU default): one update, r = 1, the PPO clip never acts;
    # the paper: 4 (128 prompts in mini-batches of 32).
    mini_batches: int = 1
    # RL on the task's first N training prompts (None: all of them), so that a prompt returns to its trackers
    # more often at the same steps; the warm-started model is the same (it saw every training problem).
    train_prompts: int | None = None

    def __post_init__(self):
        if self.mini_batches < 1 or self.prompts_per_step % self.mini_batches:
            raise ValueError(
                f"--mini-batches {self.mini_batches} must divide --prompts-per-step {self.prompts_per_step}"
            )
        if self.train_prompts is not None and self.train_prompts < self.prompts_per_step:
            raise ValueError(
                f"--train-prompts {self.train_prompts} must hold at least one step's {self.prompts_per_step} prompts"
            )


# The CPU launchers' variables (examples/cpu_tiny_skpo.sh, cpu_smollm2_skpo.sh) that carry a run's settings,
# and this benchmark's: those and the task.
RUN_VARIABLES = {
    "STEPS": "steps",
    "VAL_EVERY": "val_every",
    "PROMPTS_PER_STEP": "prompts_per_step",
    "GROUP_SIZE": "group_size",
    "LR": "lr",
}
LAUNCHER_VARIABLES = {**RUN_VARIABLES, "TASK": "task"}


def seed_overrides(seed: int) -> list[str]:
    return [f"data.seed={seed}", f"+algorithm.skpo.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}"]


def settings_overrides(settings: Settings) -> list[str]:
    """What the launcher's variables do not carry: the mini-batches per step."""
    if settings.mini_batches == 1:
        return []
    return [f"actor_rollout_ref.actor.ppo_mini_batch_size={settings.prompts_per_step // settings.mini_batches}"]


def method_overrides(method: str, settings: Settings) -> list[str]:
    """The method's own overrides; a later split also raises the rollout's prompt budget to hold its longest
    segment before the problem (the launcher sizes it for the paper's split_high = 1/2). One-split SKPO
    methods also get the chain-sum segment judge (`SEGMENT_JUDGE`)."""
    spec = METHODS[method]
    overrides = list(spec.overrides)
    if spec.algo == "skpo" and spec.splits == 1:
        overrides.append(f"+algorithm.skpo.segment_judge={SEGMENT_JUDGE}")
    if spec.split is not None:
        from skpo_verl.demo.prepare import task_lengths

        low, high = spec.split
        prompt_length, response_length = task_lengths(settings.task)
        # The launcher starts L_q at the response budget, the longest L_q can be (docs/config.md, Lengths).
        longest_segment = math.ceil(high * response_length)
        overrides += [
            f"+algorithm.skpo.split_low={low!r}",
            f"+algorithm.skpo.split_high={high!r}",
            f"actor_rollout_ref.rollout.prompt_length={prompt_length + longest_segment}",
        ]
    if spec.splits > 1:
        from skpo_verl.demo.prepare import task_lengths

        prompt_length, response_length = task_lengths(settings.task)
        # The last stage's answers read every kept segment, together under the response budget (the stage
        # rule keeps them below it), as the launcher's NUM_SPLITS does.
        overrides += [
            f"+algorithm.skpo.num_splits={spec.splits}",
            f"actor_rollout_ref.rollout.prompt_length={prompt_length + response_length}",
        ]
    return overrides


# Runs finished per hour at --jobs 2 over one at a time, on the 2-core build machine: GRPO and SKPO on the long
# task, seed 2, one after the other (496-503 s for both) and side by side (421-422 s), three pairs alternated:
# median 1.19, range 1.18-1.19 (docs/learning_benchmark.md, "Threads and --jobs"). More jobs than cores are not
# measured; the estimate assumes no further gain.
JOBS_2_THROUGHPUT = 1.19


def estimated_minutes(methods: list[str], seeds: int, settings: Settings, jobs: int = 1) -> float:
    """Minutes for `methods` x `seeds` runs at the task's measured pace, `jobs` runs at a time."""
    pace = TASK_DEFAULTS[settings.task]
    scale = settings.prompts_per_step / PROMPTS_PER_STEP  # the paces were measured at 8 prompts a step
    per_step = [scale * (pace.step_s_grpo if METHODS[m].algo == "grpo" else pace.step_s_skpo) for m in methods]
    validations = settings.steps // settings.val_every + 1
    runs = sum(pace.start_up_s + settings.steps * s + validations * pace.validation_s for s in per_step)
    estimates = pace.offline_values_s * sum(METHODS[m].offline_values for m in methods)
    return seeds * (runs + estimates) / 60 / (1.0 if jobs == 1 else JOBS_2_THROUGHPUT)
