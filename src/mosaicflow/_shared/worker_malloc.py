"""glibc's allocator settings of :data:`~mosaicflow._shared.workers.WORKER_ENVIRONMENT`, applied
inside a running worker process.

glibc reads ``MALLOC_*`` from the environment once, when a process starts. A worker that a
local nanny forks from the driver (:func:`mosaicflow.cluster.local_start_method`) is a copy of
a process that started without them, so the environment the nanny sets comes too late.
``mallopt`` sets the same three values at run time: :class:`MallocSettings`, registered on the
workers of the local clusters mosaicflow starts, calls it when each worker starts (spawned
workers too, where it repeats what the environment already did). Where the C library has no
``mallopt`` (not glibc), nothing is changed. :func:`release_free_memory` trims the driver's heap
before it forks them.
"""

from __future__ import annotations

import ctypes
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from mosaicflow._shared.workers import WORKER_ENVIRONMENT

#: glibc's ``mallopt`` parameter numbers (malloc.h) of the environment variables.
MALLOPT_PARAMETERS = {
    "MALLOC_TRIM_THRESHOLD_": -1,  # M_TRIM_THRESHOLD
    "MALLOC_MMAP_THRESHOLD_": -3,  # M_MMAP_THRESHOLD
    "MALLOC_ARENA_MAX": -8,  # M_ARENA_MAX
}

#: What :func:`apply` set in this process: variable -> value (empty before, or without glibc).
applied: dict[str, int] = {}


def apply() -> dict[str, int]:
    """Set :data:`WORKER_ENVIRONMENT`'s allocator values in this process with ``mallopt``;
    returns those glibc accepted."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    for name, parameter in MALLOPT_PARAMETERS.items():
        value = int(WORKER_ENVIRONMENT[name])
        if mallopt(parameter, value) == 1:
            applied[name] = value
    return dict(applied)


def release_free_memory() -> bool:
    """Hand the memory this process has freed but glibc still holds back to the system
    (``malloc_trim(0)``); whether glibc did. A local cluster forks its workers from the driver
    (:func:`mosaicflow.cluster.local_start_method`), and a forked worker's resident memory counts
    every page the driver holds at that moment: a synthetic grid just written leaves about
    150 MB of freed heap (``docs/PERFORMANCE.md``)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    return bool(trim(0))


class MallocSettings(WorkerPlugin):
    """Worker plugin: :func:`apply` when the worker starts."""

    name = "mosaicflow-malloc-settings"

    def setup(self, worker: Any) -> None:
        apply()
