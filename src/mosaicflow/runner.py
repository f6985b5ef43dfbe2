"""Computing Dask collections on the run's client with a progress bar per stage."""

from __future__ import annotations

from typing import Any

import dask
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Runner:
    """Computes collections, on a ``distributed.Client`` when given one, showing progress.

    Parameters
    ----------
    client : distributed.Client, optional
        Where to compute. Without one, Dask's default scheduler is used.
    console : rich.console.Console, optional
        Where progress goes; ``None`` disables progress output.
    """

    def __init__(self, client: Any = None, *, console: Console | None = None) -> None:
        self.client = client
        self.console = console

    def compute(self, collection: Any, description: str) -> Any:
        """Compute ``collection`` (one Dask collection) and return its result."""
        if self.client is None:
            (result,) = dask.compute(collection)
            return result
        from distributed import as_completed, futures_of

        persisted = self.client.persist(collection)
        futures = futures_of(persisted)
        if self.console is not None and futures:
            with Progress(
                TextColumn("[bold]{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            ) as bar:
                task = bar.add_task(description, total=len(futures))
                for future in as_completed(futures):
                    if future.status == "error":
                        break
                    bar.advance(task)
        return self.client.compute(persisted).result()
