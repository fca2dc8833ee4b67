"""The `skpo_agent` agent loop: SKPO's skip-connected rollout of one prompt (SKPO.md §2).

verl's V1 worker (`AgentLoopWorkerTQ._run_prompt`, verl/trainer/ppo/v1/agent_loop_tq.py
l.107-148) starts the G = `actor_rollout_ref.rollout.n` sessions of one prompt together, in
one event loop, and stores every output a session returns as a TransferQueue row. SKPO's
rollout maps onto those sessions:

- session 0 samples the G candidates from q (`max_tokens = t_q`, with log-probs), cuts a
  candidate that ended (EOS) within t_q at half its own length, keeps the segment s chosen by
  the selection rule (median NLL by default) and publishes it to its siblings; then it
  answers from the downstream input. It returns `[upstream (q -> s), downstream_0]`.
- session i > 0 waits for s and answers from the downstream input: `[downstream_i]`.

Candidates and answers are independent server requests and run concurrently; the only
wait is inside one prompt. If any request of a prompt fails, every session of that prompt
fails at once (nothing waits for a segment or a sibling that will never come).

Scoring stays verl's: `_agent_loop_postprocess` sends each session's final output through
the reward loop (rule rewards, custom reward functions and reward models alike) and
copies session 0's score onto its upstream row, which the `skpo` estimator replaces with
the mean of the G downstream rewards (docs/row_contract.md).

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
from dataclasses import dataclass
from typing import Any, Awaitable

import numpy as np
import torch
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
)
from verl.workers.rollout.replica import TokenOutput

from skpo_verl import rows
from skpo_verl.rollout.lengths import CHAT_SEPARATOR, CLAMP_KEY, SKPOLengthError, model_length_limit
from skpo_verl.config import skpo_config_from_algorithm
from skpo_verl.core.selection import mean_nll, select_segment
from skpo_verl.core.split import cut_early_candidate, fixed_split_length, sample_split_length

logger = logging.getLogger(__name__)

AGENT_NAME = "skpo_agent"


class SKPORolloutError(RuntimeError):
    """A request of the prompt failed, or the server broke the generate contract."""


class SKPOAgentLoopOutput(AgentLoopOutput):
    """An agent-loop output carrying the row-contract fields (docs/row_contract.md).

    verl turns each field of an `AgentLoopOutput` subclass into a top-level TransferQueue
    column (`as_dict` dumps the fields that were set), so every output sets all of them.
    """

    skpo_is_upstream: int
    skpo_split_length: int
    skpo_segment_length: int
    skpo_segment_nll: float
    skpo_candidate_tokens: int
    skpo_early_eos_candidates: int

    def as_dict(self) -> dict[str, Any]:
        """verl's columns plus the SKPO fields as 0-d tensors, so a batch stacks them into [B] columns."""
        output = super().as_dict()
        for name in rows.SKPO_FIELDS:
            dtype = torch.float32 if name == rows.SEGMENT_NLL else torch.int64
            output[name] = torch.tensor(output[name], dtype=dtype)
        return output


_DECLARED = tuple(name for name in SKPOAgentLoopOutput.model_fields if name.startswith("skpo_"))
assert set(_DECLARED) == set(rows.SKPO_FIELDS), f"row contract {rows.SKPO_FIELDS} != declared fields {_DECLARED}"


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
                    f"prompt uid={self.uid}: session {session_id} failed before the kept segment was ready"
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
    _groups: dict[str, _PromptGroup] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skpo = skpo_config_from_algorithm(self.config.algorithm)
        self.group_size = int(self.rollout_config.n)
        self.prompt_length = int(self.rollout_config.prompt_length)
        self.response_length = int(self.rollout_config.response_length)
        self.max_model_len, self.max_model_len_source = model_length_limit(self.config)
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
        answer = await self._generate(uid, "answer", prompt_ids, sampling_params, self.response_length, priority)
        empty = KeptSegment([], [], 0.0, 0, 0, 0, {})
        return self._output(prompt_ids, answer, empty, is_upstream=False, started=started)

    async def _skip_connected(self, messages, prompt_ids, sampling_params, priority, kwargs) -> list[AgentLoopOutput]:
        uid, session_id = str(kwargs["uid"]), int(kwargs["session_id"])
        if not 0 <= session_id < self.group_size:
            raise RuntimeError(
                f"skpo_agent got session_id={session_id} for actor_rollout_ref.rollout.n={self.group_size}: "
                "SKPO takes G from rollout.n and does not support a per-prompt __rollout_n__ column."
            )
        group = self._join(uid)
        started = time.perf_counter()
        try:
            if session_id == 0:
                try:
                    split_length = self._split_length(kwargs, uid)
                    segment = await asyncio.wait_for(
                        self._kept_segment(uid, prompt_ids, split_length, sampling_params, priority, kwargs),
                        self.segment_timeout_s,
                    )
                except asyncio.TimeoutError:
                    raise SKPORolloutError(
                        f"prompt uid={uid}: candidates not done after {self.segment_timeout_s:g} s"
                    ) from None
                group.publish(segment)
            else:
                segment = await group.kept_segment(self.segment_timeout_s)
            answer_prompt = await self._downstream_prompt(messages, prompt_ids, segment.token_ids)
            answer_budget = self._answer_budget(len(answer_prompt))
            answer = await group.unless_a_sibling_fails(
                session_id,
                self._generate(uid, f"answer-{session_id}", answer_prompt, sampling_params, answer_budget, priority),
            )
        except BaseException as error:
            group.fail(session_id, error)
            logger.error("skpo_agent: prompt uid=%s session %d failed: %r", uid, session_id, error)
            raise
        finally:
            self._leave(group)
        downstream = self._output(answer_prompt, answer, segment, is_upstream=False, started=started)
        if session_id != 0:
            return [downstream]
        upstream_answer = TokenOutput(
            token_ids=segment.token_ids, log_probs=segment.log_probs, extra_fields=segment.extra_fields
        )
        upstream = self._output(prompt_ids, upstream_answer, segment, is_upstream=True, started=started)
        return [upstream, downstream]

    async def _kept_segment(self, uid, prompt_ids, split_length, sampling_params, priority, kwargs) -> KeptSegment:
        """Sample G candidates stopped at t_q, cut early-EOS ones at half, keep one by the selection rule."""
        candidates = await _all_or_none(
            self._generate(uid, f"candidate-{k}", prompt_ids, sampling_params, split_length, priority)
            for k in range(self.group_size)
        )
        ended = [self._ended(candidate.token_ids, split_length) for candidate in candidates]
        kept_lengths = [
            cut_early_candidate(len(candidate.token_ids), split_length, has_ended)
            for candidate, has_ended in zip(candidates, ended)
        ]
        nlls = [mean_nll(candidate.log_probs[:keep]) for candidate, keep in zip(candidates, kept_lengths)]
        chosen = select_segment(nlls, self.skpo.selection, int(kwargs.get("global_steps", 0)))
        kept, keep = candidates[chosen], kept_lengths[chosen]
        return KeptSegment(
            token_ids=list(kept.token_ids[:keep]),
            log_probs=list(kept.log_probs[:keep]),
            nll=nlls[chosen],
            split_length=split_length,
            candidate_tokens=sum(len(candidate.token_ids) for candidate in candidates),
            early_eos_candidates=sum(ended),
            extra_fields=dict(kept.extra_fields),
        )

    def _ended(self, token_ids: list[int], split_length: int) -> bool:
        """Whether a candidate stopped on its own within t_q tokens.

        vLLM reports stop_reason "completed" for EOS and for max_tokens alike, so a candidate
        shorter than t_q ended by itself; one of exactly t_q tokens ended if its last token is EOS.
        """
        return len(token_ids) < split_length or token_ids[-1] == self.tokenizer.eos_token_id

    def _split_length(self, kwargs: dict, uid: str) -> int:
        """t_q from the driver's `skpo_split_length` column, else drawn from the paper's initial L."""
        value = kwargs.get(rows.PROMPT_SPLIT_LENGTH)
        if value is not None:
            split_length = int(value)
        else:
            _warn_once(
                f"skpo_agent: prompts carry no '{rows.PROMPT_SPLIT_LENGTH}' column (added by skpo_verl's V1 trainer "
                f"shim); drawing t_q from the initial length L={self.skpo.tracker.initial_length:g}."
            )
            cfg, length = self.skpo, self.skpo.tracker.initial_length
            if cfg.split_rule == "fixed":
                split_length = fixed_split_length(
                    length, cfg.split_low, cfg.split_high, int(kwargs.get("global_steps", 0))
                )
            else:
                rng = np.random.default_rng([cfg.seed, zlib.crc32(uid.encode())])
                split_length = sample_split_length(length, cfg.split_low, cfg.split_high, rng)
        if not 1 <= split_length <= self.response_length:
            raise SKPOLengthError(
                f"split length t_q={split_length} is outside [1, actor_rollout_ref.rollout.response_length="
                f"{self.response_length}]: the kept segment is the upstream row's response. "
                "skpo_verl.rollout.lengths.check_lengths(config) checks this at start-up."
            )
        return split_length

    async def _downstream_prompt(
        self, messages: list[dict], prompt_ids: list[int], segment_ids: list[int]
    ) -> list[int]:
        """The answers' input for the configured conditioning (SKPO.md §2.4 and its ablations)."""
        if self.skpo.conditioning == "unconditional":
            ids = list(prompt_ids)
        elif self.skpo.conditioning == "continual":
            ids = list(prompt_ids) + list(segment_ids)
        elif self.skpo.skip_format == "tokens":
            ids = list(segment_ids) + list(prompt_ids)
        else:
            ids = await self._segment_in_user_turn(messages, segment_ids)
        if len(ids) > self.prompt_length:
            raise SKPOLengthError(
                f"downstream prompt of {len(ids)} tokens exceeds actor_rollout_ref.rollout.prompt_length="
                f"{self.prompt_length}; SKPO does not truncate it. Raise rollout.prompt_length "
                "(skpo_verl.rollout.lengths.check_lengths(config) gives the worst case)."
            )
        return ids

    def _answer_budget(self, prompt_tokens: int) -> int:
        """An answer's max_tokens: response_length, or the context left if clamp_answers_to_context allows."""
        if self.max_model_len is None or prompt_tokens + self.response_length <= self.max_model_len:
            return self.response_length
        left = self.max_model_len - prompt_tokens
        if self.skpo.clamp_answers_to_context and left >= 1:
            return left
        raise SKPOLengthError(
            f"downstream prompt of {prompt_tokens} tokens plus response_length={self.response_length} exceeds "
            f"{self.max_model_len_source}={self.max_model_len}; the server would cut the answer short. "
            f"skpo_verl.rollout.lengths.check_lengths(config) gives the worst case; {CLAMP_KEY}=true caps answers instead."
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
        # verl's router is sticky per request id (workers/rollout/router.py l.170-187): one id per
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
        extra_fields.update({"turn_scores": [], "tool_rewards": []})  # the schema of verl's own agent loops
        num_preempted = answer.num_preempted if answer.num_preempted is not None else -1
        return SKPOAgentLoopOutput(
            prompt_ids=list(prompt_ids),
            response_ids=list(answer.token_ids),
            response_mask=[1] * len(answer.token_ids),
            response_logprobs=list(answer.log_probs),
            num_turns=2,
            metrics=AgentLoopMetrics(generate_sequences=time.perf_counter() - started, num_preempted=num_preempted),
            extra_fields=extra_fields,
            skpo_is_upstream=int(is_upstream),
            skpo_split_length=segment.split_length,
            skpo_segment_length=len(segment.token_ids),
            skpo_segment_nll=segment.nll,
            skpo_candidate_tokens=segment.candidate_tokens,
            skpo_early_eos_candidates=segment.early_eos_candidates,
        )

    def _join(self, uid: str) -> _PromptGroup:
        group = self._groups.get(uid)
        if group is None:
            group = self._groups[uid] = _PromptGroup(uid, self.group_size, asyncio.get_running_loop())
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
