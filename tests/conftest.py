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


@pytest.fixture(autouse=True)
def transfer_queue_emptied_after_each_test(request):
    """Each test that uses the session's TransferQueue leaves it empty, passed or failed: verl's V1
    worker writes to the fixed partitions "train" and "val", and a test that lists or samples a
    partition must find only its own rows, whichever tests ran before it."""
    if "transfer_queue" not in request.fixturenames:
        yield
        return
    tq = request.getfixturevalue("transfer_queue")
    yield
    for partition, rows in tq.kv_list().items():
        if rows:
            tq.kv_clear(keys=list(rows), partition_id=partition)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """The CPU launcher's WORKDIR (tiny model and chain-sum data), built once for every e2e module:
    the model's warm start (28-38 s at load average 2; 20 min was seen at load average 9) runs
    here, outside the timed runs. `SKPO_E2E_WORKDIR=DIR` builds it in DIR instead, or reuses what
    `python -m skpo_verl.demo.prepare DIR` built there with the same specs."""
    from pathlib import Path

    from skpo_verl.demo.prepare import prepare

    given = os.environ.get("SKPO_E2E_WORKDIR")
    directory = Path(given) if given else tmp_path_factory.mktemp("cpu_tiny")
    prepare(str(directory))
    return directory
