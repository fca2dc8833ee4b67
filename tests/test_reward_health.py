"""Judging health inside verl: broken judges stop verl's reward manager; failures become a step metric.

Both run verl 0.9.1's own code: its `naive` reward-loop manager (`run_single`, the call a
reward worker makes per response) and its V1 `PPOTrainer._compute_metrics` over rows in an
in-process TransferQueue, as verl's agent-loop worker stores them.
"""

import asyncio

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from skpo_verl.reward import score
from skpo_verl.reward.judge_pool import JudgePool, JudgesUnavailable
from skpo_verl.verl_config import compose_ppo_config


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained here (no Hub download); decodes any text it encodes."""
    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(["\\boxed{5}"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=model)


def score_with_verls_naive_manager(tokenizer, response: str, ground_truth: str) -> dict:
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    async def run():
        manager = NaiveRewardManager(config=None, tokenizer=tokenizer, compute_score=score.compute_score)
        prompt = torch.tensor([tokenizer.encode("Q")])
        responses = torch.tensor([tokenizer.encode(response)])
        data = DataProto.from_dict(
            tensors={
                "prompts": prompt,
                "responses": responses,
                "attention_mask": torch.ones(1, prompt.shape[1] + responses.shape[1], dtype=torch.int64),
            },
            non_tensors={
                "data_source": ["math500"],
                "reward_model": [{"ground_truth": ground_truth}],
                "extra_info": [{}],
            },
        )
        return await manager.run_single(data)

    return asyncio.run(run())


def test_verls_naive_reward_manager_records_judge_failure_as_extra_info(tokenizer):
    result = score_with_verls_naive_manager(tokenizer, "\\boxed{5}", "5")
    assert result["reward_score"] == 1.0
    assert result["reward_extra_info"]["judge_failure"] == 0.0


@pytest.fixture
def crashing_judges(tmp_path, monkeypatch):
    """The reward's judge pool swapped for one whose every call ends its process (a forced crash)."""
    (tmp_path / "crashing_judge.py").write_text("import os\n\ndef judge(*args):\n    os._exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    judges = JudgePool("crashing_judge:judge", size=1, max_consecutive_failures=3)
    monkeypatch.setattr(score, "_judges", judges)
    yield judges
    judges.close()


def test_forced_judge_crashes_score_minus_one_then_stop_verls_reward_manager(tokenizer, crashing_judges):
    for _ in range(2):  # a crash may be one pathological answer: -1, counted as a judge failure
        result = score_with_verls_naive_manager(tokenizer, "\\boxed{5}", "5")
        assert result["reward_score"] == -1.0
        assert (result["reward_extra_info"]["reason"], result["reward_extra_info"]["judge_failure"]) == (
            "error:JudgeFailed",
            1.0,
        )
    with pytest.raises(JudgesUnavailable, match="SKPO's reward cannot judge answers: 3 judge calls in a row failed"):
        score_with_verls_naive_manager(tokenizer, "\\boxed{5}", "5")
    # Then a response that needs no judging stops too: in V1 it would otherwise survive alone.
    with pytest.raises(JudgesUnavailable, match="3 judge calls in a row failed"):
        score_with_verls_naive_manager(tokenizer, "no answer", "5")


def _metrics_trainer():
    from verl.trainer.ppo.metric_utils import RolloutMoELoadBalanceMetricsAccumulator
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    class Trainer(PPOTrainer):
        def on_step_end(self):
            return None

        def on_sample_end(self):
            return None

        def _get_n_gpus_for_throughput(self):
            return 1

    trainer = object.__new__(Trainer)
    trainer.config = compose_ppo_config(["algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2"])
    trainer.use_critic = False
    trainer._rollout_moe_lb_metrics_accumulator = RolloutMoELoadBalanceMetricsAccumulator()
    return trainer


def _row(response_len: int, reward: float, reason: str) -> dict:
    rm_scores = torch.zeros(response_len)
    rm_scores[-1] = reward
    extra_info = {"score": reward, "acc": float(reward > 0), "pred": "5", "reason": reason}
    extra_info["judge_failure"] = 1.0 if score.is_judge_failure(reason) else 0.0
    return {
        "prompts": torch.full((3,), 7, dtype=torch.int64),
        "responses": torch.full((response_len,), 8, dtype=torch.int64),
        "response_mask": torch.ones(response_len, dtype=torch.int64),
        "rm_scores": rm_scores,
        "token_level_rewards": rm_scores,
        "advantages": torch.full((response_len,), reward),
        "returns": torch.full((response_len,), reward),
        "values": torch.zeros(response_len),
        "num_turns": 2,
        "extra_fields": {"reward_extra_info": extra_info},
    }


def test_v1_training_step_metrics_carry_the_judge_failure_share(transfer_queue):
    """GRPO rows, 1 timeout + 1 error:JudgeFailed out of 4 real rows, plus a padding row that must not count."""
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    from skpo_verl.patches.reward_metrics import METRIC

    tq = transfer_queue
    rows = {
        "gA_0_0": _row(3, 1.0, "correct"),
        "gA_1_0": _row(4, -1.0, "timeout"),
        "gB_0_0": _row(2, -1.0, "wrong"),
        "gB_1_0": _row(5, -1.0, "error:JudgeFailed"),
        "pad_0": _row(2, -1.0, "timeout"),
    }
    keys = list(rows)
    tags = [
        {"status": "success", "min_global_steps": 4, "max_global_steps": 4, "is_padding": key == "pad_0"}
        for key in keys
    ]
    tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(list(rows.values())), tags=tags)
    batch = tq.KVBatchMeta(partition_id="train", keys=keys, tags=tags)
    metrics = {}
    _metrics_trainer()._compute_metrics(batch, metrics, {"step": 1.0}, global_steps=5, epoch=0)
    assert metrics[METRIC] == pytest.approx(2 / 4)
    assert metrics["critic/score/mean"] == pytest.approx(-0.5)  # verl's own metrics from the same step
