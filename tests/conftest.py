"""Shared fixtures: small synthetic tile grids written by mosaicflow.synth, a real LocalCluster,
the "no compute while building a graph" guard, the Hypothesis profiles, and synthetic shape
crops measured like the pipeline with one forest trained on them (the classify and CLI tests)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
from hypothesis import settings
from skimage.draw import disk, polygon

from mosaicflow import synth
from mosaicflow.classify import ParticleClassifier, features_from_crops, train

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

# Property tests draw whole images; a per-example deadline would only measure machine load.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


class _NoCompute(dask.callbacks.Callback):
    def _start(self, dsk):
        raise AssertionError("a graph was computed while it was being built")


@pytest.fixture
def no_compute() -> type[dask.callbacks.Callback]:
    """A context manager that fails the test if any Dask graph is computed inside it."""
    return _NoCompute


@pytest.fixture(scope="session")
def small_grid(tmp_path_factory: pytest.TempPathFactory) -> synth.GridTruth:
    """2x3 tiles of 300x400 px, high SNR, realistic stage error: a seconds-fast pipeline input."""
    folder = tmp_path_factory.mktemp("grid") / "acq"
    return synth.write_maps_grid(folder, rows=2, cols=3, tile_shape=(300, 400), snr=30.0, seed=3)


@pytest.fixture
def grid_copy(small_grid: synth.GridTruth, tmp_path: Path) -> Path:
    """A private copy of the small grid that a test may damage."""
    dest = tmp_path / "acq"
    shutil.copytree(small_grid.folder, dest)
    return dest


@pytest.fixture(scope="session")
def client():
    """A real distributed LocalCluster with two worker processes on 127.0.0.1."""
    from mosaicflow import cluster

    c = cluster.connect("local", n_workers=2, threads_per_worker=1)
    yield c
    cluster.close(c)


# -- particle classification ---------------------------------------------------------------

SHAPES = ("disc", "hexagon", "square")


def _shape_crop(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r = rng.uniform(10, 22)
    size = int(2 * r + 12)
    c = size / 2
    mask = np.zeros((size, size), dtype=bool)
    if kind == "disc":
        mask[disk((c, c), r, shape=mask.shape)] = True
    else:
        sides = 6 if kind == "hexagon" else 4
        angles = rng.uniform(0, 2 * np.pi) + np.arange(sides) * 2 * np.pi / sides
        mask[polygon(c + r * np.sin(angles), c + r * np.cos(angles), mask.shape)] = True
    image = np.where(mask, 0.8, 0.2) + rng.normal(0, 0.05, mask.shape)
    return image, mask


@pytest.fixture(scope="session")
def shape_names() -> tuple[str, ...]:
    """The classes of :func:`shapes`, sorted (the forest's order)."""
    return SHAPES


@pytest.fixture(scope="session")
def shape_crop() -> Callable[[str, np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """``shape_crop(kind, rng) -> (image, mask)``: one disc, hexagon or square crop of random
    size and rotation, bright on a dark noisy background."""
    return _shape_crop


@pytest.fixture(scope="session")
def shapes() -> pd.DataFrame:
    """Discs, hexagons and squares (random size and rotation), measured like the pipeline."""
    rng = np.random.default_rng(11)
    kinds = [k for k in SHAPES for _ in range(40)]
    crops = [_shape_crop(k, rng) for k in kinds]
    table = features_from_crops([c[0] for c in crops], [c[1] for c in crops])
    table["truth"] = kinds
    table["group"] = [f"g{i % 5}" for i in range(len(kinds))]
    return table


@pytest.fixture(scope="session")
def model(shapes) -> ParticleClassifier:
    """60 trees, 3-fold CV, one thread: trained on :func:`shapes`."""
    return train(shapes, shapes["truth"], n_estimators=60, cv=3, n_jobs=1)


# -- real scheduler and worker processes ---------------------------------------------------
class DaskProcesses:
    """Starts `dask scheduler` / `dask worker` processes on 127.0.0.1 and kills them."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, kind: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"distributed.cli.dask_{kind}", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def worker(self, address: str) -> subprocess.Popen:
        return self.start("worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny")

    def cluster(self, n_workers: int = 2):
        """``(client, scheduler, workers, address)`` of a fresh scheduler with workers."""
        from distributed import Client

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        address = f"tcp://127.0.0.1:{port}"
        scheduler = self.start(
            "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"
        )
        workers = [self.worker(address) for _ in range(n_workers)]
        client = Client(address, timeout=30)
        client.wait_for_workers(n_workers, timeout=60)
        return client, scheduler, workers, address

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def dask_processes():
    """Real scheduler and worker processes; every one still running is killed at the end."""
    procs = DaskProcesses()
    yield procs
    for proc in procs.started:
        procs.kill(proc)


# -- a real S3-protocol server ---------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """``serve(folder, bucket, key, secret)``: a moto S3 server on 127.0.0.1 (in server mode,
    spoken to over HTTP) with ``folder`` uploaded to ``s3://bucket/acq``; returns
    ``(endpoint, boto3 client)``. Every server started is stopped at the end of the session."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    servers = []

    def serve(folder: Path, bucket: str, key: str, secret: str):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        servers.append(server)
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )
        client.create_bucket(Bucket=bucket)
        root = Path(folder)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, f"acq/{path.relative_to(root).as_posix()}")
        return endpoint, client

    yield serve
    for server in servers:
        server.stop()
