"""No silent hangs: with a real `dask scheduler` and `dask worker` processes on 127.0.0.1, losing
every worker fails within the stated wait (and workers arriving within it let the work finish),
a hung task fails the stage, and a lost scheduler is a clear error, not a raw traceback."""

from __future__ import annotations

import threading
import time

import dask
import pytest

from mosaicflow.errors import ClusterError
from mosaicflow.runner import Runner

pytestmark = pytest.mark.cluster


def _slow(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def _work(n: int, seconds: float):
    return dask.delayed(sum)([dask.delayed(_slow, pure=False)(i, seconds) for i in range(n)])


def test_losing_every_worker_fails_within_the_wait(dask_processes):
    client, _, workers, _ = dask_processes.cluster()
    runner = Runner(client, no_worker_s=3)
    try:
        start = time.monotonic()
        threading.Timer(1.5, lambda: [dask_processes.kill(w) for w in workers]).start()
        with pytest.raises(ClusterError, match=r"no Dask worker for 3 s .*--resume"):
            runner.compute(_work(12, 0.5), "probability")
        assert time.monotonic() - start < 30
    finally:
        client.close()


def test_workers_arriving_within_the_wait_let_the_work_finish(dask_processes):
    client, _, workers, address = dask_processes.cluster()
    runner = Runner(client, no_worker_s=60)
    try:

        def replace() -> None:
            for w in workers:
                dask_processes.kill(w)
            time.sleep(1.0)
            dask_processes.worker(address)

        threading.Timer(1.0, replace).start()
        assert runner.compute(_work(12, 0.3), "labels") == sum(range(12))
    finally:
        client.close()


def test_a_hung_task_stops_the_stage(dask_processes):
    client, _, _, _ = dask_processes.cluster(n_workers=1)
    runner = Runner(client, stall_min_s=3, stall_factor=5)
    try:
        work = dask.delayed(sum)(
            [dask.delayed(_slow, pure=False)(i, 0.1) for i in range(5)]
            + [dask.delayed(_slow, pure=False)(99, 120.0)]
        )
        start = time.monotonic()
        with pytest.raises(ClusterError, match="seems hung"):
            runner.compute(work, "particles")
        assert time.monotonic() - start < 60
    finally:
        client.close()


def test_a_lost_scheduler_is_a_clear_error(dask_processes):
    client, scheduler, _, _ = dask_processes.cluster()
    runner = Runner(client, no_worker_s=5)
    try:
        threading.Timer(1.0, lambda: dask_processes.kill(scheduler)).start()
        start = time.monotonic()
        with pytest.raises(ClusterError, match=r"lost the Dask scheduler|no Dask worker"):
            runner.compute(_work(20, 0.5), "denoised")
        assert time.monotonic() - start < 90
    finally:
        client.close(timeout=5)


def test_a_tuple_of_collections_is_computed_together(dask_processes):
    """``compute`` of a tuple gives a tuple of results, on a cluster and without one."""
    client, _, _, _ = dask_processes.cluster()
    try:
        work = (_work(3, 0.0), dask.delayed(len)([1, 2]))
        assert Runner(client).compute(work, "both") == (3, 2)
        assert Runner().compute(work, "both") == (3, 2)
    finally:
        client.close()
