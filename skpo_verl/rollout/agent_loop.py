"""The `skpo_agent` agent loop: SKPO's skip-connected rollout of one prompt (docs/algorithm.md, Rollout).

verl's V1 worker (`AgentLoopWorkerTQ._run_prompt`, verl/trainer/ppo/v1/agent_loop_tq.py
~l.107-148) starts the G = `actor_rollout_ref.rollout.n` sessions of one prompt together, in
one event loop, and stores every output a session returns as a TransferQueue row. SKPO's
rollout maps onto those sessions, in the steps of docs/algorithm.md:

1. split length t_q: the driver's `skpo_split_length` column;
2. candidates: session 0 samples G candidates from q, each stopped after t_q tokens;
3. cut: a candidate that ended (any EOS id of the model) within t_q is cut at half its length;
4. select: the selection rule (median NLL by default) keeps one candidate as the segment s,
   published to the sibling sessions;
5. answer: every session answers from the downstream input ([s, q] in skip mode).

Session 0 returns `[upstream (q -> s), downstream_0]`; session i > 0 returns `[downstream_i]`.
With `upstream_reward=own_completion` ("w/o MC") session 0 also completes the kept candidate
(q -> s -> rest); the reward shim (`skpo_verl.patches.agent_loop`) judges it and writes the
outcome on the upstream row. Each answer is judged alone, on exactly its own tokens, by verl's
reward path (the same shim).

Candidates and answers are independent server requests and run concurrently; the only
wait is inside one prompt. If any request of a prompt fails, every session of that prompt
fails at once (nothing waits for a segment or a sibling that will never come).

Validation rollouts are plain single-turn generation from q: the worker knows whether it
validates but does not tell agent loops (`skpo_verl.patches.agent_loop` tells them).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

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
from skpo_verl.core.selection import mean_nll, select_segment
from skpo_verl.core.split import cut_early_candidate, split_length
from skpo_verl.rollout import AGENT_CLASS, AGENT_NAME  # noqa: F401 - AGENT_NAME is re-exported
from skpo_verl.rollout.lengths import (
    CHAT_SEPARATOR,
    CLAMP_KEY,
    SKPOLengthError,
    model_eos_token_ids,
    model_length_limit,
)

logger = logging.getLogger(__name__)


class SKPORolloutError(RuntimeError):
    """A request of the prompt failed, or the server broke the generate contract."""


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
    # upstream_reward=own_completion: the kept candidate's own completion (q -> s -> rest), which
    # the reward shim judges and turns into skpo_completion_reward. Never stored as a column.
    _own_completion: AgentLoopOutput | None = PrivateAttr(default=None)

    def as_dict(self) -> dict[str, Any]:
        """verl's columns plus the SKPO fields as 0-d tensors, so a batch stacks them into [B] columns."""
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
    """The segment s shared by the G answers of one prompt, with the statistics of its selection."""

    token_ids: list[int]
    log_probs: list[float]
    nll: float  # mean NLL of s under the rollout policy
    split_length: int  # t_q
    candidate_tokens: int  # tokens decoded over all G candidates
    early_eos_candidates: int  # candidates that ended (EOS) within t_q tokens
    extra_fields: dict  # the kept candidate's TokenOutput.extra_fields (weight versions)
    candidate: TokenOutput  # the kept candidate as generated, before the cut ("w/o MC" completes it)
    candidate_ended: bool  # whether the kept candidate ended (EOS) within t_q


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
    _setups[id(config)] = (config, setup)
    return setup


# True while AgentLoopWorker._run_agent_loop runs a validation session. Set by the shim
# `skpo_verl.patches.agent_loop`, which installs it before it registers the class, so a
# registered skpo_agent always has it.
validating: contextvars.ContextVar[bool] = contextvars.ContextVar("skpo_validating", default=False)


class _PromptGroup:
    """What the G sessions of one prompt share: the kept segment and the first failure."""

    def __init__(self, uid: str, size: int, loop: asyncio.AbstractEventLoop):
        self.uid = uid
        self.size = size
        self.segment: asyncio.Future = loop.create_future()
        self.failure: asyncio.Future = loop.create_future()  # result: the first error of any session
        self.finished_sessions = 0

    def publish(self, segment: KeptSegment) -> None:
        self.segment.set_result(segment)

    def fail(self, session_id: int, error: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_result((session_id, error))
        if not self.segment.done():
            self.segment.set_exception(
                SKPORolloutError(
                    f"prompt uid={self.uid}: session {session_id} failed before the kept segment was ready "
                    f"({type(error).__name__}: {error})"
                )
            )
            self.segment.exception()  # retrieved here so asyncio does not warn when no sibling is waiting

    async def kept_segment(self, timeout_s: float) -> KeptSegment:
        try:
            return await asyncio.wait_for(asyncio.shield(self.segment), timeout_s)
        except asyncio.TimeoutError:
            raise SKPORolloutError(
                f"prompt uid={self.uid}: no kept segment after {timeout_s:g} s (session 0 did not publish it)"
            ) from None

    async def unless_a_sibling_fails(self, session_id: int, request: Awaitable) -> Any:
        """Await `request`; cancel it and raise as soon as another session of the prompt fails."""
        task = asyncio.ensure_future(request)
        await asyncio.wait({task, self.failure}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        failed_session, error = self.failure.result()
        raise SKPORolloutError(
            f"prompt uid={self.uid}: session {session_id} stopped because session {failed_session} failed: {error!r}"
        ) from error


class SKPOAgentLoop(AgentLoopBase):
    """SKPO's two-phase rollout; a fresh instance per session (verl instantiates one per run)."""

    # Sessions of one prompt being rolled out in this worker's event loop, by uid.
    _groups: ClassVar[dict[str, _PromptGroup]] = {}

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
        prompt_ids = await self.ct_build_initial_tokens(messages)
        priority = int(kwargs.get("priority", 0))
        if validating.get():
            return await self._single_turn(str(kwargs["uid"]), prompt_ids, sampling_params, priority)
        if "session_id" not in kwargs:
            raise RuntimeError(
                "skpo_agent needs verl's V1 trainer (trainer.use_v1=true), which runs the G sessions of a prompt "
                "together and passes their session_id."
            )
        return await self._skip_connected(messages, prompt_ids, sampling_params, priority, kwargs)

    async def _single_turn(self, uid: str, prompt_ids: list[int], sampling_params: dict, priority: int):
        """Validation: one answer from q, as verl's single_turn_agent, with the SKPO fields zeroed."""
        started = time.perf_counter()
        answer = await self._generate(uid, "answer", prompt_ids, sampling_params, self.setup.response_length, priority)
        return self._output(prompt_ids, answer, NO_SEGMENT, is_upstream=False, started=started)

    async def _skip_connected(self, messages, prompt_ids, sampling_params, priority, kwargs) -> list[AgentLoopOutput]:
        uid, session_id = str(kwargs["uid"]), int(kwargs["session_id"])
        if not 0 <= session_id < self.setup.group_size:
            raise RuntimeError(
                f"skpo_agent got session_id={session_id} for actor_rollout_ref.rollout.n={self.setup.group_size}: "
                "SKPO takes G from rollout.n and does not support a per-prompt __rollout_n__ column."
            )
        group = self._join(uid)
        started = time.perf_counter()
        completion = None
        try:
            if session_id == 0:
                segment = await self._segment(uid, prompt_ids, sampling_params, priority, kwargs)
                group.publish(segment)
            else:
                segment = await group.kept_segment(self.segment_timeout_s)
            answering = self._answer(messages, prompt_ids, segment, sampling_params, priority, uid, session_id)
            if session_id == 0 and self.skpo.upstream_reward == "own_completion":
                completing = self._complete_candidate(uid, prompt_ids, segment, sampling_params, priority)
                answer_prompt, answer, completion = await group.unless_a_sibling_fails(
                    session_id, _flatten(answering, completing)
                )
            else:
                answer_prompt, answer = await group.unless_a_sibling_fails(session_id, answering)
        except BaseException as error:
            group.fail(session_id, error)
            logger.error("skpo_agent: prompt uid=%s session %d failed: %r", uid, session_id, error)
            raise
        finally:
            self._leave(group)
        downstream = self._output(answer_prompt, answer, segment, is_upstream=False, started=started)
        if session_id != 0:
            return [downstream]
        kept = TokenOutput(token_ids=segment.token_ids, log_probs=segment.log_probs, extra_fields=segment.extra_fields)
        upstream = self._output(prompt_ids, kept, segment, is_upstream=True, started=started)
        if completion is not None:
            upstream._own_completion = self._completion_output(prompt_ids, completion, started)
            upstream.skpo_completion_tokens = len(completion.token_ids) - len(segment.candidate.token_ids)
        return [upstream, downstream]

    async def _segment(self, uid, prompt_ids, sampling_params, priority, kwargs) -> KeptSegment:
        """Steps 1-4: t_q, G candidates stopped at t_q, the early-EOS cut, the selection rule."""
        step = int(kwargs.get("global_steps", 0))
        t_q = self._split_length(kwargs, uid, step)
        try:
            candidates = await asyncio.wait_for(
                self._candidates(uid, prompt_ids, t_q, sampling_params, priority), self.segment_timeout_s
            )
        except asyncio.TimeoutError:
            raise SKPORolloutError(
                f"prompt uid={uid}: candidates not done after {self.segment_timeout_s:g} s"
            ) from None
        ended = [self._ended(candidate.token_ids, t_q) for candidate in candidates]
        kept_lengths = [cut_early_candidate(len(c.token_ids), t_q, e) for c, e in zip(candidates, ended)]
        nlls = [mean_nll(candidate.log_probs[:keep]) for candidate, keep in zip(candidates, kept_lengths)]
        chosen = select_segment(nlls, self.skpo.selection, step)
        kept, keep = candidates[chosen], kept_lengths[chosen]
        return KeptSegment(
            token_ids=list(kept.token_ids[:keep]),
            log_probs=list(kept.log_probs[:keep]),
            nll=nlls[chosen],
            split_length=t_q,
            candidate_tokens=sum(len(candidate.token_ids) for candidate in candidates),
            early_eos_candidates=sum(ended),
            extra_fields=dict(kept.extra_fields),
            candidate=kept,
            candidate_ended=ended[chosen],
        )

    def _split_length(self, kwargs: dict, uid: str, step: int) -> int:
        """Step 1: t_q from the driver's `skpo_split_length` column, else drawn from the paper's initial L."""
        value = kwargs.get(rows.PROMPT_SPLIT_LENGTH)
        if value is not None:
            t_q = int(value)
        else:
            cfg = self.skpo
            _warn_once(
                f"skpo_agent: prompts carry no '{rows.PROMPT_SPLIT_LENGTH}' column (added by skpo_verl's V1 trainer "
                f"shim); drawing t_q from the initial length L={cfg.tracker.initial_length:g}."
            )
            rng = np.random.default_rng([cfg.seed, zlib.crc32(uid.encode())])
            t_q = split_length(cfg.split_rule, cfg.tracker.initial_length, cfg.split_low, cfg.split_high, step, rng)
        if not 1 <= t_q <= self.setup.response_length:
            raise SKPOLengthError(
                f"split length t_q={t_q} is outside [1, actor_rollout_ref.rollout.response_length="
                f"{self.setup.response_length}]: the kept segment is the upstream row's response. "
                "skpo_verl.rollout.lengths.check_lengths(config) checks this at start-up."
            )
        return t_q

    async def _candidates(self, uid, prompt_ids, t_q, sampling_params, priority) -> list[TokenOutput]:
        """Step 2: G candidates from q (algorithm.skpo.num_candidates if set), each stopped after t_q tokens."""
        return await _all_or_none(
            self._generate(uid, f"candidate-{k}", prompt_ids, sampling_params, t_q, priority)
            for k in range(self.skpo.num_candidates or self.setup.group_size)
        )

    def _ended(self, token_ids: list[int], t_q: int) -> bool:
        """Step 3: whether a candidate stopped on its own within t_q tokens.

        vLLM reports stop_reason "completed" for EOS and for max_tokens alike, so a candidate
        shorter than t_q ended by itself; one of exactly t_q tokens ended if its last token is
        one of the model's EOS ids (generation config, model config and tokenizer, as vLLM
        gathers them; Llama-3 declares several).
        """
        return len(token_ids) < t_q or token_ids[-1] in self.setup.eos_token_ids

    async def _answer(self, messages, prompt_ids, segment, sampling_params, priority, uid, session_id):
        """Step 5: one answer from the downstream input; returns (that input, the answer)."""
        answer_prompt = await self._downstream_prompt(messages, prompt_ids, segment.token_ids)
        budget = self._answer_budget(len(answer_prompt), len(segment.token_ids))
        answer = await self._generate(uid, f"answer-{session_id}", answer_prompt, sampling_params, budget, priority)
        return answer_prompt, answer

    async def _downstream_prompt(
        self, messages: list[dict], prompt_ids: list[int], segment_ids: list[int]
    ) -> list[int]:
        """The answers' input for the configured conditioning (docs/algorithm.md, Rollout step 5)."""
        if self.skpo.conditioning == "unconditional":
            ids = list(prompt_ids)
        elif self.skpo.conditioning == "continual":
            ids = list(prompt_ids) + list(segment_ids)
        elif self.skpo.skip_format == "tokens":
            ids = list(segment_ids) + list(prompt_ids)
        else:
            ids = await self._segment_in_user_turn(messages, segment_ids)
        if len(ids) > self.setup.prompt_length:
            raise SKPOLengthError(
                f"downstream prompt of {len(ids)} tokens exceeds actor_rollout_ref.rollout.prompt_length="
                f"{self.setup.prompt_length}; SKPO does not truncate it. Raise rollout.prompt_length "
                "(skpo_verl.rollout.lengths.check_lengths(config) gives the worst case)."
            )
        return ids

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

    async def _complete_candidate(
        self, uid, prompt_ids, segment: KeptSegment, sampling_params, priority
    ) -> TokenOutput:
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
        rest = await self._generate(
            uid, "completion", list(prompt_ids) + list(candidate.token_ids), sampling_params, budget, priority
        )
        return TokenOutput(
            token_ids=list(candidate.token_ids) + list(rest.token_ids),
            log_probs=list(candidate.log_probs) + list(rest.log_probs),
            extra_fields=dict(rest.extra_fields),
        )

    def _completion_output(self, prompt_ids, completion: TokenOutput, started: float) -> AgentLoopOutput:
        """The completion as a plain single-turn output, for verl's reward path only (never stored)."""
        return AgentLoopOutput(**_single_turn_fields(prompt_ids, completion, started, {}))

    async def _generate(self, uid, label, prompt_ids, sampling_params, max_tokens, priority) -> TokenOutput:
        # Log-probs always: the kept segment's NLL and every row's rollout_log_probs need them, and
        # all rows of a batch must carry the same columns.
        params = dict(sampling_params, max_tokens=int(max_tokens), logprobs=True)
        request = f"{label} of prompt uid={uid}"
        output: TokenOutput = await self.server_manager.generate(
            request_id=self._request_id(uid, label, priority),
            prompt_ids=list(prompt_ids),
            sampling_params=params,
            priority=priority,
        )
        if output.stop_reason in ("aborted", "abort"):
            raise SKPORolloutError(f"{request} was aborted by the rollout server")
        if not output.token_ids:
            raise SKPORolloutError(f"{request} returned no tokens")
        if output.log_probs is None or len(output.log_probs) != len(output.token_ids):
            raise SKPORolloutError(f"{request} returned no per-token log-probs (asked with logprobs=True)")
        if len(output.token_ids) > max_tokens:
            raise SKPORolloutError(f"{request} returned {len(output.token_ids)} tokens for max_tokens={max_tokens}")
        return output

    def _request_id(self, uid: str, label: str, priority: int) -> str:
        # verl's router is sticky per request id (workers/rollout/router.py ~l.170-187): one id per
        # prompt sends its candidates and answers to one replica, where q and [s, q] are prefix-cache
        # hits. Under full determinism verl hands the id to vLLM itself, so requests need distinct ones.
        if self.rollout_config.get("full_determinism", False):
            return f"det-{priority}-{label}"
        return uid

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
        )

    def _join(self, uid: str) -> _PromptGroup:
        group = self._groups.get(uid)
        if group is None:
            group = self._groups[uid] = _PromptGroup(uid, self.setup.group_size, asyncio.get_running_loop())
            # Sessions that never arrive (a group smaller than rollout.n) must not leak the entry.
            asyncio.get_running_loop().call_later(2 * self.segment_timeout_s, self._forget, group)
        return group

    def _leave(self, group: _PromptGroup) -> None:
        group.finished_sessions += 1
        if group.finished_sessions >= group.size:
            self._forget(group)

    @classmethod
    def _forget(cls, group: _PromptGroup) -> None:
        if cls._groups.get(group.uid) is group:
            del cls._groups[group.uid]


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
    (answer_prompt, answer), completion = await _all_or_none([answering, completing])
    return answer_prompt, answer, completion


async def _all_or_none(requests) -> list:
    """Run requests concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(request) for request in requests]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
