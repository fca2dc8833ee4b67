"""Harness: a verl `BaseEngine` without a model, for tests of what happens around the forward pass.

Its `train_batch` is verl's own `BaseEngine.train_batch` (with the shims the plugin installs
on it); the optimizer does nothing, and subclasses say what `forward_backward_batch` records.
"""


def stub_engine_class():
    from verl.workers.engine.base import BaseEngine

    class StubEngine(BaseEngine):
        def optimizer_zero_grad(self):
            return None

        def optimizer_step(self):
            return 0.0

        def is_mp_src_rank_with_outputs(self):
            return False

        def get_data_parallel_group(self):
            return None  # the default (world) group

    return StubEngine
