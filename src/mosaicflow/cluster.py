"""Connecting to a Dask cluster: an in-process LocalCluster (default), one worker per GPU
(dask-cuda), a scheduler address, or a Kubernetes cluster (dask-kubernetes operator)."""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

from mosaicflow._shared.dashboard import without_dashboard
from mosaicflow._shared.workers import IMPORT_THREAD, WORKER_CONFIG, WORKER_ENVIRONMENT
from mosaicflow.config import START_METHODS
from mosaicflow.errors import ClusterError, ConfigError

#: How the ``--cluster`` option and the ``cluster.address`` setting are named in messages.
OPTION = "--cluster (cluster.address)"
SCHEMES = ("tcp", "tls")
KUBERNETES = "kubernetes"
USAGE = (
    "use 'local', 'local-cuda', a scheduler address tcp://host:port, 'kubernetes' or "
    "kubernetes://NAME"
)
#: Packages that start threads or device contexts a forked child cannot use (OpenMP pools,
#: CUDA): with one of them loaded in this process, ``auto`` starts workers with ``spawn``.
FORK_UNSAFE = ("torch", "cupy", "cucim", "onnxruntime", "tensorflow", "jax", "numba")


def default_workers() -> int:
    """Local workers by default: one per core, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def parse_address(address: str) -> tuple[str, str | None]:
    """What a cluster address asks for, checked before any connection is tried.

    Parameters
    ----------
    address : str
        ``local``, ``local-cuda``, ``tcp://host:port`` (or ``tls://``), ``kubernetes`` or
        ``kubernetes://NAME``.

    Returns
    -------
    kind : str
        ``"local"``, ``"local-cuda"``, ``"scheduler"`` or ``"kubernetes"``.
    target : str or None
        The scheduler address, or the name of an existing DaskCluster; None otherwise.

    Raises
    ------
    ClusterError
        The address is not understood; the message names the option.
    """
    if not isinstance(address, str) or not address.strip():
        raise ClusterError(f"{OPTION} {address!r} not understood: {USAGE}")
    address = address.strip()
    if address in ("local", "local-cuda", KUBERNETES):
        return address, None
    if "://" not in address:
        raise ClusterError(f"{OPTION} {address!r} not understood: {USAGE}")
    scheme, rest = address.split("://", 1)
    if scheme == KUBERNETES:
        from mosaicflow.deploy import check_name

        try:
            return KUBERNETES, check_name(rest, what=OPTION)
        except ConfigError as exc:
            raise ClusterError(str(exc)) from None
    if scheme not in SCHEMES:
        raise ClusterError(f"{OPTION} {address!r}: unknown scheme {scheme + '://'!r}; {USAGE}")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ClusterError(
            f"{OPTION} {address!r}: bad scheduler address ({exc}); {USAGE}"
        ) from None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        raise ClusterError(
            f"{OPTION} {address!r}: a scheduler address needs a host and a port, e.g. "
            "tcp://10.0.0.5:8786"
        )
    return "scheduler", address


#: Seconds :func:`connect` waits for a remote scheduler unless told otherwise.
CONNECT_TIMEOUT_S = 10.0


def connect(
    address: str = "local",
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str = "auto",
    timeout: float | None = None,
    gpu_workers: int = 0,
    start_method: str = "auto",
    dashboard: bool = False,
) -> Any:
    """Return a ``distributed.Client``.

    Parameters
    ----------
    address : str
        ``"local"`` starts a ``LocalCluster`` of worker processes on 127.0.0.1;
        ``"local-cuda"`` a dask-cuda ``LocalCUDACluster`` (one worker per GPU, each with the
        Dask resource ``GPU=1``); a scheduler address such as ``tcp://10.0.0.5:8786`` connects
        to a running cluster; ``"kubernetes"`` creates a DaskCluster from
        ``mosaicflow.deploy.cluster_spec()`` (the spec of ``deployments/kubernetes``) and
        ``kubernetes://NAME`` connects to an existing DaskCluster.
    n_workers : int, optional
        Local workers (default: the number of cores, at most 8; for ``local-cuda``, one per
        visible GPU), or the CPU workers of a new Kubernetes cluster.
    timeout : float, optional
        Seconds to wait for a remote scheduler before failing (default
        :data:`CONNECT_TIMEOUT_S`).
    gpu_workers : int
        For ``"kubernetes"``: workers of the GPU worker group added to the new cluster
        (``mosaicflow.deploy.gpu_worker_spec``); 0 adds none.
    start_method : {"auto", "fork", "spawn"}
        How a ``local`` cluster's nannies start their worker processes
        (:func:`local_start_method`). ``local-cuda`` always spawns: CUDA does not survive a
        fork.
    dashboard : bool
        A ``local`` or ``local-cuda`` cluster also serves Dask's dashboard (Bokeh) on a free
        port; :func:`mosaicflow._shared.dashboard.dashboard_link` gives its address. Off by
        default: on a 2-core machine it cost about 1 s of the driver's CPU at the cluster's
        start and about 1 s more over a 126 Mpx run (``docs/PERFORMANCE.md``). A running
        scheduler or Kubernetes cluster keeps its own.

    Raises
    ------
    ClusterError
        The address is not understood (before any connection is tried), the back-end's
        package is not installed, or the cluster cannot be reached or started.
    """
    kind, target = parse_address(address)
    method = local_start_method(start_method)
    from distributed import Client, LocalCluster

    if kind == "local":
        if method == "fork":
            _prepare_fork()
        with _worker_environment(method):
            cluster = LocalCluster(
                n_workers=n_workers or default_workers(),
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                memory_limit=memory_limit,
                **_dashboard_options(dashboard),
            )
        return without_dashboard(_with_quick_exit(Client(cluster)), dashboard)
    if kind == "local-cuda":
        with _worker_environment("spawn"):
            client = Client(_local_cuda(n_workers, threads_per_worker, memory_limit, dashboard))
            return without_dashboard(_with_quick_exit(client), dashboard)
    if kind == "kubernetes":
        return Client(_kubernetes(target, n_workers, gpu_workers))
    if timeout is None:
        timeout = CONNECT_TIMEOUT_S
    try:
        return Client(target, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s ({exc})"
        ) from exc


def _dashboard_options(dashboard: bool) -> dict[str, Any]:
    """A local cluster's scheduler options: its HTTP server (health and metrics routes) on a
    free port of 127.0.0.1 either way, with Dask's Bokeh dashboard only when asked (without
    ``dashboard=False`` the scheduler would import Bokeh and build it whenever it serves
    HTTP)."""
    return {"dashboard_address": ":0", "scheduler_kwargs": {"dashboard": bool(dashboard)}}


def local_start_method(asked: str = "auto") -> str:
    """How the nannies of a local cluster start their worker processes: ``"fork"`` or
    ``"spawn"`` (multiprocessing's start methods).

    ``spawn`` (Dask's default) starts a fresh interpreter that imports Dask, distributed and
    the main module again: 3.0-3.5 s for two workers on two cores, longer than some whole
    stages. ``fork`` copies this process, its imports included: 0.8-1.0 s
    (``docs/PERFORMANCE.md``). ``auto`` forks on Linux unless this process holds something a
    forked child cannot use (:data:`FORK_UNSAFE`: OpenMP thread pools, CUDA contexts); the
    workers then get glibc's settings from
    :class:`~mosaicflow._shared.worker_malloc.MallocSettings`,
    since glibc read its environment when this process started.

    Raises
    ------
    ConfigError
        ``asked`` is not one of :data:`START_METHODS`, or is ``fork`` where the platform has
        no fork.
    """
    if asked not in START_METHODS:
        raise ConfigError(
            f"cluster.start_method must be one of {', '.join(START_METHODS)}, got {asked!r}"
        )
    import multiprocessing

    can_fork = "fork" in multiprocessing.get_all_start_methods()
    if asked == "fork" and not can_fork:
        raise ConfigError(f"cluster.start_method: fork is not available on {sys.platform}")
    if asked != "auto":
        return asked
    unsafe = any(name in sys.modules for name in FORK_UNSAFE)
    return "fork" if can_fork and sys.platform == "linux" and not unsafe else "spawn"


def _prepare_fork(timeout: float = 60.0) -> None:
    """Before the workers are forked from this process: let an earlier run's background imports
    (:data:`IMPORT_THREAD`) finish, since a forked copy of a half-finished import would keep
    that module's import lock for ever; then free what is garbage and hand glibc's free heap
    back to the system, so that the workers do not start holding it."""
    import gc
    import threading

    from mosaicflow._shared.worker_malloc import release_free_memory

    for thread in threading.enumerate():
        if thread.name == IMPORT_THREAD and thread is not threading.current_thread():
            thread.join(timeout)
    gc.collect()
    release_free_memory()


def _worker_environment(method: str) -> Any:
    """Dask's configuration with :data:`WORKER_ENVIRONMENT` in the environment its nannies give
    the worker processes they start (over Dask's own glibc setting), :data:`WORKER_CONFIG`
    in the configuration they hand them, and ``method`` as the way they start them."""
    import dask

    key = "distributed.nanny.pre-spawn-environ"
    return dask.config.set(
        {
            key: {**dask.config.get(key, {}), **WORKER_ENVIRONMENT},
            **WORKER_CONFIG,
            "distributed.worker.multiprocessing-method": method,
        }
    )


def _with_quick_exit(client: Any) -> Any:
    """``client`` with :class:`~mosaicflow._shared.worker_exit.QuickExit` on its workers (a
    local worker that closed cleanly skips its interpreter's shutdown: 0.7 s at close) and
    :class:`~mosaicflow._shared.worker_malloc.MallocSettings` (glibc's settings, also in
    workers forked from this process)."""
    from mosaicflow._shared.worker_exit import QuickExit
    from mosaicflow._shared.worker_malloc import MallocSettings

    try:
        client.register_plugin(QuickExit())
        client.register_plugin(MallocSettings())
    except Exception as exc:  # the cluster is ours: never leave it running
        close(client)
        raise ClusterError(f"{OPTION}: the local workers did not start cleanly ({exc})") from exc
    return client


def _local_cuda(
    n_workers: int | None, threads_per_worker: int, memory_limit: str, dashboard: bool
) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ClusterError(
            f"{OPTION} 'local-cuda' needs dask-cuda, which is not installed: "
            f"pip install 'mosaicflow[gpu]' ({exc})"
        ) from None
    kwargs: dict[str, Any] = {}
    if n_workers:
        kwargs["n_workers"] = n_workers
    return LocalCUDACluster(
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        host="127.0.0.1",
        resources={"GPU": 1},  # the label the pipeline routes model inference windows by
        **_dashboard_options(dashboard),
        **kwargs,
    )


def _kubernetes(name: str | None, n_workers: int | None, gpu_workers: int) -> Any:
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as exc:
        raise ClusterError(
            f"{OPTION} 'kubernetes' needs dask-kubernetes, which is not installed: "
            f"pip install 'mosaicflow[k8s]' ({exc})"
        ) from None
    from mosaicflow import deploy

    try:
        if name is not None:
            return KubeCluster.from_name(name)
        d = deploy.Deployment(
            cpu_workers=n_workers or deploy.Deployment.cpu_workers, gpu_workers=gpu_workers
        )
        cluster = KubeCluster(custom_cluster_spec=deploy.cluster_spec(d))
        if gpu_workers:
            cluster.add_worker_group("gpu", custom_spec=deploy.gpu_worker_spec(d))
        return cluster
    except ClusterError:
        raise
    except Exception as exc:  # kr8s, kubernetes and the operator raise many kinds
        what = f"DaskCluster {name!r}" if name else "a new DaskCluster"
        raise ClusterError(
            f"{OPTION}: cannot reach {what} on Kubernetes ({type(exc).__name__}: {exc})"
        ) from exc


def close(client: Any) -> None:
    """Close a client and, if it owns one, its cluster (a local one, or a Kubernetes cluster
    it created; one connected by name is left running)."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
