"""Shared fixtures: small synthetic tile grids written by mosaicflow.synth, a real LocalCluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mosaicflow import synth

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


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
