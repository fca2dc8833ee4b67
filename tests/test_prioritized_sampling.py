"""SPO prioritized prompt sampling inside verl's dataloader: weights, dataset checks, resume."""

import datasets
import pytest
from omegaconf import OmegaConf
from torchdata.stateful_dataloader import StatefulDataLoader

from skpo_verl.config import SKPOConfig
from skpo_verl.training.sampler import PrioritizedSampler
from skpo_verl.training.state import SKPOState
from skpo_verl.validation import SKPOConfigError


class _Dataset:
    def __init__(self, indices):
        self.dataframe = datasets.Dataset.from_list([{"extra_info": {"index": i, "split": "train"}} for i in indices])

    def __len__(self):
        return len(self.dataframe)

    def __getitem__(self, item):
        return item


def _create_rl_sampler(skpo_overrides, dataset):
    from verl.trainer.ppo.v1 import trainer_base

    from skpo_verl.patches import trainer_v1

    class Owner:
        skpo_state = SKPOState(SKPOConfig.from_mapping(skpo_overrides))

    data_config = OmegaConf.create({"shuffle": False, "train_files": "train.parquet"})
    token = trainer_v1._building_dataloader.set(Owner)
    try:
        return trainer_base.create_rl_sampler(data_config, dataset), Owner.skpo_state
    finally:
        trainer_v1._building_dataloader.reset(token)


def test_verl_gets_our_sampler_by_default_as_in_the_paper_and_its_own_when_turned_off():
    sampler, _ = _create_rl_sampler({}, _Dataset([3, 4]))
    assert isinstance(sampler, PrioritizedSampler)
    sampler, _state = _create_rl_sampler({"prioritized_sampling": False}, _Dataset([3, 4]))
    assert type(sampler).__name__ == "SequentialSampler"


def test_the_training_dataset_is_checked_for_prompt_keys_even_without_prioritized_sampling():
    with pytest.raises(SKPOConfigError, match="rows 0 and 2 share index 3"):
        _create_rl_sampler({}, _Dataset([3, 4, 3]))


def test_draw_frequencies_follow_sqrt_v_one_minus_v_plus_eps():
    sampler, state = _create_rl_sampler({"prioritized_sampling": True}, _Dataset(["easy", "open"]))
    state.values.update("easy", 1.0, 0.96, 1)  # V = 1: weight 0 + 0.05
    state.values.update("open", 0.5, 0.96, 1)  # V = 0.5: weight 0.5 + 0.05
    draws = [position for _ in range(2000) for position in sampler]  # 2000 epochs of 2 draws
    # P(open) = 0.55 / 0.60 = 0.9167
    assert draws.count(1) / 4000 == pytest.approx(0.55 / 0.60, abs=0.02)


def test_the_dataloader_resumes_the_same_draws_after_a_restart():
    sampler, state = _create_rl_sampler({"prioritized_sampling": True}, _Dataset(list(range(10))))
    for key in range(10):
        state.values.update(key, key / 9, 0.96, 1)
    loader = StatefulDataLoader(list(range(10)), batch_size=2, sampler=sampler)
    iterator = iter(loader)
    [next(iterator) for _ in range(2)]
    saved = loader.state_dict()
    expected = [batch.tolist() for batch in iterator]  # the 3 remaining batches of the epoch
    assert len(expected) == 3

    restarted = PrioritizedSampler(list(range(10)), state.values, eps=0.05, seed=0)
    loader = StatefulDataLoader(list(range(10)), batch_size=2, sampler=restarted)
    loader.load_state_dict(saved)
    assert [batch.tolist() for batch in loader] == expected
