"""The spatial upstream baseline's rollout (`algorithm.skpo.upstream_baseline=spatial`) through verl's agent-loop
classes.

First the `skpo_agent` loop itself, one instance per session as verl makes them, against the local tiny model
(as `test_agent_loop.py`); then verl's V1 worker path (`AgentLoopWorkerTQ`, its reward loop and TransferQueue,
as `test_agent_loop_v1.py`), whose stored rows the driver's advantage step and actor update then consume.
Expected values are recomputed here from what the server returned.
"""

import numpy as np
import pytest
from test_agent_loop import PROBLEM, RESPONSE, SPLIT, Recorder, expected_segment, make_config, roll_out, serve
from test_agent_loop_v1 import PROBLEMS
from test_trainer_v1_shim import _update_actor_extra_info
from v1_rollout import question_ids, tiny_model, toy_task_rollout
from v1_trainer import v1_trainer

from skpo_verl import rows as R

G = 4
SESSIONS = range(G)
SPATIAL = "+algorithm.skpo.upstream_baseline=spatial"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model and q, as `test_agent_loop.py` builds them."""
    return tiny_model(tmp_path_factory.mktemp("tiny_model"), PROBLEM)


def cut(tiny, output):
    """A candidate as the rollout keeps it (cut at half if it ended within t_q): `expected_segment` of one."""
    return expected_segment([output], SPLIT, tiny.eos)[0]


def test_two_segments_each_answered_by_half_of_the_sessions(tiny):
    from skpo_verl.rollout.prompt_group import OPEN_GROUPS

    recorder = Recorder(serve(tiny, seed=3))
    results = roll_out(tiny, make_config(tiny, SPATIAL, n=G), recorder, sessions=SESSIONS)

    # Sessions 0 and G/2 = 2 return [upstream, answer]; sessions 1 and 3 their answer.
    assert [len(outputs) for outputs in results] == [2, 1, 2, 1]
    (up_a, answer_0), (answer_1,), (up_b, answer_2), (answer_3,) = results
    assert [row.skpo_is_upstream for row in (up_a, answer_0, answer_1, up_b, answer_2, answer_3)] == [1, 0, 0, 1, 0, 0]

    # The G candidates come from q; s_a is the median rule's, s_b the other of the two middle NLLs (even G:
    # both are equally close to the median, the mean of the two middle values).
    candidates = [output for _, output in recorder.with_max_tokens(SPLIT)]
    assert len(candidates) == G and all(prompt == tiny.q for prompt, _ in recorder.with_max_tokens(SPLIT))
    s_a, nll_a, nlls = expected_segment(candidates, SPLIT, tiny.eos)
    assert len(set(np.round(nlls, 6))) == G  # distinct NLLs, so the two middle candidates are two
    middle = [int(k) for k in np.argsort(nlls)[1:3]]
    (k_b,) = [k for k in middle if cut(tiny, candidates[k]) != s_a]
    s_b = cut(tiny, candidates[k_b])
    assert s_a != s_b and s_a in [cut(tiny, candidates[k]) for k in middle]

    assert (up_a.prompt_ids, up_a.response_ids, up_a.skpo_segment_index) == (tiny.q, s_a, 0)
    assert (up_b.prompt_ids, up_b.response_ids, up_b.skpo_segment_index) == (tiny.q, s_b, 1)
    assert up_a.skpo_segment_nll == pytest.approx(nll_a) and up_b.skpo_segment_nll == pytest.approx(nlls[k_b])
    assert up_b.response_logprobs == candidates[k_b].log_probs[: len(s_b)]

    # Sessions 0..G/2-1 answer from [s_a, q], sessions G/2..G-1 from [s_b, q]; each row carries its segment's fields.
    for row, segment, index in [(answer_0, s_a, 0), (answer_1, s_a, 0), (answer_2, s_b, 1), (answer_3, s_b, 1)]:
        assert row.prompt_ids == segment + tiny.q
        assert (row.skpo_segment_index, row.skpo_segment_length) == (index, len(segment))
    answers = {(tuple(prompt), tuple(out.token_ids)) for prompt, out in recorder.with_max_tokens(RESPONSE)}
    assert len(recorder.with_max_tokens(RESPONSE)) == G
    assert all((tuple(row.prompt_ids), tuple(row.response_ids)) in answers for row in (answer_0, answer_1, answer_2))
    # Both segments were cut from the same G candidates: the prompt's candidate tokens, on every row.
    tokens = sum(len(out.token_ids) for out in candidates)
    assert all(row.skpo_candidate_tokens == tokens for outputs in results for row in outputs)
    assert up_b.as_dict()[R.SEGMENT_INDEX].item() == 1
    assert OPEN_GROUPS == {}


@pytest.mark.parametrize("step, first, second", [(2, np.min, np.max), (3, np.max, np.min)])
def test_extreme_selection_keeps_both_extremes(tiny, step, first, second):
    recorder = Recorder(serve(tiny, seed=4))
    config = make_config(tiny, SPATIAL, "+algorithm.skpo.selection=extreme", n=G)
    results = roll_out(tiny, config, recorder, sessions=SESSIONS, step=step)

    nlls = expected_segment([out for _, out in recorder.with_max_tokens(SPLIT)], SPLIT, tiny.eos)[2]
    assert results[0][0].skpo_segment_nll == pytest.approx(first(nlls))
    assert results[2][0].skpo_segment_nll == pytest.approx(second(nlls))


@pytest.mark.parametrize(
    "overrides, layout",
    [
        (["+algorithm.skpo.conditioning=continual"], lambda q, segment: q + segment),
        (["+algorithm.skpo.conditioning=unconditional"], lambda q, segment: q),
    ],
)
def test_each_half_answers_from_its_own_segment_in_every_conditioning(tiny, overrides, layout):
    results = roll_out(tiny, make_config(tiny, SPATIAL, *overrides, n=G), serve(tiny), sessions=SESSIONS)
    for leader, follower in ((0, 1), (2, 3)):
        expected = layout(tiny.q, results[leader][0].response_ids)
        assert results[leader][1].prompt_ids == expected and results[follower][0].prompt_ids == expected
    assert results[0][0].response_ids != results[2][0].response_ids


def test_with_skip_format_chat_each_half_reads_its_own_segment_in_the_user_turn(tiny):
    config = make_config(tiny, SPATIAL, "+algorithm.skpo.skip_format=chat", n=G)
    results = roll_out(tiny, config, serve(tiny), sessions=SESSIONS)
    for leader, follower in ((0, 1), (2, 3)):
        segment = tiny.tokenizer.decode(results[leader][0].response_ids, skip_special_tokens=True)
        for row in (results[leader][1], results[follower][0]):
            assert segment + "\n\n" + PROBLEM in tiny.tokenizer.decode(row.prompt_ids)


def test_the_default_rollout_keeps_one_segment_with_index_zero(tiny):
    results = roll_out(tiny, make_config(tiny, n=G), serve(tiny), sessions=SESSIONS)
    assert [len(outputs) for outputs in results] == [2, 1, 1, 1]
    assert all(row.skpo_segment_index == 0 for outputs in results for row in outputs)


def test_an_odd_group_is_refused_by_every_session(tiny):
    results = roll_out(tiny, make_config(tiny, SPATIAL, n=3), serve(tiny))  # sessions 0..2
    # verl builds each session's loop with Hydra, which wraps the ValueError and keeps its message.
    assert all(isinstance(result, Exception) and "so G must be even" in str(result) for result in results)


# --- verl's V1 worker: G + 2 rows per prompt in TransferQueue, then the driver's advantage step and update --------


@pytest.fixture(scope="module")
def v1(tmp_path_factory, transfer_queue):
    setup = toy_task_rollout(
        tmp_path_factory.mktemp("v1_spatial"), transfer_queue, [f"actor_rollout_ref.rollout.n={G}", SPATIAL]
    )
    yield setup
    setup.rollout.close()


def test_verls_worker_stores_g_plus_two_rows_per_prompt_and_the_driver_trains_on_them(v1):
    uids, listing = v1.rollout.generate(v1.rollout.dataset_batch([6, 5]), "train")
    assert all(listing[uid]["status"] == "finished" for uid in uids)
    row_keys = sorted(key for key in listing if key not in uids and key.rsplit("_", 2)[0] in uids)
    # Sessions 0 and 2 return [upstream, answer], sessions 1 and 3 an answer: G + 2 = 6 rows per prompt.
    assert row_keys == sorted(
        f"{uid}_{s}_{i}" for uid in uids for s, i in [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (3, 0)]
    )

    fields = ["prompts", "responses", "rm_scores", "session_id", *R.ROLLOUT_FIELDS]
    data = v1.tq.kv_batch_get(keys=row_keys, partition_id="train", select_fields=fields)
    row = {key: i for i, key in enumerate(row_keys)}
    reward = {key: data["rm_scores"][row[key]].sum().item() for key in row_keys}
    segment_rewards = []
    for uid, problem in zip(uids, PROBLEMS):
        q = question_ids(v1.tokenizer, problem)
        up_a, up_b = row[f"{uid}_0_0"], row[f"{uid}_2_0"]
        s_a, s_b = data["responses"][up_a].tolist(), data["responses"][up_b].tolist()
        assert data["prompts"][up_a].tolist() == q and data["prompts"][up_b].tolist() == q and s_a != s_b
        assert [data[R.IS_UPSTREAM][i].item() for i in (up_a, up_b)] == [1, 1]
        assert [data[R.SEGMENT_INDEX][i].item() for i in (up_a, up_b)] == [0, 1]
        halves = {0: (s_a, [f"{uid}_0_1", f"{uid}_1_0"]), 1: (s_b, [f"{uid}_2_1", f"{uid}_3_0"])}
        for index, (segment, answers) in halves.items():
            for key in answers:
                assert data["prompts"][row[key]].tolist() == segment + q
                assert (data[R.IS_UPSTREAM][row[key]].item(), data[R.SEGMENT_INDEX][row[key]].item()) == (0, index)
                text = v1.tokenizer.decode(data["responses"][row[key]].tolist(), skip_special_tokens=True)
                assert reward[key] == (1.0 if len(text) % 2 == 0 else -1.0)  # each answer judged on its own
            segment_rewards.append(np.mean([reward[key] for key in answers]))

    # The driver's advantage step on those rows (patches/trainer_v1.py `_compute_advantage`), recomputed by hand:
    # R_I per segment, a = R_I - the prompt's mean R_I, normalised over the 4 upstream rows; the answers
    # group-relative over their uid's G.
    trainer = v1_trainer(
        [
            "algorithm.adv_estimator=skpo",
            "actor_rollout_ref.actor.policy_loss.loss_mode=skpo",
            "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
            f"actor_rollout_ref.rollout.n={G}",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            SPATIAL,
        ],
        step=3,
    )
    tags = [{"status": "success"} for _ in row_keys]
    batch = v1.tq.KVBatchMeta(partition_id="train", keys=row_keys, tags=tags)
    metrics = {}
    trainer._compute_advantage(batch, metrics)
    out = v1.tq.kv_batch_get(keys=row_keys, partition_id="train", select_fields=["advantages"])
    advantage = {key: float(a[0]) for key, a in zip(row_keys, out["advantages"].unbind())}

    rewards_i = np.array(segment_rewards)  # [u0 s_a, u0 s_b, u1 s_a, u1 s_b]
    a = rewards_i - np.repeat(rewards_i.reshape(2, 2).mean(axis=1), 2)
    expected_up = np.zeros(4) if np.all(a == a[0]) else (a - a.mean()) / (a.std(ddof=1) + 1e-6)
    up_keys = [f"{uid}_{s}_0" for uid in uids for s in (0, 2)]
    assert [advantage[key] for key in up_keys] == pytest.approx(expected_up.tolist(), abs=1e-5)
    for uid in uids:
        answers = [f"{uid}_0_1", f"{uid}_1_0", f"{uid}_2_1", f"{uid}_3_0"]
        r = np.array([reward[key] for key in answers])
        expected = np.zeros(G) if np.all(r == r[0]) else (r - r.mean()) / (r.std(ddof=1) + 1e-6)
        assert [advantage[key] for key in answers] == pytest.approx(expected.tolist(), abs=1e-5)
    assert metrics["skpo/upstream/rows"] == 4 and metrics["skpo/downstream/rows"] == 2 * G
    ties = [segment_rewards[0] == segment_rewards[1], segment_rewards[2] == segment_rewards[3]]
    assert metrics["skpo/upstream/spatial_tie_rate"] == np.mean(ties)
    assert trainer.skpo_state.values.value(101) == pytest.approx((np.mean(segment_rewards[:2]) + 1) / 2)

    # The actor update: one mini-batch of ppo_mini_batch_size = 2 whole prompts, 2 x (G + 2) = 12 rows.
    seen, metrics = _update_actor_extra_info(trainer, batch)
    assert seen["global_batch_size"] == 12 and seen["mini_batch_size"] == 12
    assert seen["skpo_loss_normalisers"]["upstream_rows"] == 4.0 and metrics["skpo/loss/mini_batches"] == 1
    v1.tq.kv_clear(keys=row_keys, partition_id="train")
