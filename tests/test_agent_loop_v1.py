"""verl's V1 rollout path with `skpo_agent`: dataset batch -> AgentLoopWorkerTQ.generate_sequences
-> `_run_prompt` -> G sessions -> TransferQueue rows, scored by verl's reward loop.

Everything is verl's real code except transport: the worker and its reward-loop worker run
in this process (verl makes them Ray actors), and the rollout server is the local tiny model.
TransferQueue is the real one, on a local Ray (the `transfer_queue` fixture).
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from v1_rollout import question_ids, toy_task_rollout

from skpo_verl import rows as R

G = 3
RESPONSE = 16  # the response budget of v1_rollout.toy_task_rollout
SPLITS = [5, 7]  # the driver's t_q for the two prompts
PROBLEMS = ["Add 2 and 3.", "What is 4 times 5?"]
PROMPT_KEYS = [101, 202]  # extra_info.index: SKPO's stable prompt keys

# verl's custom-reward-function route (reward.custom_reward_function.path/name): +1 for an even
# number of characters in the decoded answer, -1 otherwise, so both rewards occur and each is
# recomputable from the stored response.
REWARD_SOURCE = """
def parity_reward(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return 1.0 if len(solution_str) % 2 == 0 else -1.0
"""


def write_toy_task(directory) -> None:
    """`reward.py` (the parity reward) and `train.parquet` (PROBLEMS with their PROMPT_KEYS) in verl's schema."""
    (directory / "reward.py").write_text(REWARD_SOURCE)
    pd.DataFrame(
        {
            "data_source": ["toy"] * 2,
            "prompt": [[{"role": "user", "content": problem}] for problem in PROBLEMS],
            "ability": ["math"] * 2,
            "reward_model": [{"style": "rule", "ground_truth": "5"}, {"style": "rule", "ground_truth": "20"}],
            "extra_info": [{"split": "train", "index": key} for key in PROMPT_KEYS],
        }
    ).to_parquet(directory / "train.parquet")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, transfer_queue):
    validation = ["actor_rollout_ref.rollout.val_kwargs.n=2", "actor_rollout_ref.rollout.val_kwargs.temperature=1.0"]
    overrides = [f"actor_rollout_ref.rollout.n={G}", *validation]
    toy = toy_task_rollout(tmp_path_factory.mktemp("v1"), transfer_queue, overrides)
    yield SimpleNamespace(**vars(toy), worker=toy.rollout.worker)
    toy.rollout.close()


def dataset_batch(setup, validate=False):
    return setup.rollout.dataset_batch(None if validate else SPLITS, validate=validate)


def generate(setup, batch, partition):
    return setup.rollout.generate(batch, partition)


def test_training_rollout_stores_one_upstream_and_g_downstream_rows_per_prompt_with_rewards(setup):
    uids, listing = generate(setup, dataset_batch(setup), "train")

    for uid in uids:
        assert listing[uid]["status"] == "finished"
    row_keys = sorted(key for key in listing if key not in uids)
    expected_keys = sorted(
        f"{uid}_{s}_{i}" for uid in uids for s, i in [(0, 0), (0, 1), *((s, 0) for s in range(1, G))]
    )
    assert row_keys == expected_keys
    assert all(listing[key]["status"] == "success" for key in row_keys)
    assert all(isinstance(listing[key]["min_global_steps"], int) for key in row_keys)

    fields = [
        "prompts",
        "responses",
        "response_mask",
        "rm_scores",
        "rollout_log_probs",
        "uid",
        "index",
        "session_id",
        *R.ROLLOUT_FIELDS,
    ]
    data = setup.tq.kv_batch_get(keys=row_keys, partition_id="train", select_fields=fields)
    rows = {key: i for i, key in enumerate(row_keys)}
    for uid, problem, key, split in zip(uids, PROBLEMS, PROMPT_KEYS, SPLITS):
        q = question_ids(setup.tokenizer, problem)
        up = rows[f"{uid}_0_0"]
        down = [rows[f"{uid}_0_1"], *(rows[f"{uid}_{s}_0"] for s in range(1, G))]
        segment = data["responses"][up].tolist()

        assert data[R.IS_UPSTREAM][up].item() == 1 and all(data[R.IS_UPSTREAM][i].item() == 0 for i in down)
        assert data["prompts"][up].tolist() == q
        assert 1 <= len(segment) <= split
        assert len(data["rollout_log_probs"][up]) == len(segment)
        for i in [up, *down]:
            assert data["uid"][i] == uid and data["index"][i] == key
            assert data[R.SPLIT_LENGTH][i].item() == split
            assert data[R.SEGMENT_LENGTH][i].item() == len(segment)
        assert [data["session_id"][i] for i in down] == list(range(G))

        downstream_rewards = []
        for i in down:
            assert data["prompts"][i].tolist() == segment + q  # skip connection, token format
            response = data["responses"][i].tolist()
            text = setup.tokenizer.decode(response, skip_special_tokens=True)
            reward = 1.0 if len(text) % 2 == 0 else -1.0
            scores = data["rm_scores"][i]
            assert scores[-1].item() == reward and scores[:-1].abs().sum().item() == 0
            downstream_rewards.append(reward)
        # verl scores each session's final output and copies session 0's score onto its upstream row.
        assert data["rm_scores"][up][-1].item() == downstream_rewards[0]


def test_the_skpo_estimator_consumes_the_stored_rows(setup):
    """The driver's path (patches/trainer_v1.py `_compute_advantage`): fetch the row-contract fields from
    TransferQueue, build SKPORows, run the registered `skpo` estimator; advantages recomputed by hand."""
    from skpo_verl.config import skpo_config_from_algorithm
    from skpo_verl.patches.trainer_v1 import rows_from_fields
    from skpo_verl.rows import ESTIMATOR_FIELDS
    from skpo_verl.training.estimator import compute_skpo_advantage
    from skpo_verl.training.state import SKPOState

    uids, listing = generate(setup, dataset_batch(setup), "train")
    row_keys = sorted(key for key in listing if key.rsplit("_", 2)[0] in uids and key not in uids)
    data = setup.tq.kv_batch_get(keys=row_keys, partition_id="train", select_fields=list(ESTIMATOR_FIELDS))
    skpo_rows = rows_from_fields(data, [False] * len(row_keys))
    assert [key for key, up in zip(row_keys, skpo_rows.is_upstream) if up] == sorted(f"{uid}_0_0" for uid in uids)
    assert sorted(set(skpo_rows.prompt_keys.tolist())) == PROMPT_KEYS
    assert skpo_rows.split_lengths.tolist() == [SPLITS[uids.index(key.rsplit("_", 2)[0])] for key in row_keys]

    padded = data.select("response_mask", "rm_scores").to_padded_tensor()
    config = skpo_config_from_algorithm(setup.config.algorithm)
    metrics = {}
    advantages, _ = compute_skpo_advantage(
        token_level_rewards=padded["rm_scores"].float(),
        response_mask=padded["response_mask"],
        config=setup.config.algorithm,
        index=skpo_rows.groups,
        skpo_rows=skpo_rows,
        skpo_state=SKPOState(config),
        global_step=3,
        metrics=metrics,
    )

    reward = padded["rm_scores"].sum(dim=-1).double().numpy()
    eps = config.adv_eps
    expected = {}
    upstream_raw = []
    for uid in uids:
        down_keys = [f"{uid}_0_1", *(f"{uid}_{s}_0" for s in range(1, G))]
        r = np.array([reward[row_keys.index(k)] for k in down_keys])
        a = np.zeros(G) if np.all(r == r[0]) else (r - r.mean()) / (r.std(ddof=1) + eps)
        expected.update(zip(down_keys, a))
        upstream_raw.append(r.mean() - 0.0)  # R_I minus V_prev(q) = 0 (reward space) for a new prompt
    up = np.array(upstream_raw)
    up_adv = np.zeros(len(up)) if np.all(up == up[0]) else (up - up.mean()) / (up.std(ddof=1) + eps)
    expected.update({f"{uid}_0_0": a for uid, a in zip(uids, up_adv)})

    mask = padded["response_mask"].bool()
    for i, key in enumerate(row_keys):
        assert torch.allclose(advantages[i][mask[i]], torch.full_like(advantages[i][mask[i]], expected[key]), atol=1e-6)
        assert advantages[i][~mask[i]].abs().sum() == 0
    assert metrics["skpo/upstream/rows"] == len(uids) and metrics["skpo/downstream/rows"] == G * len(uids)


def test_validation_rollout_is_plain_single_turn_from_q(setup):
    uids, listing = generate(setup, dataset_batch(setup, validate=True), "val")

    row_keys = sorted(key for key in listing if key not in uids)
    assert row_keys == sorted(f"{uid}_{s}_0" for uid in uids for s in range(2))  # val_kwargs.n sessions, one row each
    data = setup.tq.kv_batch_get(
        keys=row_keys, partition_id="val", select_fields=["prompts", "rm_scores", *R.ROLLOUT_FIELDS]
    )
    for i, key in enumerate(row_keys):
        problem = PROBLEMS[uids.index(key.rsplit("_", 2)[0])]
        assert data["prompts"][i].tolist() == question_ids(setup.tokenizer, problem)
        assert data[R.IS_UPSTREAM][i].item() == 0 and data[R.SEGMENT_LENGTH][i].item() == 0
        assert data["rm_scores"][i][-1].item() in (-1.0, 1.0)


class FailingCandidates:
    """A server whose candidate requests (max_tokens below the response length) fail."""

    def __init__(self, server):
        self.server = server

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        if sampling_params["max_tokens"] < RESPONSE:
            raise ConnectionError("rollout server went away")
        return await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)


def test_a_failed_candidate_request_marks_the_prompt_failed_and_stores_no_rows(setup, monkeypatch):
    monkeypatch.setattr(setup.worker, "llm_client", FailingCandidates(setup.worker.llm_client))
    uids, listing = generate(setup, dataset_batch(setup), "train")

    assert [listing[uid]["status"] for uid in uids] == ["failure", "failure"]
    assert not [key for key in listing if key.rsplit("_", 2)[0] in uids and key not in uids]
