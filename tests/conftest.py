"""Shared fixtures: small synthetic tile grids written by mosaicflow.synth, a real LocalCluster,
the "no compute while building a graph" guard, the Hypothesis profiles, and synthetic shape
crops measured like the pipeline with one forest trained on them (the classify and CLI tests)."""

from __future__ import annotations

import os
import shutil
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
