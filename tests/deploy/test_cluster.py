"""Cluster addresses: parsed strictly before any connection is tried; the optional back-ends
name the extra to install when their package is missing."""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest

from mosaicflow import cluster
from mosaicflow.errors import ClusterError


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("local", ("local", None)),
        ("local-cuda", ("local-cuda", None)),
        ("kubernetes", ("kubernetes", None)),
        ("kubernetes://mosaicflow", ("kubernetes", "mosaicflow")),
        ("tcp://127.0.0.1:8786", ("scheduler", "tcp://127.0.0.1:8786")),
        ("tls://scheduler.example.org:8786", ("scheduler", "tls://scheduler.example.org:8786")),
    ],
)
def test_addresses_understood(address, expected):
    assert cluster.parse_address(address) == expected


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("tcp://127.0.0.1:notaport", "bad scheduler address"),
        ("tcp://127.0.0.1:99999", "bad scheduler address"),
        ("tcp://127.0.0.1", "needs a host and a port"),
        ("tcp://:8786", "needs a host and a port"),
        ("tcp://127.0.0.1:8786/path", "needs a host and a port"),
        ("foo://x", "unknown scheme 'foo://'"),
        ("foo://", "unknown scheme 'foo://'"),
        ("kubernetes://Not_A_Name", "not a valid Kubernetes cluster name"),
        ("kubernetes://", "not a valid Kubernetes cluster name"),
        ("loca", "not understood"),
        ("", "not understood"),
    ],
)
def test_bad_addresses_fail_before_any_connection(address, says):
    start = time.monotonic()
    with pytest.raises(ClusterError, match="--cluster") as info:
        cluster.connect(address, timeout=30)
    assert says in str(info.value)
    assert time.monotonic() - start < 5  # no connection attempt, no timeout waited for


@pytest.mark.skipif(
    importlib.util.find_spec("dask_cuda") is not None, reason="dask-cuda is installed here"
)
def test_local_cuda_without_dask_cuda_names_the_gpu_extra():
    with pytest.raises(ClusterError, match=r"local-cuda.*mosaicflow\[gpu\]"):
        cluster.connect("local-cuda")


@pytest.mark.parametrize("address", ["kubernetes", "kubernetes://mosaicflow"])
def test_kubernetes_without_dask_kubernetes_names_the_k8s_extra(monkeypatch, address):
    # a None entry in sys.modules makes the import fail as if the package were absent
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    with pytest.raises(ClusterError, match=r"kubernetes.*mosaicflow\[k8s\]"):
        cluster.connect(address)


@pytest.mark.parametrize("address", ["kubernetes", "kubernetes://mosaicflow"])
def test_kubernetes_without_an_api_server_is_a_clear_error(monkeypatch, tmp_path, address):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match=r"--cluster.*cannot reach .* on Kubernetes"):
        cluster.connect(address)


def test_local_workers_start_with_the_worker_environment():
    """glibc reads its settings when a process starts: the nanny must put them in place before
    it spawns the worker (a real local cluster, its workers' own environment)."""
    import os

    from mosaicflow._shared.workers import WORKER_ENVIRONMENT

    client = cluster.connect("local", n_workers=1, threads_per_worker=1)
    try:
        seen = client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENVIRONMENT})
    finally:
        cluster.close(client)
    assert list(seen.values()) == [WORKER_ENVIRONMENT]
    assert {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"} <= set(
        WORKER_ENVIRONMENT
    )
