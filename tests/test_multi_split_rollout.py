"""Multi-split rollout (`algorithm.skpo.num_splits` = 2) through verl's agent-loop classes.

First the `skpo_agent` loop itself, one instance per session as verl makes them, against the
local tiny model (as `test_agent_loop.py`); then verl's V1 worker path (`AgentLoopWorkerTQ`,
its reward loop and TransferQueue, as `test_agent_loop_v1.py`), where each answer must keep
its own reward although verl copies a session's last score onto its earlier outputs.
Expected values are recomputed here from what the server returned.
"""

import asyncio

import pytest
from test_agent_loop import PROBLEM, RESPONSE, SAMPLING, EndsEarly, Recorder, expected_segment, make_config, serve
from test_agent_loop_v1 import PROBLEMS
from v1_rollout import question_ids, tiny_model, toy_task_rollout

from skpo_verl import rows as R
from skpo_verl.cpu.local_server import instantiate_agent_loop

G = 3
T1, T2 = 8, 5  # the driver's t_1 (skpo_split_length) and t_2 (skpo_later_split_lengths)
TWO_SPLITS = "+algorithm.skpo.num_splits=2"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model and q, as `test_agent_loop.py` builds them."""
    return tiny_model(tmp_path_factory.mktemp("tiny_model"), PROBLEM)


def roll_out(tiny, config, server, t_2=T2, uid="prompt-0", step=1):
    """The G sessions of one prompt, concurrently, as AgentLoopWorkerTQ._run_prompt runs them."""

    async def session(session_id):
        loop = instantiate_agent_loop("skpo_agent", config, server, tiny.tokenizer)
        return await loop.run(
            dict(SAMPLING),
            raw_prompt=[{"role": "user", "content": PROBLEM}],
            uid=uid,
            session_id=session_id,
            index=7,
            global_steps=step,
            skpo_split_length=T1,
            skpo_later_split_lengths=[t_2],
        )

    async def all_sessions():
        return await asyncio.gather(*(session(i) for i in range(G)), return_exceptions=True)

    return asyncio.run(all_sessions())


def test_two_splits_give_two_stages_of_rows_with_their_prompts(tiny):
    from skpo_verl.rollout.prompt_group import OPEN_GROUPS

    recorder = Recorder(serve(tiny))
    results = roll_out(tiny, make_config(tiny, TWO_SPLITS), recorder)

    # Session 0: [up_1, down_1_0, up_2, down_2_0]; sessions 1, 2: [down_1_i, down_2_i].
    assert [len(outputs) for outputs in results] == [4, 2, 2]
    up_1, first_1, up_2, first_2 = results[0]
    assert [row.skpo_is_upstream for row in results[0]] == [1, 0, 1, 0]
    assert [row.skpo_stage for row in results[0]] == [1, 1, 2, 2]
    assert all([row.skpo_stage for row in results[i]] == [1, 2] for i in (1, 2))

    stage_1 = [out for prompt, out in recorder.with_max_tokens(T1)]
    assert len(stage_1) == G and all(prompt == tiny.q for prompt, _ in recorder.with_max_tokens(T1))
    s_1, _, _ = expected_segment(stage_1, T1, tiny.eos)
    assert up_1.prompt_ids == tiny.q and up_1.response_ids == s_1
    assert len(s_1) == T1 and up_1.skpo_segment_ended == 0  # the tiny model does not stop within 8 tokens

    # Stage 2's candidates continue [q, s_1]; s_2 is their median-NLL one; its upstream row is ([q, s_1], s_2).
    stage_2 = recorder.with_max_tokens(T2)
    assert len(stage_2) == G and all(prompt == tiny.q + s_1 for prompt, _ in stage_2)
    s_2, nll_2, _ = expected_segment([out for _, out in stage_2], T2, tiny.eos)
    assert up_2.prompt_ids == tiny.q + s_1 and up_2.response_ids == s_2
    assert up_2.skpo_segment_nll == pytest.approx(nll_2)
    assert up_2.skpo_candidate_tokens == sum(len(out.token_ids) for _, out in stage_2)

    # Answers: stage 1 from [s_1, q], stage 2 from the skip-connected input of both, [s_1, s_2, q].
    downstream_1 = [first_1, results[1][0], results[2][0]]
    downstream_2 = [first_2, results[1][1], results[2][1]]
    assert all(row.prompt_ids == s_1 + tiny.q for row in downstream_1)
    assert all(row.prompt_ids == s_1 + s_2 + tiny.q for row in downstream_2)
    answers = {(tuple(p), tuple(out.token_ids)) for p, out in recorder.with_max_tokens(RESPONSE)}
    assert len(answers) == 2 * G
    assert all((tuple(row.prompt_ids), tuple(row.response_ids)) in answers for row in downstream_1 + downstream_2)
    assert all(row.skpo_segment_length == len(s_2) for row in [up_2, *downstream_2])
    assert OPEN_GROUPS == {}


def test_an_ended_stage_one_segment_skips_stage_two(tiny):
    # Every stage-1 candidate ends with EOS as its 4th token: the kept one is cut at 2 and ended.
    server = EndsEarly(serve(tiny), tiny.model, tiny.eos, T1, {0: 4, 1: 4, 2: 4})
    recorder = Recorder(server)
    results = roll_out(tiny, make_config(tiny, TWO_SPLITS), recorder)

    assert [len(outputs) for outputs in results] == [2, 1, 1]
    assert all(row.skpo_stage == 1 and row.skpo_segment_ended == 1 for outputs in results for row in outputs)
    assert len(results[0][0].response_ids) == 2
    assert recorder.with_max_tokens(T2) == []  # no stage-2 candidate was requested
    assert len(recorder.with_max_tokens(RESPONSE)) == G


def test_stage_two_is_skipped_when_the_kept_prefix_would_fill_the_response_budget(tiny):
    # |s_1| = 8 and t_2 = 12: 8 + 12 = 20 = response_length leaves nothing for the rest of the response.
    recorder = Recorder(serve(tiny))
    results = roll_out(tiny, make_config(tiny, TWO_SPLITS), recorder, t_2=RESPONSE - T1)
    assert [len(outputs) for outputs in results] == [2, 1, 1]
    assert results[0][0].skpo_segment_ended == 0 and len(results[0][0].response_ids) == T1
    assert recorder.with_max_tokens(RESPONSE - T1) == []
    # One token less fits: 8 + 11 = 19 < 20, and stage 2 runs.
    results = roll_out(tiny, make_config(tiny, TWO_SPLITS), Recorder(serve(tiny)), t_2=RESPONSE - T1 - 1)
    assert [len(outputs) for outputs in results] == [4, 2, 2]


def test_a_failing_stage_two_candidate_fails_every_session(tiny):
    class FailsStageTwo:
        def __init__(self, server):
            self.server = server

        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
            if sampling_params["max_tokens"] == T2:
                raise RuntimeError("replica down")
            return await self.server.generate(
                request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs
            )

    from skpo_verl.rollout.prompt_group import OPEN_GROUPS

    results = roll_out(tiny, make_config(tiny, TWO_SPLITS), FailsStageTwo(serve(tiny)))
    assert all(isinstance(result, Exception) for result in results)
    assert "replica down" in str(results[0])
    assert all("session 0" in str(result) for result in results[1:])
    assert OPEN_GROUPS == {}


# --- verl's V1 worker: rows in TransferQueue, each answer scored on its own ---------------------------------------


@pytest.fixture(scope="module")
def v1(tmp_path_factory, transfer_queue):
    setup = toy_task_rollout(
        tmp_path_factory.mktemp("v1_multi"), transfer_queue, [f"actor_rollout_ref.rollout.n={G}", TWO_SPLITS]
    )
    yield setup
    setup.rollout.close()


def test_verls_worker_stores_two_stages_of_rows_and_each_answer_keeps_its_own_reward(v1):
    import torch

    batch = v1.rollout.dataset_batch([6, 5])
    batch[R.PROMPT_LATER_SPLIT_LENGTHS] = torch.tensor([[4], [3]])  # as the V1 trainer shim adds t_2
    uids, listing = v1.rollout.generate(batch, "train")
    assert all(listing[uid]["status"] == "finished" for uid in uids)
    row_keys = sorted(key for key in listing if key not in uids and key.rsplit("_", 2)[0] in uids)
    # 2 x (G + 1) rows per prompt: session 0 four outputs, sessions 1, 2 two each.
    expected = [f"{uid}_0_{i}" for uid in uids for i in range(4)]
    expected += [f"{uid}_{s}_{i}" for uid in uids for s in range(1, G) for i in range(2)]
    assert row_keys == sorted(expected)

    fields = ["prompts", "responses", "rm_scores", "uid", "session_id", *R.ROLLOUT_FIELDS]
    data = v1.tq.kv_batch_get(keys=row_keys, partition_id="train", select_fields=fields)
    row = {key: i for i, key in enumerate(row_keys)}
    differing = 0
    for uid, problem, t_1, t_2 in zip(uids, PROBLEMS, [6, 5], [4, 3]):
        q = question_ids(v1.tokenizer, problem)
        up_1, up_2 = row[f"{uid}_0_0"], row[f"{uid}_0_2"]
        s_1, s_2 = data["responses"][up_1].tolist(), data["responses"][up_2].tolist()
        assert 1 <= len(s_1) <= t_1 and 1 <= len(s_2) <= t_2
        assert data["prompts"][up_1].tolist() == q and data["prompts"][up_2].tolist() == q + s_1
        assert [data[R.STAGE][i].item() for i in (up_1, up_2)] == [1, 2]
        answers = {1: [row[f"{uid}_0_1"], *(row[f"{uid}_{s}_0"] for s in range(1, G))]}
        answers[2] = [row[f"{uid}_0_3"], *(row[f"{uid}_{s}_1"] for s in range(1, G))]
        for stage, prompt in ((1, s_1 + q), (2, s_1 + s_2 + q)):
            for i in answers[stage]:
                assert data[R.STAGE][i].item() == stage and data[R.IS_UPSTREAM][i].item() == 0
                assert data["prompts"][i].tolist() == prompt
                text = v1.tokenizer.decode(data["responses"][i].tolist(), skip_special_tokens=True)
                # Its own reward, although verl copied the session's last (stage-2) score onto it.
                assert data["rm_scores"][i][-1].item() == (1.0 if len(text) % 2 == 0 else -1.0)
        assert [data["session_id"][i] for i in answers[2]] == list(range(G))
        differing += sum(
            data["rm_scores"][a][-1].item() != data["rm_scores"][b][-1].item() for a, b in zip(*answers.values())
        )
    # Some session's two answers were judged differently, so a copied score would have been caught above.
    assert differing >= 1
