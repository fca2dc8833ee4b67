"""Each SKPO answer is judged on exactly its own tokens, through verl's real reward loop.

verl 0.9.1 right-pads all outputs of a session into one batch before judging
(`AgentLoopWorker._compute_score`), and its reward managers count the answer's length on that
padded batch. Session 0 returns [upstream (q -> s), downstream_0]: when the kept segment is
longer than the answer, pad tokens (id 0, "!" in Qwen2/Llama-3 style vocabularies and in the
tiny model's) were appended to the answer before judging, so "Answer: 5" became "Answer: 5!!!..."
and scored -1. A scripted rollout server makes that case certain: every candidate is 20 tokens
long, every answer is "Answer: 5" and the end-of-sequence token (10 tokens).
"""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
from transformers import AutoTokenizer
from v1_rollout import V1Rollout, question_ids
from verl.workers.rollout.replica import TokenOutput

from skpo_verl import rows as R
from skpo_verl.cpu.local_server import compose_rollout_config
from skpo_verl.demo.tiny_model import build_tiny_model

G = 3
RESPONSE = 32
SPLIT = 20  # t_q: the kept segment (20 tokens) is twice as long as every answer (10 tokens)
PROBLEM = "What is 2 plus 3?"
CANDIDATE_TEXT = "We add the two numbers one by one, and then we check it."
ANSWER_TEXT = "Answer: 5"
REST_TEXT = "\nAnswer: 5"

# A custom reward function that records the exact text verl judged, then applies the project's reward.
RECORDING_REWARD = """
import json
from skpo_verl.reward import compute_score as project_score

def recording_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    with open({log!r}, "a") as f:
        f.write(json.dumps(solution_str) + "\\n")
    return project_score(data_source, solution_str, ground_truth, extra_info)
"""


class ScriptedServer:
    """verl's `generate(request_id, *, prompt_ids, sampling_params, ...) -> TokenOutput`, with fixed texts.

    Requests from q are candidates (the candidate text, cut at max_tokens, never ending early);
    requests from [q, candidate] complete the candidate ("w/o MC"); every other request is an answer.
    """

    def __init__(self, tokenizer, question, rest_text):
        self.tokenizer, self.question = tokenizer, list(question)
        self.candidate = tokenizer.encode(CANDIDATE_TEXT, add_special_tokens=False)
        self.answer = tokenizer.encode(ANSWER_TEXT, add_special_tokens=False) + [tokenizer.eos_token_id]
        self.rest = tokenizer.encode(rest_text, add_special_tokens=False) + [tokenizer.eos_token_id]
        self.requests = []  # (kind, max_tokens)
        assert len(self.candidate) >= SPLIT > len(self.answer)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        max_tokens = sampling_params["max_tokens"]
        if list(prompt_ids) == self.question:
            kind, tokens = "candidate", self.candidate[:max_tokens]
        elif list(prompt_ids) == self.question + self.candidate[:SPLIT] and max_tokens == RESPONSE - SPLIT:
            kind, tokens = "continuation", self.rest[:max_tokens]  # "w/o MC" completion or a continual answer
        else:
            kind, tokens = "answer", self.answer[:max_tokens]
        self.requests.append((kind, max_tokens))
        return TokenOutput(
            token_ids=tokens, log_probs=[-0.5] * len(tokens), stop_reason="completed", extra_fields={"global_steps": 3}
        )


def _rollout(tmp, transfer_queue, reward_overrides, skpo_overrides=(), rest_text=REST_TEXT, data_source="math_dapo"):
    model_dir = build_tiny_model(str(tmp / "tiny_model"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pd.DataFrame(
        {
            "data_source": [data_source],
            "prompt": [[{"role": "user", "content": PROBLEM}]],
            "ability": ["math"],
            "reward_model": [{"style": "rule", "ground_truth": "5"}],
            "extra_info": [{"split": "train", "index": 7}],
        }
    ).to_parquet(tmp / "train.parquet")
    config = compose_rollout_config(
        model_dir,
        [
            f"actor_rollout_ref.rollout.n={G}",
            "data.max_prompt_length=64",
            f"data.max_response_length={RESPONSE}",
            "actor_rollout_ref.rollout.prompt_length=96",
            "actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent",
            f"data.train_files={tmp / 'train.parquet'}",
            *reward_overrides,
            *skpo_overrides,
        ],
    )
    server = ScriptedServer(tokenizer, question_ids(tokenizer, PROBLEM), rest_text)
    rollout = V1Rollout(config, tokenizer, server, transfer_queue)
    try:
        uids, listing = rollout.generate(rollout.dataset_batch([SPLIT]), "train")
    finally:
        rollout.close()
    (uid,) = uids
    assert listing[uid]["status"] == "finished"
    keys = [f"{uid}_0_0", f"{uid}_0_1", *(f"{uid}_{s}_0" for s in range(1, G))]
    fields = ["responses", "rm_scores", R.IS_UPSTREAM, R.COMPLETION_REWARD, R.COMPLETION_TOKENS]
    data = transfer_queue.kv_batch_get(keys=keys, partition_id="train", select_fields=fields)
    return SimpleNamespace(tokenizer=tokenizer, server=server, data=data, up=0, answers=list(range(1, G + 1)))


def test_session_zero_answer_shorter_than_its_segment_scores_plus_one_with_the_project_reward(tmp_path, transfer_queue):
    log = tmp_path / "judged.jsonl"
    (tmp_path / "reward.py").write_text(RECORDING_REWARD.format(log=str(log)))
    out = _rollout(
        tmp_path,
        transfer_queue,
        [
            f"reward.custom_reward_function.path={tmp_path / 'reward.py'}",
            "reward.custom_reward_function.name=recording_score",
        ],
    )
    segment = out.data["responses"][out.up].tolist()
    assert segment == out.server.candidate[:SPLIT]
    for row in out.answers:
        assert out.data["responses"][row].tolist() == out.server.answer
        assert out.data["rm_scores"][row][-1].item() == 1.0  # "Answer: 5" against ground truth 5
    judged = [json.loads(line) for line in log.read_text().splitlines()]
    decoded = out.tokenizer.decode(out.server.answer, skip_special_tokens=True)
    assert decoded == ANSWER_TEXT
    assert judged == [decoded] * G  # one judgment per answer, on exactly its own tokens


@pytest.mark.parametrize("manager", ["naive", "dapo"])
def test_session_zero_answer_scores_plus_one_with_verls_default_scorer(tmp_path, transfer_queue, manager):
    # No custom reward function: verl's default_compute_score, DAPO's "Answer:" rule for data_source math_dapo.
    # verl's naive manager judges a session's last output, its dapo manager the first: both must see the answer.
    out = _rollout(tmp_path, transfer_queue, [f"reward.reward_manager.name={manager}"])
    assert [out.data["rm_scores"][row][-1].item() for row in out.answers] == [1.0] * G


PROJECT_REWARD = [
    "reward.custom_reward_function.path=pkg://skpo_verl.reward",
    "reward.custom_reward_function.name=compute_score",
]


@pytest.mark.parametrize("rest_text, completion_reward", [("\nAnswer: 5", 1.0), ("\nAnswer: 6", -1.0)])
def test_wo_mc_rewards_the_upstream_row_with_its_own_completion(tmp_path, transfer_queue, rest_text, completion_reward):
    out = _rollout(
        tmp_path, transfer_queue, PROJECT_REWARD, ["+algorithm.skpo.upstream_reward=own_completion"], rest_text
    )
    # q -> s (20 candidate tokens, not ended) -> rest, one completion of at most response_length tokens,
    # judged on its own and written on the upstream row only, whatever the G answers from [s, q] scored.
    assert sorted(out.server.requests) == sorted(
        [("candidate", SPLIT)] * G + [("continuation", RESPONSE - SPLIT)] + [("answer", RESPONSE)] * G
    )
    assert out.data[R.COMPLETION_REWARD][out.up].item() == completion_reward
    assert [out.data[R.COMPLETION_REWARD][row].item() for row in out.answers] == [0.0] * G
    assert [out.data["rm_scores"][row][-1].item() for row in out.answers] == [1.0] * G
    assert out.data["responses"][out.up].tolist() == out.server.candidate[:SPLIT]  # the row still trains on s
    # Its cost: the rest decoded after the candidate ("\nAnswer: n" is 10 byte tokens, + EOS), on the upstream row.
    assert out.data[R.COMPLETION_TOKENS][out.up].item() == len(out.server.rest) == 11
    assert [out.data[R.COMPLETION_TOKENS][row].item() for row in out.answers] == [0] * G


def test_continual_answers_continue_the_segment_within_the_response_budget(tmp_path, transfer_queue):
    out = _rollout(tmp_path, transfer_queue, PROJECT_REWARD, ["+algorithm.skpo.conditioning=continual"])
    # Each answer continues q + s, so s + answer is one response of at most response_length tokens:
    # the L_q observation (|s| + |answer|) stays within the budget start-up checked.
    assert sorted(out.server.requests) == sorted([("candidate", SPLIT)] * G + [("continuation", RESPONSE - SPLIT)] * G)
    for row in out.answers:
        assert out.data["responses"][row].tolist() == out.server.rest
        assert out.data["rm_scores"][row][-1].item() == 1.0
