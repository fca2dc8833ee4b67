"""The `skpo_agent` agent loop: SKPO's skip-connected rollout of one prompt (docs/algorithm.md, Rollout).

verl's V1 worker (`AgentLoopWorkerTQ._run_prompt`, verl/trainer/ppo/v1/agent_loop_tq.py
~l.107-148) starts the G = `actor_rollout_ref.rollout.n` sessions of one prompt together, in
one event loop, and stores every output a session returns as a TransferQueue row. SKPO's
rollout maps onto those sessions, in the steps of docs/algorithm.md (one method each, in
this order below):

1. split length t_q: the driver's `skpo_split_length` column (`_split_length`);
2. candidates: session 0 samples G candidates from q, each stopped after t_q tokens (`_candidates`);
3. cut: a candidate that ended (any EOS id of the model) within t_q is cut at half its length
   (`_ended`, then `core.split.cut_early_candidate`);
4. select: the selection rule (median NLL by default) keeps one candidate as the segment s
   (`_select`), published to the sibling sessions;
5. answer: every session answers from the downstream input ([s, q] in skip mode) (`_answer`).

Session 0 returns `[upstream (q -> s), downstream_0]`; session i > 0 returns `[downstream_i]`.

With `upstream_baseline=spatial` (ours; docs/algorithm.md, "Spatial upstream baseline (ours)")
step 4 keeps two segments, s_a by the selection rule and s_b (`core.selection.select_two_segments`);
sessions 0..G/2-1 answer from s_a, sessions G/2..G-1 from s_b, and the first session of each half
returns its segment's upstream row: session 0 `[upstream (q -> s_a), downstream_0]`, session G/2
`[upstream (q -> s_b), downstream_{G/2}]`. Every row carries its segment's `skpo_segment_index`.

With `upstream_reward=own_completion` ("w/o MC") session 0 also completes the kept candidate
(q -> s -> rest); the reward shim (`skpo_verl.patches.agent_loop`) judges it and writes the
outcome on the upstream row. Each answer is judged alone, on exactly its own tokens, by verl's
reward path (the same shim).

Multi-split (`algorithm.skpo.num_splits` = K > 1, ours; docs/algorithm.md, "Multi-split") is an
extension beside this module, `skpo_verl.rollout.multi_split`: `run` hands such a prompt to it,
and it calls steps 1-5 below once per stage.

Candidates and answers are independent server requests and run concurrently; the only
wait is inside one prompt. If any request of a prompt fails, every session of that prompt
fails at once (nothing waits for a segment or a sibling that will never come): that
coordination is `skpo_verl.rollout.prompt_group`. What one session's requests share (uid,
q, sampling parameters, priority, step, t_q) is read once from verl's call into a
`PromptRequest`.

Validation rollouts are plain single-turn generation from q: the worker knows whether it
validates but does not tell agent loops (`skpo_verl.patches.agent_loop` tells them).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import PrivateAttr
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
)
from verl.workers.rollout.replica import TokenOutput

from skpo_verl import rows
from skpo_verl.config import SKPOConfig, skpo_config_from_algorithm
from skpo_verl.core.selection import mean_nll, select_segment, select_two_segments
from skpo_verl.core.split import cut_early_candidate, split_length
from skpo_verl.rollout import AGENT_CLASS, AGENT_NAME, multi_split  # noqa: F401 - AGENT_NAME is re-exported
from skpo_verl.rollout.lengths import (
    CHAT_SEPARATOR,
    CLAMP_KEY,
    SKPOLengthError,
    model_eos_token_ids,
    model_length_limit,
)
from skpo_verl.rollout.prompt_group import SKPORolloutError, all_or_none, group_session

logger = logging.getLogger(__name__)


class SKPOAgentLoopOutput(AgentLoopOutput):
    """An agent-loop output carrying the row-contract fields (`skpo_verl.rows.ROLLOUT_FIELDS`).

    verl turns each field of an `AgentLoopOutput` subclass into a top-level TransferQueue
    column (`as_dict` dumps the fields that were set), so every output sets all of them.
    """

    skpo_is_upstream: int
    skpo_split_length: int
    skpo_segment_length: int
    skpo_segment_nll: float
    skpo_candidate_tokens: int
    skpo_early_eos_candidates: int
    skpo_completion_reward: float = 0.0
    skpo_completion_tokens: int = 0
    skpo_stage: int = 1
    skpo_segment_ended: int = 0
    skpo_segment_index: int = 0
    # upstream_reward=own_completion: the kept candidate's own completion (q -> s -> rest), which
    # the reward shim judges and turns into skpo_completion_reward. Never stored as a column.
    _own_completion: AgentLoopOutput | None = PrivateAttr(default=None)
    # An answer's own (reward_score, reward_extra_info), kept by the reward shim: verl's
    # `_agent_loop_postprocess` copies the session's last output's score onto every earlier output,
    # which with multi-split includes the earlier stages' answers. `as_dict` puts it back.
    _own_score: tuple | None = PrivateAttr(default=None)

    def keep_own_score(self) -> None:
        """Remember the score verl's reward path just gave this output (see `_own_score`)."""
        self._own_score = (self.reward_score, self.extra_fields.get("reward_extra_info"))

    def as_dict(self) -> dict[str, Any]:
        """verl's columns plus the SKPO fields as 0-d tensors, so a batch stacks them into [B] columns."""
        if self._own_score is not None:
            self.reward_score, reward_extra_info = self._own_score
            if reward_extra_info is not None:
                self.extra_fields["reward_extra_info"] = reward_extra_info
        output = super().as_dict()
        for name, dtype in rows.ROLLOUT_FIELDS.items():
            output[name] = torch.tensor(getattr(self, name), dtype=_TORCH_DTYPES[dtype])
        return output


_TORCH_DTYPES = {np.int64: torch.int64, np.float32: torch.float32}


assert f"{__name__}.SKPOAgentLoop" == AGENT_CLASS
_DECLARED = tuple(name for name in SKPOAgentLoopOutput.model_fields if name.startswith("skpo_"))
assert set(_DECLARED) == set(rows.ROLLOUT_FIELDS), f"row contract {tuple(rows.ROLLOUT_FIELDS)} != {_DECLARED}"


@dataclass(frozen=True)
class KeptSegment:
    """A kept segment s shared by the answers of one prompt (all G; G/2 each of s_a and s_b with the spatial
    baseline), with the statistics of its selection."""

    token_ids: list[int]
    log_probs: list[float]
    nll: float  # mean NLL of s under the rollout policy
    split_length: int  # t_q
    candidate_tokens: int  # tokens decoded over all G candidates
    early_eos_candidates: int  # candidates that ended (EOS) within t_q tokens
    extra_fields: dict  # the kept candidate's TokenOutput.extra_fields (weight versions)
    candidate: TokenOutput  # the kept candidate as generated, before the cut ("w/o MC" completes it)
    candidate_ended: bool  # whether the kept candidate ended (EOS) within t_q
    stage: int = 1  # multi-split: the stage k this segment was kept at
    segment_index: int = 0  # upstream_baseline=spatial: 0 for s_a (the selection rule's), 1 for s_b


NO_SEGMENT = KeptSegment([], [], 0.0, 0, 0, 0, {}, TokenOutput(token_ids=[]), False)


@dataclass(frozen=True)
class RolloutSetup:
    """What every session of a worker reads from the config and the model, worked out once."""

    skpo: SKPOConfig
    group_size: int
    prompt_length: int
    response_length: int
    max_model_len: int | None
    max_model_len_source: str
    eos_token_ids: frozenset


# verl builds one agent loop per session; the config object is the worker's, so its setup is
# computed on the first session and reused (keyed by the config object, kept alive with it).
_setups: dict[int, tuple[Any, RolloutSetup]] = {}


def rollout_setup(config, tokenizer) -> RolloutSetup:
    cached = _setups.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    rollout_config = config.actor_rollout_ref.rollout
    max_model_len, max_model_len_source = model_length_limit(config)
    setup = RolloutSetup(
        skpo=skpo_config_from_algorithm(config.algorithm),
        group_size=int(rollout_config.n),
        prompt_length=int(rollout_config.prompt_length),
        response_length=int(rollout_config.response_length),
        max_model_len=max_model_len,
        max_model_len_source=max_model_len_source,
        eos_token_ids=frozenset(model_eos_token_ids(config, tokenizer)),
    )
    setup.skpo.check_group_size(setup.group_size)
    _setups[id(config)] = (config, setup)
    return setup


# True while AgentLoopWorker._run_agent_loop runs a validation session. Set by the shim
# `skpo_verl.patches.agent_loop`, which installs it before it registers the class, so a
# registered skpo_agent always has it.
validating: contextvars.ContextVar[bool] = contextvars.ContextVar("skpo_validating", default=False)


@dataclass(frozen=True)
class PromptRequest:
    """One session's prompt and what every server request for it carries, read once from verl's call."""

    uid: str  # verl's per-step prompt id, shared by the G sessions
    messages: list[dict]  # the raw chat prompt (skip_format=chat re-templates it)
    prompt_ids: list[int]  # q, tokenized by verl's template
    sampling_params: dict
    priority: int
    step: int  # the trainer's global step
    split_length: int | None  # the driver's `skpo_split_length` column (t_q), None if absent
    # num_splits > 1: the driver's `skpo_later_split_lengths` column (t_2..t_K), None if absent.
    later_split_lengths: tuple[int, ...] | None = None


class SKPOAgentLoop(AgentLoopBase):
    """SKPO's two-phase rollout; a fresh instance per session (verl instantiates one per run)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup = rollout_setup(self.config, self.tokenizer)
        self.skpo = self.setup.skpo
        # Backstop for the wait on the kept segment and for candidate generation: a prompt whose
        # candidates take longer fails instead of holding its G sessions forever.
        self.segment_timeout_s = float(self.skpo.rollout_timeout_s)

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput | list[AgentLoopOutput]:
        messages = list(kwargs["raw_prompt"])
        if await self.process_multi_modal_info(messages):
            raise NotImplementedError("skpo_agent supports text prompts only; this prompt carries images/videos/audio.")
        split_length = kwargs.get(rows.PROMPT_SPLIT_LENGTH)
        later = kwargs.get(rows.PROMPT_LATER_SPLIT_LENGTHS)
        request = PromptRequest(
            uid=str(kwargs["uid"]),
            messages=messages,
            prompt_ids=await self.ct_build_initial_tokens(messages),
            sampling_params=dict(sampling_params),
            priority=int(kwargs.get("priority", 0)),
            step=int(kwargs.get("global_steps", 0)),
            split_length=None if split_length is None else int(split_length),
            later_split_lengths=None if later is None else tuple(int(t) for t in _as_list(later)),
        )
        if validating.get():
            return await self._single_turn(request)
        if self.skpo.num_splits > 1:
            return await multi_split.roll_out(self, request, self._session_id(kwargs))
        return await self._skip_connected(request, self._session_id(kwargs))

    async def _single_turn(self, request: PromptRequest) -> AgentLoopOutput:
        """Validation: one answer from q, as verl's single_turn_agent, with the SKPO fields zeroed."""
        started = time.perf_counter()
        answer = await self._generate(request, "answer", request.prompt_ids, self.setup.response_length)
        return self._output(request.prompt_ids, answer, NO_SEGMENT, is_upstream=False, started=started)

    def _session_id(self, kwargs: dict) -> int:
        if "session_id" not in kwargs:
            raise RuntimeError(
                "skpo_agent needs verl's V1 trainer (trainer.use_v1=true), which runs the G sessions of a prompt "
                "together and passes their session_id."
            )
        session_id = int(kwargs["session_id"])
        if not 0 <= session_id < self.setup.group_size:
            raise RuntimeError(
                f"skpo_agent got session_id={session_id} for actor_rollout_ref.rollout.n={self.setup.group_size}: "
                "SKPO takes G from rollout.n and does not support a per-prompt __rollout_n__ column."
            )
        return session_id

    async def _skip_connected(self, request: PromptRequest, session_id: int) -> list[AgentLoopOutput]:
        """Session 0 makes the kept segment (steps 1-4) and shares it; every session answers from it (step 5).

        With the spatial baseline session 0 shares two; each half of the sessions answers from one of them,
        and the first session of each half returns its upstream row.
        """
        started = time.perf_counter()
        completion = None
        with group_session(request.uid, self.setup.group_size, session_id, 2 * self.segment_timeout_s) as group:
            if session_id == 0:
                segments = await self._segments(request, self._split_length(request))
                group.publish(segments)
            else:
                segments = await group.kept_segment(self.segment_timeout_s)
            answerers = self.setup.group_size // len(segments)  # sessions per kept segment: G, or G/2 (spatial)
            segment = segments[session_id // answerers]
            answering = self._answer(request, segment.token_ids, session_id)
            if session_id == 0 and self.skpo.upstream_reward == "own_completion":
                completing = self._complete_candidate(request, segment)
                answer_prompt, answer, completion = await group.unless_a_sibling_fails(
                    session_id, _flatten(answering, completing)
                )
            else:
                answer_prompt, answer = await group.unless_a_sibling_fails(session_id, answering)
        downstream = self._output(answer_prompt, answer, segment, is_upstream=False, started=started)
        if session_id % answerers:
            return [downstream]
        return [self._upstream_output(request.prompt_ids, segment, started, completion), downstream]

    def _split_length(self, request: PromptRequest) -> int:
        """Step 1: t_q from the driver's `skpo_split_length` column, else drawn from the paper's initial L."""
        t_q = request.split_length
        if t_q is None:
            t_q = self._drawn_split_length(request, rows.PROMPT_SPLIT_LENGTH, "t_q")
        return self._checked_split_length(
            t_q, "t_q", hint=" skpo_verl.rollout.lengths.check_lengths(config) checks this at start-up."
        )

    async def _segments(
        self, request: PromptRequest, t_q: int, context: list[int] | None = None, stage: int = 1
    ) -> tuple[KeptSegment, ...]:
        """Steps 2-4: candidates stopped after t_q tokens, the early-EOS cut, the selection rule.

        The kept segment s; with upstream_baseline=spatial two, (s_a, s_b). Multi-split's stage
        k >= 2 continues `context` = [q, s_1..s_{k-1}] instead of q.
        """
        candidates = await self._candidates(request, t_q, context, stage)
        ended = [self._ended(candidate.token_ids, t_q) for candidate in candidates]
        kept_lengths = [cut_early_candidate(len(c.token_ids), t_q, e) for c, e in zip(candidates, ended)]
        return self._select(candidates, kept_lengths, ended, t_q, request.step)

    async def _candidates(
        self, request: PromptRequest, t_q: int, context: list[int] | None = None, stage: int = 1
    ) -> list[TokenOutput]:
        """Step 2: G candidates from q (algorithm.skpo.num_candidates if set), each stopped after t_q tokens.

        Multi-split's stage k >= 2 continues `context` = [q, s_1..s_{k-1}] instead of q.
        """
        count = self.skpo.num_candidates or self.setup.group_size
        prompt_ids = request.prompt_ids if context is None else context
        label = "candidate" if stage == 1 else f"stage{stage}-candidate"
        generating = all_or_none(self._generate(request, f"{label}-{k}", prompt_ids, t_q) for k in range(count))
        try:
            return await asyncio.wait_for(generating, self.segment_timeout_s)
        except asyncio.TimeoutError:
            raise SKPORolloutError(
                f"prompt uid={request.uid}: candidates not done after {self.segment_timeout_s:g} s"
            ) from None

    def _ended(self, token_ids: list[int], t_q: int) -> bool:
        """Step 3: whether a candidate stopped on its own within t_q tokens (it is then cut at half).

        vLLM reports stop_reason "completed" for EOS and for max_tokens alike, so a candidate
        shorter than t_q ended by itself; one of exactly t_q tokens ended if its last token is
        one of the model's EOS ids (generation config, model config and tokenizer, as vLLM
        gathers them; Llama-3 declares several).
        """
        return len(token_ids) < t_q or token_ids[-1] in self.setup.eos_token_ids

    def _select(
        self, candidates: list[TokenOutput], kept_lengths: list[int], ended: list[bool], t_q: int, step: int
    ) -> tuple[KeptSegment, ...]:
        """Step 4: the selection rule (median mean-NLL by default) over the cut candidates keeps one as s.

        upstream_baseline=spatial keeps two different candidates, s_a by the rule and s_b, the next
        closest to the median (or, with `extreme`, the other extreme).
        """
        nlls = [mean_nll(candidate.log_probs[:keep]) for candidate, keep in zip(candidates, kept_lengths)]
        if self.skpo.upstream_baseline == "spatial":
            chosen = select_two_segments(nlls, self.skpo.selection, step)
        else:
            chosen = (select_segment(nlls, self.skpo.selection, step),)
        return tuple(
            KeptSegment(
                token_ids=list(candidates[k].token_ids[: kept_lengths[k]]),
                log_probs=list(candidates[k].log_probs[: kept_lengths[k]]),
                nll=nlls[k],
                split_length=t_q,
                candidate_tokens=sum(len(candidate.token_ids) for candidate in candidates),
                early_eos_candidates=sum(ended),
                extra_fields=dict(candidates[k].extra_fields),
                candidate=candidates[k],
                candidate_ended=ended[k],
                segment_index=index,
            )
            for index, k in enumerate(chosen)
        )

    async def _answer(
        self, request: PromptRequest, segment_ids: list[int], session_id: int, label: str = "answer"
    ) -> tuple[list[int], TokenOutput]:
        """Step 5: one answer from the downstream input around s; returns (that input, the answer).

        Multi-split's stage k passes s_1..s_k, one after the other, and its own `label` for the request.
        """
        answer_prompt = await self._downstream_prompt(request, segment_ids)
        budget = self._answer_budget(len(answer_prompt), len(segment_ids))
        answer = await self._generate(request, f"{label}-{session_id}", answer_prompt, budget)
        return answer_prompt, answer

    async def _downstream_prompt(self, request: PromptRequest, segment_ids: list[int]) -> list[int]:
        """The answers' input for the configured conditioning (docs/algorithm.md, Rollout step 5)."""
        if self.skpo.conditioning == "unconditional":
            ids = list(request.prompt_ids)
        elif self.skpo.conditioning == "continual":
            ids = list(request.prompt_ids) + list(segment_ids)
        elif self.skpo.skip_format == "tokens":
            ids = list(segment_ids) + list(request.prompt_ids)
        else:
            ids = await self._segment_in_user_turn(request.messages, segment_ids)
        if len(ids) > self.setup.prompt_length:
            raise SKPOLengthError(
                f"downstream prompt of {len(ids)} tokens exceeds actor_rollout_ref.rollout.prompt_length="
                f"{self.setup.prompt_length}; SKPO does not truncate it. Raise rollout.prompt_length "
                "(skpo_verl.rollout.lengths.check_lengths(config) gives the worst case)."
            )
        return ids

    async def _segment_in_user_turn(self, messages: list[dict], segment_ids: list[int]) -> list[int]:
        """skip_format=chat: the decoded segment opens the last user turn, before the problem; re-templated."""
        user_turns = [i for i, message in enumerate(messages) if message.get("role") == "user"]
        if not user_turns or not isinstance(messages[user_turns[-1]].get("content"), str):
            raise ValueError("algorithm.skpo.skip_format=chat needs a prompt whose last user turn has text content.")
        last = user_turns[-1]
        segment_text = self.tokenizer.decode(segment_ids, skip_special_tokens=True)
        rewritten = [dict(message) for message in messages]
        rewritten[last]["content"] = segment_text + CHAT_SEPARATOR + messages[last]["content"]
        return await self.loop.run_in_executor(
            None, lambda: list(self.continuous_token_builder.build_initial_tokens(rewritten))
        )

    def _answer_budget(self, prompt_tokens: int, segment_tokens: int) -> int:
        """An answer's max_tokens.

        response_length, except: in continual mode the answer continues s, so s + answer is
        one response of at most response_length (the budget start-up checked, and the L_q
        observation stays within it); and where the model's context cannot hold a full
        answer after the prompt, the context left if clamp_answers_to_context allows.
        """
        setup = self.setup
        budget = setup.response_length
        if self.skpo.conditioning == "continual":
            budget = setup.response_length - segment_tokens
            if budget < 1:
                raise SKPOLengthError(
                    f"continual mode: the kept segment ({segment_tokens} tokens) leaves no answer budget within "
                    f"actor_rollout_ref.rollout.response_length={setup.response_length}."
                )
        if setup.max_model_len is None or prompt_tokens + budget <= setup.max_model_len:
            return budget
        left = setup.max_model_len - prompt_tokens
        if self.skpo.clamp_answers_to_context and left >= 1:
            return left
        raise SKPOLengthError(
            f"downstream prompt of {prompt_tokens} tokens plus an answer of {budget} exceeds "
            f"{setup.max_model_len_source}={setup.max_model_len}; the server would cut the answer short. "
            "skpo_verl.rollout.lengths.check_lengths(config) gives the worst case; "
            f"{CLAMP_KEY}=true caps answers instead."
        )

    async def _complete_candidate(self, request: PromptRequest, segment: KeptSegment) -> TokenOutput:
        """ "w/o MC": the kept candidate generated on to its end, q -> s -> rest, as one ordinary response.

        A candidate that ended within t_q is already complete (its segment is its first half);
        otherwise s is the whole candidate and the rest is generated from [q, s], so that s +
        rest is at most response_length tokens, like any answer.
        """
        candidate = segment.candidate
        if segment.candidate_ended:
            return candidate
        budget = self.setup.response_length - len(candidate.token_ids)
        if budget < 1:
            return candidate
        rest = await self._generate(request, "completion", list(request.prompt_ids) + list(candidate.token_ids), budget)
        return TokenOutput(
            token_ids=list(candidate.token_ids) + list(rest.token_ids),
            log_probs=list(candidate.log_probs) + list(rest.log_probs),
            extra_fields=dict(rest.extra_fields),
        )

    def _drawn_split_length(self, request: PromptRequest, column: str, name: str, *stream: int) -> int:
        """A split length drawn from the initial L where prompts lack the driver's `column` (another driver, a test).

        Seeded by (algorithm.skpo.seed, uid, *stream); warns once per column.
        """
        cfg = self.skpo
        _warn_once(
            f"skpo_agent: prompts carry no '{column}' column (added by skpo_verl's V1 trainer shim); "
            f"drawing {name} from the initial length L={cfg.tracker.initial_length:g}."
        )
        rng = np.random.default_rng([cfg.seed, zlib.crc32(request.uid.encode()), *stream])
        return split_length(
            cfg.split_rule, cfg.tracker.initial_length, cfg.split_low, cfg.split_high, request.step, rng
        )

    def _checked_split_length(self, t: int, name: str, hint: str = "") -> int:
        """`t` itself if it lies in [1, response_length]: the kept segment is the upstream row's response."""
        if not 1 <= t <= self.setup.response_length:
            raise SKPOLengthError(
                f"split length {name}={t} is outside [1, actor_rollout_ref.rollout.response_length="
                f"{self.setup.response_length}]: the kept segment is the upstream row's response.{hint}"
            )
        return t

    async def _generate(
        self, request: PromptRequest, label: str, prompt_ids: list[int], max_tokens: int
    ) -> TokenOutput:
        """One server request for this prompt (`label` names it in errors), checked against the generate contract."""
        # Log-probs always: the kept segment's NLL and every row's rollout_log_probs need them, and
        # all rows of a batch must carry the same columns.
        params = dict(request.sampling_params, max_tokens=int(max_tokens), logprobs=True)
        name = f"{label} of prompt uid={request.uid}"
        output: TokenOutput = await self.server_manager.generate(
            request_id=self._request_id(request, label),
            prompt_ids=list(prompt_ids),
            sampling_params=params,
            priority=request.priority,
        )
        if output.stop_reason in ("aborted", "abort"):
            raise SKPORolloutError(f"{name} was aborted by the rollout server")
        if not output.token_ids:
            raise SKPORolloutError(f"{name} returned no tokens")
        if output.log_probs is None or len(output.log_probs) != len(output.token_ids):
            raise SKPORolloutError(f"{name} returned no per-token log-probs (asked with logprobs=True)")
        if len(output.token_ids) > max_tokens:
            raise SKPORolloutError(f"{name} returned {len(output.token_ids)} tokens for max_tokens={max_tokens}")
        return output

    def _request_id(self, request: PromptRequest, label: str) -> str:
        # verl's router is sticky per request id (workers/rollout/router.py ~l.170-187): one id per
        # prompt sends its candidates and answers to one replica, where q and [s, q] are prefix-cache
        # hits. Under full determinism verl hands the id to vLLM itself, so requests need distinct ones.
        if self.rollout_config.get("full_determinism", False):
            return f"det-{request.priority}-{label}"
        return request.uid

    def _upstream_output(
        self, prompt_ids: list[int], segment: KeptSegment, started: float, completion: TokenOutput | None = None
    ) -> SKPOAgentLoopOutput:
        """The upstream row (q -> s; multi-split: [q, s_1..s_{k-1}] -> s_k).

        With "w/o MC" it also carries the kept candidate's completion, for the reward shim.
        """
        kept = TokenOutput(token_ids=segment.token_ids, log_probs=segment.log_probs, extra_fields=segment.extra_fields)
        upstream = self._output(prompt_ids, kept, segment, is_upstream=True, started=started)
        if completion is not None:
            upstream._own_completion = AgentLoopOutput(**_single_turn_fields(prompt_ids, completion, started, {}))
            upstream.skpo_completion_tokens = len(completion.token_ids) - len(segment.candidate.token_ids)
        return upstream

    def _output(self, prompt_ids, answer: TokenOutput, segment: KeptSegment, *, is_upstream: bool, started: float):
        extra_fields = dict(answer.extra_fields)
        for key, pick in (("min_global_steps", min), ("max_global_steps", max)):
            steps = [f[key] for f in (segment.extra_fields, answer.extra_fields) if f.get(key) is not None]
            if steps:
                extra_fields[key] = int(pick(steps))
        return SKPOAgentLoopOutput(
            **_single_turn_fields(prompt_ids, answer, started, extra_fields),
            skpo_is_upstream=int(is_upstream),
            skpo_split_length=segment.split_length,
            skpo_segment_length=len(segment.token_ids),
            skpo_segment_nll=segment.nll,
            skpo_candidate_tokens=segment.candidate_tokens,
            skpo_early_eos_candidates=segment.early_eos_candidates,
            skpo_completion_reward=0.0,
            skpo_completion_tokens=0,
            skpo_stage=segment.stage,
            skpo_segment_ended=int(segment.candidate_ended),
            skpo_segment_index=segment.segment_index,
        )


def _single_turn_fields(prompt_ids, answer: TokenOutput, started: float, extra_fields: dict) -> dict:
    """verl's AgentLoopOutput fields for one generated response (as its single-turn agent loop fills them)."""
    return dict(
        prompt_ids=list(prompt_ids),
        response_ids=list(answer.token_ids),
        response_mask=[1] * len(answer.token_ids),
        response_logprobs=list(answer.log_probs),
        num_turns=2,
        metrics=AgentLoopMetrics(
            generate_sequences=time.perf_counter() - started,
            num_preempted=answer.num_preempted if answer.num_preempted is not None else -1,
        ),
        extra_fields={**extra_fields, "turn_scores": [], "tool_rewards": []},  # the schema of verl's own agent loops
    )


async def _flatten(answering: Awaitable, completing: Awaitable) -> tuple:
    """(answer prompt, answer, completion): session 0's answer and the kept candidate's completion, together."""
    (answer_prompt, answer), completion = await all_or_none([answering, completing])
    return answer_prompt, answer, completion


def _as_list(value) -> list:
    """A kwargs column entry (a tensor row, a numpy array or a list) as a python list."""
    return value.tolist() if hasattr(value, "tolist") else list(value)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
