"""The engine shim adds mini-batch-wide role counts, summed over data-parallel ranks."""

import socket

import torch
import torch.multiprocessing as mp
from engine_stub import stub_engine_class
from tensordict import TensorDict

# Rank r's mini-batch: rank 0 has 1 upstream row (2 tokens) + downstream rows of 3 and 1 tokens;
# rank 1 has 1 upstream row, 1 padding copy of it (0 tokens) and a downstream row of 5 tokens.
RANK_ROWS = {
    0: ([1, 0, 0], [[1, 1], [1, 1, 1], [1]]),
    1: ([1, 1, 0], [[1, 1, 1], [0], [1, 1, 1, 1, 1]]),
}


def _engine_class():
    class RecordingEngine(stub_engine_class()):
        def __init__(self):
            self.seen = None

        def forward_backward_batch(self, data, loss_function, forward_only=False):
            from verl.utils import tensordict_utils as tu

            self.seen = (
                tu.get_non_tensor_data(data, "skpo_upstream_rows", None),
                tu.get_non_tensor_data(data, "skpo_downstream_tokens", None),
            )
            return {}

    return RecordingEngine


def _mini_batch(rank):
    upstream, masks = RANK_ROWS[rank]
    mask = torch.nested.nested_tensor([torch.tensor(m) for m in masks], layout=torch.jagged)
    return TensorDict({"skpo_upstream_mask": torch.tensor(upstream), "response_mask": mask}, batch_size=[3])


def _rank_main(rank, port, results):
    import verl
    import verl.workers.engine.base  # noqa: F401 - triggers the engine shim

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        engine = _engine_class()()
        engine.train_batch(_mini_batch(rank), loss_function=None)
        results[rank] = engine.seen
    finally:
        torch.distributed.destroy_process_group()


def test_counts_are_summed_over_data_parallel_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(port, results), nprocs=2, join=True)
        # upstream rows with tokens: 1 (rank 0) + 1 (rank 1; its padding copy has none) = 2;
        # downstream tokens: 3 + 1 (rank 0) + 5 (rank 1) = 9. Both ranks see the global counts.
        assert dict(results) == {0: (2, 9), 1: (2, 9)}


def test_batches_without_skpo_rows_are_left_alone():
    import verl.workers.engine.base  # noqa: F401

    engine = _engine_class()()
    data = TensorDict({"response_mask": torch.ones(2, 3)}, batch_size=[2])
    engine.train_batch(data, loss_function=None)
    assert engine.seen == (None, None)
