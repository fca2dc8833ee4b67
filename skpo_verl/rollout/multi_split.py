"""Multi-split (`algorithm.skpo.num_splits` = K > 1; ours, beyond the paper; docs/algorithm.md, "Multi-split").

An extension of the `skpo_agent` loop (`skpo_verl.rollout.agent_loop`), whose `run` hands a
prompt here when K > 1. Stage 1 is the paper's rollout, steps 1-5; every stage k = 2..K runs
the same steps again, through the agent loop's own methods, on what was kept so far:

1. split length t_k: the driver's `skpo_later_split_lengths` column (`later_split_length`);
2-4. session 0 samples candidates continuing [q, s_1..s_{k-1}] for t_k tokens, cuts them and
   keeps s_k by the same rules (`SKPOAgentLoop._segments`), and publishes it;
5. every session answers again, from [s_1..s_k, q] (`SKPOAgentLoop._answer`).

A stage runs only while `core.split.next_stage_runs` allows it (no EOS in the last kept
candidate, the kept prefix within response_length); session 0 publishes None for the first
stage it skips. Session 0 returns `[up_1, down_1_0, up_2, down_2_0, ...]`, session i
`[down_1_i, down_2_i, ...]`; each row carries its stage (`skpo_stage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

from skpo_verl import rows
from skpo_verl.core.split import next_stage_runs
from skpo_verl.rollout.prompt_group import PromptGroup, group_session

if TYPE_CHECKING:  # the agent loop imports this module; these names are for annotations only
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

    from skpo_verl.rollout.agent_loop import KeptSegment, PromptRequest, SKPOAgentLoop


async def roll_out(loop: SKPOAgentLoop, request: PromptRequest, session_id: int) -> list[AgentLoopOutput]:
    """One session: per stage k session 0 keeps s_k (`_keep_segments`); every session answers from [s_1..s_k, q]."""
    started = time.perf_counter()
    outputs: list[AgentLoopOutput] = []
    stages = loop.skpo.num_splits
    forget_after_s = (stages + 1) * loop.segment_timeout_s
    with group_session(request.uid, loop.setup.group_size, session_id, forget_after_s) as group:
        producing = asyncio.ensure_future(_keep_segments(loop, request, group)) if session_id == 0 else None
        try:
            kept: list[KeptSegment] = []
            for stage in range(1, stages + 1):
                segment = await group.kept_segment(loop.segment_timeout_s, stage)
                if segment is None:
                    break
                kept.append(segment)
                answering = loop._answer(request, _joined(kept), session_id, label=f"stage{stage}-answer")
                answer_prompt, answer = await group.unless_a_sibling_fails(session_id, answering)
                if session_id == 0:
                    outputs.append(loop._upstream_output(_continued(request, kept[:-1]), segment, started))
                outputs.append(loop._output(answer_prompt, answer, segment, is_upstream=False, started=started))
            if producing is not None:
                await producing
        finally:
            if producing is not None:  # stopped early (a failure): end it, and collect its error
                producing.cancel()
                with contextlib.suppress(BaseException):
                    await producing
    return outputs


async def _keep_segments(loop: SKPOAgentLoop, request: PromptRequest, group: PromptGroup) -> None:
    """Session 0: keeps and publishes s_1, s_2, ... while `next_stage_runs` allows; None at the first skip."""
    try:
        kept: list[KeptSegment] = []
        for stage in range(1, loop.skpo.num_splits + 1):
            t_k = loop._split_length(request) if stage == 1 else later_split_length(loop, request, stage)
            if kept and not next_stage_runs(
                [len(s.token_ids) for s in kept], t_k, loop.setup.response_length, kept[-1].candidate_ended
            ):
                group.publish(None, stage)
                return
            (segment,) = await loop._segments(request, t_k, _continued(request, kept), stage)
            kept.append(dataclasses.replace(segment, stage=stage))
            group.publish(kept[-1], stage)
    except BaseException as error:
        group.fail(0, error)
        raise


def later_split_length(loop: SKPOAgentLoop, request: PromptRequest, stage: int) -> int:
    """t_k for stage k >= 2: the driver's `skpo_later_split_lengths` column, else drawn from the initial length."""
    if request.later_split_lengths is None:
        t_k = loop._drawn_split_length(request, rows.PROMPT_LATER_SPLIT_LENGTHS, "t_k", stage)
    elif len(request.later_split_lengths) < stage - 1:
        raise RuntimeError(
            f"prompt uid={request.uid}: the driver sent {len(request.later_split_lengths)} later split "
            f"lengths for algorithm.skpo.num_splits={loop.skpo.num_splits}."
        )
    else:
        t_k = request.later_split_lengths[stage - 2]
    return loop._checked_split_length(t_k, f"t_{stage}")


def _joined(kept: list[KeptSegment]) -> list[int]:
    """s_1..s_k, one after the other."""
    return [t for s in kept for t in s.token_ids]


def _continued(request: PromptRequest, kept: list[KeptSegment]) -> list[int]:
    """[q, s_1..s_k]: the problem followed by the segments kept so far, as one token sequence."""
    return list(request.prompt_ids) + _joined(kept)
