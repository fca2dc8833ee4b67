"""The `skpo_agent` agent loop itself: verl's registry -> hydra instantiation -> `run`, one
instance per session as verl's worker makes them, against a real tiny causal LM served
through verl's `server_manager.generate(...) -> TokenOutput` interface.

Expected values are recomputed here from what the server returned (token ids, log-probs),
independently of skpo_verl's own functions.
"""

import asyncio
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from skpo_verl.cpu.local_server import LocalTokenServer, compose_rollout_config, instantiate_agent_loop
from skpo_verl.demo.tiny_model import build_tiny_model

G = 3
SPLIT = 8  # t_q handed over by the driver's column
RESPONSE = 20  # actor_rollout_ref.rollout.response_length
PROBLEM = "What is 2+3? Answer:"
SAMPLING = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import verl.experimental.agent_loop  # noqa: F401 - registers skpo_agent through the plugin hook

    directory = build_tiny_model(str(tmp_path_factory.mktemp("tiny_model")))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    question = tokenizer.encode(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": PROBLEM}], add_generation_prompt=True, tokenize=False
        ),
        add_special_tokens=False,
    )
    return SimpleNamespace(dir=directory, tokenizer=tokenizer, model=model, eos=tokenizer.eos_token_id, q=question)


def make_config(tiny, *overrides, n=G, prompt_length=96):
    return compose_rollout_config(
        tiny.dir,
        [
            f"actor_rollout_ref.rollout.n={n}",
            "data.max_prompt_length=64",
            f"data.max_response_length={RESPONSE}",
            f"actor_rollout_ref.rollout.prompt_length={prompt_length}",
            *overrides,
        ],
    )


class Recorder:
    """Passes requests through and records (prompt_ids, max_tokens, output) in completion order."""

    def __init__(self, server):
        self.server = server
        self.calls = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        output = await self.server.generate(
            request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs
        )
        self.calls.append((list(prompt_ids), sampling_params["max_tokens"], output))
        return output

    def with_max_tokens(self, max_tokens):
        return [(prompt, output) for prompt, limit, output in self.calls if limit == max_tokens]


class EndsEarly:
    """Makes chosen candidates (by request order) end with EOS after a given number of tokens, EOS
    included; the EOS token's log-prob is the model's own, at temperature 1."""

    def __init__(self, server, model, eos, split_length, lengths):
        self.server, self.model, self.eos = server, model, eos
        self.split_length, self.lengths = split_length, lengths
        self.candidates = 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        index = None
        if sampling_params["max_tokens"] == self.split_length:
            index, self.candidates = self.candidates, self.candidates + 1
        if index not in self.lengths:
            return await self.server.generate(
                request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs
            )
        before_eos = self.lengths[index] - 1
        output = await self.server.generate(
            request_id, prompt_ids=prompt_ids, sampling_params=dict(sampling_params, max_tokens=before_eos), **kwargs
        )
        with torch.no_grad():
            logits = self.model(torch.tensor([list(prompt_ids) + output.token_ids])).logits[0, -1]
        eos_log_prob = float(torch.log_softmax(logits.float(), dim=-1)[self.eos])
        return output.model_copy(
            update={"token_ids": output.token_ids + [self.eos], "log_probs": output.log_probs + [eos_log_prob]}
        )


def serve(tiny, seed=0):
    return LocalTokenServer(tiny.model, [tiny.eos], default_max_tokens=RESPONSE, seed=seed)


def roll_out(tiny, config, server, sessions=range(G), split_length=SPLIT, uid="prompt-0", step=1):
    """Run the sessions of one prompt concurrently, as AgentLoopWorkerTQ._run_prompt does."""

    async def session(session_id):
        loop = instantiate_agent_loop("skpo_agent", config, server, tiny.tokenizer)
        columns = {} if split_length is None else {"skpo_split_length": split_length}
        return await loop.run(
            dict(SAMPLING),
            raw_prompt=[{"role": "user", "content": PROBLEM}],
            uid=uid,
            session_id=session_id,
            index=7,
            global_steps=step,
            **columns,
        )

    async def all_sessions():
        return await asyncio.gather(*(session(i) for i in sessions), return_exceptions=True)

    return asyncio.run(all_sessions())


def expected_segment(candidates, split_length, eos, rule="median", step=0):
    """docs/algorithm.md, Rollout steps 3-4, by hand.

    Cut early-EOS candidates at half, keep the median (or extreme) NLL one.
    """
    kept, nlls = [], []
    for output in candidates:
        tokens, log_probs = output.token_ids, output.log_probs
        ended = len(tokens) < split_length or tokens[-1] == eos
        keep = max(1, len(tokens) // 2) if ended else min(len(tokens), split_length)
        kept.append(tokens[:keep])
        nlls.append(-float(np.mean(log_probs[:keep])))
    nlls = np.array(nlls)
    if rule == "median":
        chosen = int(np.argmin(np.abs(nlls - np.median(nlls))))
    else:
        chosen = int(np.argmin(nlls) if step % 2 == 0 else np.argmax(nlls))
    return kept[chosen], nlls[chosen], nlls


def test_skpo_agent_is_registered_with_verl_and_flags_validation(tiny):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker, _agent_loop_registry

    assert _agent_loop_registry["skpo_agent"] == {"_target_": "skpo_verl.rollout.agent_loop.SKPOAgentLoop"}
    assert AgentLoopWorker._run_agent_loop.__skpo_wrapped__


def test_one_upstream_and_g_downstream_rows_with_roles_and_fields(tiny):
    from skpo_verl.rollout.prompt_group import OPEN_GROUPS

    recorder = Recorder(serve(tiny))
    results = roll_out(tiny, make_config(tiny), recorder)

    assert [len(outputs) for outputs in results] == [2, 1, 1]
    (upstream, first), (second,), (third,) = results
    downstream = [first, second, third]
    assert upstream.skpo_is_upstream == 1 and [row.skpo_is_upstream for row in downstream] == [0, 0, 0]

    candidates = recorder.with_max_tokens(SPLIT)
    answers = recorder.with_max_tokens(RESPONSE)
    assert len(candidates) == G and all(prompt == tiny.q for prompt, _ in candidates)
    assert len(answers) == G
    segment, nll, _ = expected_segment([output for _, output in candidates], SPLIT, tiny.eos)

    assert upstream.prompt_ids == tiny.q
    assert upstream.response_ids == segment
    assert upstream.response_mask == [1] * len(segment)
    kept_candidate = next(out for _, out in candidates if out.token_ids[: len(segment)] == segment)
    assert upstream.response_logprobs == kept_candidate.log_probs[: len(segment)]
    for row in [upstream, *downstream]:
        assert row.skpo_split_length == SPLIT
        assert row.skpo_segment_length == len(segment)
        assert row.skpo_segment_nll == pytest.approx(nll)
        assert row.skpo_candidate_tokens == sum(len(out.token_ids) for _, out in candidates)
        assert isinstance(row.extra_fields["min_global_steps"], int)
        assert isinstance(row.extra_fields["max_global_steps"], int)
        assert len(row.response_logprobs) == len(row.response_ids)
    answer_by_prompt_and_tokens = {(tuple(prompt), tuple(out.token_ids)) for prompt, out in answers}
    for row in downstream:
        assert (tuple(row.prompt_ids), tuple(row.response_ids)) in answer_by_prompt_and_tokens
        assert 1 <= len(row.response_ids) <= RESPONSE
    fields = upstream.as_dict()
    assert fields["skpo_is_upstream"].dtype == torch.int64 and fields["skpo_is_upstream"].item() == 1
    assert fields["skpo_segment_nll"].dtype == torch.float32
    assert OPEN_GROUPS == {}


@pytest.mark.parametrize(
    "overrides, layout",
    [
        ([], "segment+question"),
        (["+algorithm.skpo.skip_format=tokens"], "segment+question"),
        (["+algorithm.skpo.conditioning=continual"], "question+segment"),
        (["+algorithm.skpo.conditioning=unconditional"], "question"),
        (["+algorithm.skpo.skip_format=chat"], "segment-in-user-turn"),
    ],
)
def test_downstream_prompt_layout_per_conditioning(tiny, overrides, layout):
    results = roll_out(tiny, make_config(tiny, *overrides), serve(tiny))
    upstream = results[0][0]
    segment = upstream.response_ids
    if layout == "segment+question":
        expected = segment + tiny.q
    elif layout == "question+segment":
        expected = tiny.q + segment
    elif layout == "question":
        expected = tiny.q
    else:
        text = tiny.tokenizer.decode(segment, skip_special_tokens=True) + "\n\n" + PROBLEM
        expected = tiny.tokenizer.encode(
            tiny.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )
    downstream = [results[0][1], results[1][0], results[2][0]]
    assert all(row.prompt_ids == expected for row in downstream)
    assert upstream.prompt_ids == tiny.q


def test_the_kept_segment_is_the_median_nll_candidate(tiny):
    recorder = Recorder(serve(tiny, seed=3))
    results = roll_out(tiny, make_config(tiny, n=5), recorder, sessions=range(5))

    candidates = [output for _, output in recorder.with_max_tokens(SPLIT)]
    segment, nll, nlls = expected_segment(candidates, SPLIT, tiny.eos)
    assert len(set(np.round(nlls, 6))) == 5  # distinct NLLs, so the median candidate is unique
    assert nll == pytest.approx(np.sort(nlls)[2])
    upstream = results[0][0]
    assert upstream.response_ids == segment
    assert upstream.skpo_segment_nll == pytest.approx(nll)
    assert all(row.prompt_ids[: len(segment)] == segment for outputs in results for row in outputs[-1:])


@pytest.mark.parametrize("step, pick", [(2, np.min), (3, np.max)])
def test_extreme_selection_alternates_min_and_max_nll_by_step(tiny, step, pick):
    recorder = Recorder(serve(tiny, seed=4))
    config = make_config(tiny, "+algorithm.skpo.selection=extreme", n=5)
    results = roll_out(tiny, config, recorder, sessions=range(5), step=step)

    candidates = [output for _, output in recorder.with_max_tokens(SPLIT)]
    segment, nll, nlls = expected_segment(candidates, SPLIT, tiny.eos, rule="extreme", step=step)
    assert nll == pytest.approx(pick(nlls))
    assert results[0][0].response_ids == segment


def test_num_candidates_sets_the_candidate_requests_and_the_median_is_taken_among_them(tiny):
    """algorithm.skpo.num_candidates=3 with G=5: 3 candidate requests, 5 answers, the median of the 3 kept."""
    recorder = Recorder(serve(tiny, seed=3))
    config = make_config(tiny, "+algorithm.skpo.num_candidates=3", n=5)
    results = roll_out(tiny, config, recorder, sessions=range(5))

    candidates = [output for _, output in recorder.with_max_tokens(SPLIT)]
    assert len(candidates) == 3
    assert len(recorder.with_max_tokens(RESPONSE)) == 5
    segment, nll, nlls = expected_segment(candidates, SPLIT, tiny.eos)
    assert len(set(np.round(nlls, 6))) == 3 and nll == pytest.approx(np.sort(nlls)[1])
    upstream = results[0][0]
    assert upstream.response_ids == segment
    assert upstream.skpo_segment_nll == pytest.approx(nll)
    assert upstream.skpo_candidate_tokens == sum(len(out.token_ids) for out in candidates)
    assert [len(outputs) for outputs in results] == [2, 1, 1, 1, 1]


def test_early_eos_candidates_are_cut_at_half_their_own_length(tiny):
    split = 12
    # Candidate 1 ends exactly at t_q with EOS: it also ended within t_q (docs/algorithm.md, Rollout step 3).
    lengths = {0: 5, 1: split, 2: 9}
    recorder = Recorder(EndsEarly(serve(tiny, seed=5), tiny.model, tiny.eos, split, lengths))
    results = roll_out(tiny, make_config(tiny), recorder, split_length=split)

    candidates = [output for _, output in recorder.with_max_tokens(split)]
    assert sorted(len(out.token_ids) for out in candidates) == [5, 9, 12]
    assert all(out.token_ids[-1] == tiny.eos for out in candidates)
    segment, nll, _ = expected_segment(candidates, split, tiny.eos)
    upstream = results[0][0]
    assert len(upstream.response_ids) in {5 // 2, 12 // 2, 9 // 2}
    assert upstream.response_ids == segment
    assert tiny.eos not in upstream.response_ids
    assert upstream.skpo_segment_nll == pytest.approx(nll)
    assert all(outputs[-1].skpo_early_eos_candidates == 3 for outputs in results)


def test_one_early_candidate_among_full_ones_is_counted(tiny):
    recorder = Recorder(EndsEarly(serve(tiny, seed=6), tiny.model, tiny.eos, SPLIT, {1: 4}))
    results = roll_out(tiny, make_config(tiny), recorder)

    candidates = [output for _, output in recorder.with_max_tokens(SPLIT)]
    ended = sum(len(out.token_ids) < SPLIT or out.token_ids[-1] == tiny.eos for out in candidates)
    assert ended >= 1 and any(len(out.token_ids) == 4 for out in candidates)
    assert results[0][0].skpo_early_eos_candidates == ended
    assert results[0][0].response_ids == expected_segment(candidates, SPLIT, tiny.eos)[0]


class Barrier:
    """Holds each request until all G requests of its kind (candidate or answer) are in flight together;
    requests sent one after another would never all arrive, and the barrier times out."""

    def __init__(self, server, group_size):
        self.server, self.group_size = server, group_size
        self.arrived = {SPLIT: 0, RESPONSE: 0}
        self.all_in = {SPLIT: asyncio.Event(), RESPONSE: asyncio.Event()}

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        kind = sampling_params["max_tokens"]
        self.arrived[kind] += 1
        if self.arrived[kind] == self.group_size:
            self.all_in[kind].set()
        await asyncio.wait_for(self.all_in[kind].wait(), timeout=10)
        return await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)


def test_the_g_candidates_and_the_g_answers_of_a_prompt_are_concurrent_requests(tiny):
    barrier = Barrier(serve(tiny), G)
    results = roll_out(tiny, make_config(tiny), barrier)
    assert [len(outputs) for outputs in results] == [2, 1, 1]
    assert barrier.arrived == {SPLIT: G, RESPONSE: G}


def test_split_length_falls_back_to_the_papers_initial_length_without_the_driver_column(tiny):
    recorder = Recorder(serve(tiny))
    config = make_config(tiny, "+algorithm.skpo.tracker.initial_length=36")
    results = roll_out(tiny, config, recorder, split_length=None, uid="fallback-uid")

    # t ~ U{ceil(36/6), ..., floor(36/2)} = U{6..18}, drawn from a generator seeded by (seed, uid).
    expected = int(np.random.default_rng([0, zlib.crc32(b"fallback-uid")]).integers(6, 18, endpoint=True))
    assert results[0][0].skpo_split_length == expected
    assert [limit for _, limit, _ in recorder.calls].count(expected) >= G


class FailsOn:
    """Raises on the `failing`-th request whose max_tokens equals `max_tokens`; others can be held."""

    def __init__(self, server, max_tokens, failing, hold_others=False):
        self.server, self.max_tokens, self.failing, self.hold_others = server, max_tokens, failing, hold_others
        self.seen = 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        if sampling_params["max_tokens"] == self.max_tokens:
            self.seen += 1
            if self.seen == self.failing:
                await asyncio.sleep(0.05)
                raise ConnectionError("rollout server went away")
            if self.hold_others:
                await asyncio.Event().wait()  # a request that would never finish on its own
        return await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)


def test_a_failing_candidate_request_fails_every_session_promptly(tiny):
    from skpo_verl.rollout.agent_loop import SKPORolloutError
    from skpo_verl.rollout.prompt_group import OPEN_GROUPS

    started = time.monotonic()
    results = roll_out(tiny, make_config(tiny), FailsOn(serve(tiny), SPLIT, failing=2, hold_others=True))
    assert time.monotonic() - started < 30  # a hang would wait for the 1800 s backstop
    assert isinstance(results[0], ConnectionError)
    assert all(isinstance(r, SKPORolloutError) and "session 0 failed" in str(r) for r in results[1:])
    assert OPEN_GROUPS == {}


def test_a_failing_answer_request_stops_the_sibling_answers(tiny):
    from skpo_verl.rollout.agent_loop import SKPORolloutError
    from skpo_verl.rollout.prompt_group import OPEN_GROUPS

    started = time.monotonic()
    results = roll_out(tiny, make_config(tiny), FailsOn(serve(tiny), RESPONSE, failing=1, hold_others=True))
    assert time.monotonic() - started < 30  # a hang would wait for the 1800 s backstop
    failed = [r for r in results if isinstance(r, ConnectionError)]
    stopped = [r for r in results if isinstance(r, SKPORolloutError)]
    assert len(failed) == 1 and len(stopped) == G - 1
    assert all("because session" in str(r) for r in stopped)
    assert OPEN_GROUPS == {}


def test_sessions_time_out_when_no_session_produces_the_segment(tiny):
    from skpo_verl.rollout.agent_loop import SKPORolloutError
    from skpo_verl.rollout.prompt_group import OPEN_GROUPS

    config = make_config(tiny, "+algorithm.skpo.rollout_timeout_s=0.5")
    started = time.monotonic()
    results = roll_out(tiny, config, serve(tiny), sessions=[1, 2], uid="orphan")
    assert 0.5 <= time.monotonic() - started < 30
    assert all(isinstance(r, SKPORolloutError) and "no kept segment after 0.5 s" in str(r) for r in results)
    OPEN_GROUPS.pop("orphan", None)  # the two sessions of a group of three never complete it


def test_a_downstream_prompt_over_the_prompt_budget_fails_instead_of_truncating(tiny):
    from skpo_verl.rollout.lengths import SKPOLengthError

    results = roll_out(tiny, make_config(tiny, prompt_length=len(tiny.q) + 3), serve(tiny))
    assert all(isinstance(r, SKPOLengthError) for r in results)
    assert "actor_rollout_ref.rollout.prompt_length" in str(results[0])


def test_answers_past_the_context_fail_unless_clamped_to_the_context_left(tiny):
    from skpo_verl.rollout.lengths import SKPOLengthError

    # Any kept segment (>= 1 token) before q leaves fewer than RESPONSE tokens of this context.
    context = len(tiny.q) + RESPONSE
    limit = f"actor_rollout_ref.rollout.max_model_len={context}"
    refused = roll_out(tiny, make_config(tiny, limit), serve(tiny))
    assert all(isinstance(r, SKPOLengthError) for r in refused)
    assert f"max_model_len={context}" in str(refused[0]) and "clamp_answers_to_context" in str(refused[0])

    recorder = Recorder(serve(tiny))
    results = roll_out(tiny, make_config(tiny, limit, "+algorithm.skpo.clamp_answers_to_context=true"), recorder)
    assert not any(isinstance(r, BaseException) for r in results)
    answers = [(prompt, max_tokens, output) for prompt, max_tokens, output in recorder.calls if prompt != tiny.q]
    assert len(answers) == G
    for prompt, max_tokens, output in answers:
        assert len(prompt) > len(tiny.q)  # [s, q]
        assert max_tokens == context - len(prompt) < RESPONSE
        assert len(output.token_ids) <= max_tokens


def test_validation_through_verls_worker_is_single_turn_generation_from_q(tiny):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    recorder = Recorder(serve(tiny))
    config = make_config(tiny)
    worker = AgentLoopWorker(config, llm_client=recorder)

    async def validate():
        return await worker._run_agent_loop(
            dict(SAMPLING),
            {"step": 1, "sample_index": 7, "rollout_n": 0, "validate": True},
            agent_name="skpo_agent",
            raw_prompt=[{"role": "user", "content": PROBLEM}],
            uid="val-uid",
            session_id=0,
            index=7,
            global_steps=1,
        )

    output = asyncio.run(validate())
    assert [(prompt, limit) for prompt, limit, _ in recorder.calls] == [(tiny.q, RESPONSE)]
    prompt = output.prompt_ids[0][output.attention_mask[0, : output.prompt_ids.shape[1]].bool()]
    assert prompt.tolist() == tiny.q
    response_length = int(output.response_mask.sum())
    assert output.response_ids[0, :response_length].tolist() == recorder.calls[0][2].token_ids


def test_a_candidate_ending_at_t_q_on_any_declared_eos_id_ended(tiny, tmp_path):
    """Llama-3 declares several EOS ids (generation_config.json's list); each one ends a candidate."""
    import json
    import shutil

    from skpo_verl.rollout.lengths import model_eos_token_ids

    second_eos = 7
    model_dir = shutil.copytree(tiny.dir, tmp_path / "two_eos")
    generation = json.loads((model_dir / "generation_config.json").read_text())
    generation["eos_token_id"] = [tiny.eos, second_eos]
    (model_dir / "generation_config.json").write_text(json.dumps(generation))
    config = compose_rollout_config(
        str(model_dir),
        [
            f"actor_rollout_ref.rollout.n={G}",
            "data.max_prompt_length=64",
            f"data.max_response_length={RESPONSE}",
            "actor_rollout_ref.rollout.prompt_length=96",
        ],
    )
    assert model_eos_token_ids(config, tiny.tokenizer) == sorted([tiny.eos, second_eos])

    # Candidate 0 ends with the second EOS id exactly at t_q: it ended within t_q and is cut at half.
    recorder = Recorder(EndsEarly(serve(tiny, seed=3), tiny.model, second_eos, SPLIT, {0: SPLIT}))
    results = roll_out(tiny, config, recorder)
    candidates = [output for _, output in recorder.with_max_tokens(SPLIT)]
    assert [len(out.token_ids) for out in candidates].count(SPLIT) == G
    ended = [out.token_ids[-1] in (tiny.eos, second_eos) for out in candidates]
    assert results[0][0].skpo_early_eos_candidates == sum(ended) >= 1


def test_a_session_waiting_for_the_segment_is_told_why_the_group_failed():
    # Session 2 waits for the kept segment; session 1 fails first (here: its own wait timed out).
    # Session 2's error names session 1 and its cause, whichever of the two timers fires first.
    from skpo_verl.rollout.prompt_group import PromptGroup, SKPORolloutError

    async def scenario():
        group = PromptGroup("q7", size=3, loop=asyncio.get_running_loop())
        waiting = asyncio.ensure_future(group.kept_segment(timeout_s=30))
        await asyncio.sleep(0)
        group.fail(1, SKPORolloutError("prompt uid=q7: no kept segment after 0.5 s (session 0 did not publish it)"))
        with pytest.raises(SKPORolloutError) as raised:
            await waiting
        return str(raised.value)

    assert asyncio.run(scenario()) == (
        "prompt uid=q7: session 1 failed before the kept segment was ready (SKPORolloutError: "
        "prompt uid=q7: no kept segment after 0.5 s (session 0 did not publish it))"
    )
