"""A local worker process that has closed cleanly exits without tearing its interpreter down.

When a local cluster closes, each worker closes (its tasks finished, every result already in
the run store), and then its process spends most of a second in the interpreter's own shutdown:
freeing every module and object it holds (NumPy, SciPy, Zarr, the chunk caches). The nanny
waits for that, so `mosaicflow run` did too: 0.7-0.9 s of cluster close at maps-48, against
0.06 s with this plugin (docs/PERFORMANCE.md).

:class:`QuickExit`, registered on the workers of the local clusters mosaicflow starts
(:func:`mosaicflow.cluster.connect`), adds an ``atexit`` handler when a worker starts. The
handlers registered after it (by the libraries the tasks import: fsspec, Zarr) run first, as
``atexit`` runs them last in, first out; then, if the worker closed cleanly (the plugin's
``teardown`` ran), it flushes logging and the standard streams and ends the process with
``os._exit(0)``. A worker that exits any other way (an error, a signal) shuts down as usual,
with its own exit status. Workers of remote and Kubernetes clusters are not touched.

A worker that has closed cleanly also stays quiet about its last heartbeat: a heartbeat already
on its way to the scheduler when the worker closes its connections fails, and distributed logs
that failure with a traceback ("Failed to communicate with scheduler during heartbeat"), which
showed at the end of a run or after Ctrl-C in about one close in ten on two busy cores. Once
the plugin's ``teardown`` has run, :func:`install`'s log filter drops that one record; before
it, a heartbeat failure is a real one and is logged as usual.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

_state = {"installed": False, "closed": False}
#: The message distributed's worker logs when a heartbeat to the scheduler fails.
HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


def _exit_now() -> None:
    """The ``atexit`` handler: end a cleanly closed worker's process at once."""
    if not _state["closed"]:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced streams
            pass
    os._exit(0)


def _not_a_closing_heartbeat(record: logging.LogRecord) -> bool:
    """The log filter: False (drop) for a heartbeat failure after the worker closed cleanly."""
    return not (_state["closed"] and str(record.msg).startswith(HEARTBEAT_FAILED))


def install() -> None:
    """Register :func:`_exit_now` with ``atexit`` and the heartbeat filter with
    ``distributed.worker``'s logger (once per process)."""
    if not _state["installed"]:
        atexit.register(_exit_now)
        logging.getLogger("distributed.worker").addFilter(_not_a_closing_heartbeat)
        _state["installed"] = True


def mark_closed() -> None:
    """Record that the worker closed cleanly: the process may skip its interpreter shutdown."""
    _state["closed"] = True


class QuickExit(WorkerPlugin):
    """Worker plugin: :func:`install` when the worker starts, :func:`mark_closed` when it
    closes."""

    name = "mosaicflow-quick-exit"

    def setup(self, worker: Any) -> None:
        install()

    def teardown(self, worker: Any) -> None:
        mark_closed()
