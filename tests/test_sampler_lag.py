"""Prioritized sampling draws each step's prompts with the tracker of the step before (lag 1)."""

import pandas as pd
import pytest
from transformers import AutoTokenizer

from skpo_verl.benchmarks.sampler_lag import measure_lag
from skpo_verl.config import SKPOConfig
from skpo_verl.demo.tiny_model import build_tiny_model
from skpo_verl.training.sampler import PrioritizedSampler
from skpo_verl.training.state import SKPOState
from skpo_verl.verl_config import compose_ppo_config


@pytest.mark.parametrize("workers, lag", [(0, 1), (1, 3), (2, 5)])
def test_lag_through_verls_dataloader_is_one_plus_the_batches_its_workers_prefetch(workers, lag):
    # W workers x prefetch_factor 2 batches are drawn ahead: lag = 1 + 2 W.
    assert measure_lag(workers, steps=10) == lag


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lag")
    model_dir = build_tiny_model(str(tmp / "tiny"))
    frame = pd.DataFrame(
        {
            "data_source": ["toy"] * 8,
            "prompt": [[{"role": "user", "content": f"Say {i}."}] for i in range(8)],
            "reward_model": [{"style": "rule", "ground_truth": str(i)} for i in range(8)],
            "extra_info": [{"split": "train", "index": i} for i in range(8)],
        }
    )
    frame.to_parquet(tmp / "train.parquet")
    return model_dir, str(tmp / "train.parquet")


def _init_dataloader(data_files, skpo_overrides):
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    class Trainer(PPOTrainer):
        def on_step_end(self):
            return None

        def on_sample_end(self):
            return None

    model_dir, train = data_files
    trainer = object.__new__(Trainer)
    trainer.config = compose_ppo_config(
        [
            "algorithm.adv_estimator=skpo",
            f"data.train_files={train}",
            f"data.val_files={train}",
            "data.train_batch_size=2",
            "data.dataloader_num_workers=4",
            "data.max_prompt_length=64",
        ]
    )
    trainer.tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer.processor = None
    trainer.trainer_mode = "sync"
    trainer.parameter_sync_step = 1
    trainer.skpo_state = SKPOState(SKPOConfig.from_mapping(skpo_overrides))
    trainer._init_dataloader()
    return trainer


def test_with_prioritized_sampling_the_train_dataloader_loads_in_the_driver(data_files):
    trainer = _init_dataloader(data_files, {})
    assert isinstance(trainer.train_dataloader.sampler, PrioritizedSampler)
    assert trainer.train_dataloader.num_workers == 0
    assert trainer.config.data.dataloader_num_workers == 4  # the user's setting is left as it was


def test_without_prioritized_sampling_the_users_workers_are_kept(data_files):
    trainer = _init_dataloader(data_files, {"prioritized_sampling": False})
    assert not isinstance(trainer.train_dataloader.sampler, PrioritizedSampler)
    assert trainer.train_dataloader.num_workers == 4
