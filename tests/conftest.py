"""Shared fixtures: an in-process Ray + TransferQueue (verl's real storage for V1 batches)."""

import os

import pytest


@pytest.fixture(scope="session")
def transfer_queue():
    """A local Ray with verl's TransferQueue initialised the way verl's TaskRunner does it.

    One storage unit (each needs a logical CPU; the default of 2 would over-subscribe CI).
    """
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace=f"skpo-test-{os.getpid()}")
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    if started_ray:
        ray.shutdown()
