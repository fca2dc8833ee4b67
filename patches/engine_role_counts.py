"""Shim: count SKPO's loss normalisers over the whole mini-batch, before micro-batching.

SKPO normalises the downstream term by the downstream tokens and the upstream term by the
upstream rows of the *global* mini-batch (all micro-batches, all data-parallel ranks), the
way verl normalises token-mean by `batch_num_tokens`. verl 0.9.1 computes only the
all-role count (`verl/workers/engine/fsdp/transformer_impl.py::forward_backward_batch`,
l.729-734). We wrap `verl/workers/engine/base.py::BaseEngine.train_batch` (l.113, the
one place every engine receives one mini-batch): the wrapper adds the two role counts,
all-reduced over the data-parallel group, as non-tensor entries the micro-batches inherit,
then calls verl's `train_batch` whole. Batches without SKPO's `skpo_upstream_mask` column
(any other estimator) pass through untouched; nothing of verl's is dropped.
"""

from __future__ import annotations

import torch

from skpo_verl.patches.wrapping import wrap
from skpo_verl.rows import DOWNSTREAM_TOKENS, UPSTREAM_MASK, UPSTREAM_ROWS
from skpo_verl.verl_version import require_verl_version


def role_counts(upstream_mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[upstream rows with tokens, downstream tokens] for one rank's mini-batch.

    response_mask may be nested ([B, j]) or padded ([B, T]); padding rows have no tokens.
    """
    if response_mask.is_nested:
        tokens = torch.stack([row.sum() for row in response_mask.unbind()])
    else:
        tokens = response_mask.sum(dim=-1)
    tokens = tokens.to(torch.int64).cpu()
    upstream = upstream_mask.bool().cpu()
    return torch.stack([(upstream & (tokens > 0)).sum(), tokens[~upstream].sum()])


def install(engine_base) -> None:
    require_verl_version("engine_role_counts")
    wrap(engine_base.BaseEngine, "train_batch", ["self", "data", "loss_function"], _with_role_counts)


def _with_role_counts(real_train_batch):
    from verl.utils import tensordict_utils as tu
    from verl.utils.device import get_device_id

    def train_batch(self, data, loss_function):
        if UPSTREAM_MASK in data.keys():
            counts = role_counts(data[UPSTREAM_MASK], data["response_mask"])
            if torch.distributed.is_initialized():
                group = self.get_data_parallel_group()
                # gloo reduces host tensors; nccl/hccl need the accelerator (as verl's own count does).
                gloo = "gloo" in str(torch.distributed.get_backend(group))
                counts = counts.to("cpu" if gloo else get_device_id())
                torch.distributed.all_reduce(counts, group=group)
            upstream_rows, downstream_tokens = (int(c) for c in counts.tolist())
            tu.assign_non_tensor(data, **{UPSTREAM_ROWS: upstream_rows, DOWNSTREAM_TOKENS: downstream_tokens})
        return real_train_batch(self, data, loss_function)

    return train_batch
