"""Connecting to a Dask cluster: an in-process LocalCluster (default) or a scheduler address."""

from __future__ import annotations

import os
from typing import Any

from mosaicflow.errors import ClusterError


def default_workers() -> int:
    """Local workers by default: one per core, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def connect(
    address: str = "local",
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str = "auto",
    timeout: float = 10.0,
) -> Any:
    """Return a ``distributed.Client``.

    Parameters
    ----------
    address : str
        ``"local"`` starts a ``LocalCluster`` of worker processes on 127.0.0.1; a scheduler
        address such as ``tcp://10.0.0.5:8786`` connects to a running cluster.
    n_workers : int, optional
        Local workers (default: the number of cores, at most 8).
    timeout : float
        Seconds to wait for a remote scheduler before failing.

    Raises
    ------
    ClusterError
        The scheduler cannot be reached, or the address is not understood.
    """
    from distributed import Client, LocalCluster

    if address == "local":
        cluster = LocalCluster(
            n_workers=n_workers or default_workers(),
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=memory_limit,
        )
        return Client(cluster)
    if "://" not in address:
        raise ClusterError(
            f"cluster address {address!r} not understood: use 'local' or a scheduler address "
            "such as tcp://host:8786"
        )
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s ({exc})"
        ) from exc


def close(client: Any) -> None:
    """Close a client and, if it owns one, its local cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
