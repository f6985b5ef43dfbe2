"""Computing Dask collections on the run's client with a progress bar per stage, and a watch
that turns a silent hang into a clear error.

Dask waits for ever when every worker is gone, and has no task timeout. While a stage computes
on a cluster, :class:`Runner` watches it: no worker for ``no_worker_s`` seconds, a scheduler
that cannot be reached, or no task finishing for far longer than the slowest task so far took
(``stall_factor`` times it, at least ``stall_min_s`` seconds: a hung call) stops the stage with
:class:`~mosaicflow.errors.ClusterError`; the pipeline then records the stage as failed.
Workers that come back within the wait let the stage finish.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dask
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mosaicflow.errors import ClusterError

#: Defaults of the watch (seconds, and a factor of the slowest finished task).
NO_WORKER_S = 120.0
STALL_FACTOR = 20.0
STALL_MIN_S = 600.0
#: How often the cluster itself (workers, hung tasks) is checked while waiting (s). Between
#: the checks the watch sleeps until one of its futures finishes (each future wakes it): a
#: computation ends as soon as its last task does, and the driver, which also runs the
#: scheduler of a local cluster, spends no CPU looking at futures that have not changed.
CHECK_INTERVAL_S = 0.5


class Runner:
    """Computes collections, on a ``distributed.Client`` when given one, showing progress.

    Parameters
    ----------
    client : distributed.Client, optional
        Where to compute. Without one, Dask's default scheduler is used.
    console : rich.console.Console, optional
        Where progress goes; ``None`` disables progress output.
    no_worker_s : float
        How long a stage may wait with no worker at all before it fails.
    stall_factor, stall_min_s : float
        A stage fails when no task has finished for ``max(stall_min_s, stall_factor x the
        slowest task so far)`` seconds.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        console: Console | None = None,
        no_worker_s: float = NO_WORKER_S,
        stall_factor: float = STALL_FACTOR,
        stall_min_s: float = STALL_MIN_S,
    ) -> None:
        self.client = client
        self.console = console
        self.no_worker_s = float(no_worker_s)
        self.stall_factor = float(stall_factor)
        self.stall_min_s = float(stall_min_s)

    def compute(self, collection: Any, description: str) -> Any:
        """Compute ``collection`` (one Dask collection, or a tuple of them computed together:
        then a tuple of their results) and return its result."""
        if self.client is None:
            (result,) = dask.compute(collection)
            return result
        from distributed import futures_of
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError

        try:
            persisted = self.client.persist(collection)
            futures = futures_of(persisted)
            if futures:
                self._watch(futures, description)
            if isinstance(collection, tuple):
                return tuple(self.client.gather(self.client.compute(list(persisted))))
            return self.client.compute(persisted).result()
        except (CommClosedError, FutureCancelledError) as exc:  # the scheduler went away
            raise self._lost(description, exc) from None

    def start(self, collection: Any) -> Any:
        """``collection`` set computing on the client without waiting for it; :meth:`compute`
        of what this returns waits for it, and :meth:`cancel` drops it. Without a client,
        ``collection`` unchanged: it is computed by :meth:`compute`."""
        return collection if self.client is None else self.client.persist(collection)

    def cancel(self, collection: Any) -> None:
        """Cancel the tasks of a collection :meth:`start` returned, whatever their state."""
        if self.client is not None:
            from distributed import futures_of

            self.client.cancel(futures_of(collection))

    def _lost(self, description: str, exc: BaseException) -> ClusterError:
        address = getattr(getattr(self.client, "scheduler", None), "address", "?")
        return ClusterError(
            f"stage {description!r}: lost the Dask scheduler at {address} "
            f"({type(exc).__name__}: {exc}); the stage is not done: rerun with --resume once "
            "the cluster is back"
        )

    def _watch(self, futures: list[Any], description: str) -> None:
        """Wait for ``futures`` with a progress bar, failing on the hangs described above."""
        pending = set(futures)
        total = len(futures)
        bar = None
        if self.console is not None:
            bar = Progress(
                TextColumn("[bold]{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            bar.start()
            task = bar.add_task(description, total=total)
        started = last_done = checked = time.monotonic()
        slowest = 0.0
        no_workers_since: float | None = None
        finished = threading.Event()  # set when a future finishes (Dask's callback thread)
        for future in futures:
            future.add_done_callback(lambda _: finished.set())
        try:
            while pending:
                done = {f for f in pending if f.status != "pending"}
                now = time.monotonic()
                if any(f.status == "cancelled" for f in done):
                    raise self._lost(description, RuntimeError("its tasks were cancelled"))
                if done:
                    pending -= done
                    slowest = max(slowest, now - last_done if last_done > started else 0.0)
                    last_done = now
                    if bar is not None:
                        bar.advance(task, len(done))
                    if any(f.status == "error" for f in done):
                        return  # the caller's result() raises the task's own error
                    continue
                if self.client.status != "running":  # reconnecting to a lost scheduler
                    no_workers_since = no_workers_since or now
                    if now - no_workers_since > self.no_worker_s:
                        raise self._lost(
                            description, ConnectionError(f"client {self.client.status}")
                        )
                    time.sleep(0.25)
                    continue
                if now - checked < CHECK_INTERVAL_S:
                    finished.wait(CHECK_INTERVAL_S - (now - checked))
                    finished.clear()  # the futures are looked at again before the next wait
                    continue
                checked = now
                workers = self._n_workers()
                if workers == 0:
                    no_workers_since = no_workers_since or now
                    if now - no_workers_since > self.no_worker_s:
                        raise ClusterError(
                            f"stage {description!r}: no Dask worker for {self.no_worker_s:g} s "
                            f"({total - len(pending)} of {total} tasks done); start workers or "
                            "check the cluster, then rerun with --resume"
                        )
                else:
                    no_workers_since = None
                    limit = max(self.stall_min_s, self.stall_factor * slowest)
                    if now - last_done > limit:
                        raise ClusterError(
                            f"stage {description!r}: no task finished for {now - last_done:.0f} "
                            f"s, over {limit:g} s ({self.stall_factor:g} x the slowest task so "
                            f"far, at least {self.stall_min_s:g} s): a task seems hung "
                            f"({len(pending)} of {total} left); the stage is stopped"
                        )
                finished.wait(CHECK_INTERVAL_S)
                finished.clear()
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        finally:
            if bar is not None:
                bar.stop()

    def _n_workers(self) -> int:
        try:
            return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except TypeError:  # older distributed: no n_workers keyword
            return len(self.client.scheduler_info().get("workers", {}))
        except (OSError, TimeoutError) as exc:  # the scheduler cannot be asked any more
            raise self._lost("?", exc) from None
