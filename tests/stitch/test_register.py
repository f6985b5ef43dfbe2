"""Pairwise registration: measured offsets of neighbouring synthetic tiles against the truth,
and null pairs scoring at chance level."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicflow import synth
from mosaicflow.io import read_tileset
from mosaicflow.stitch import register_pairs
from mosaicflow.stitch.register import candidate_pairs, masked_ncc


@pytest.fixture
def grid(write_grid, tmp_path):
    return write_grid(tmp_path / "grid", 2)


def _truth(folder, tileset) -> np.ndarray:
    origins = synth.read_ground_truth(folder)[1]
    merged = tileset.tiles.merge(origins, on=["row", "col"], suffixes=("", "_true"))
    return merged[["y_px_true", "x_px_true"]].to_numpy(float)


def test_masked_ncc_finds_a_known_shift():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(80, 90))
    ref, mov = image[10:60, 5:70], image[17:67, 1:66]  # mov[m] = ref[m + (7, -4)]
    ncc, count = masked_ncc(ref, mov)
    k = np.unravel_index(np.argmax(np.where(count >= 500, ncc, -1)), ncc.shape)
    assert tuple(np.subtract(k, np.array(mov.shape) - 1)) == (7, -4)
    assert ncc[k] == pytest.approx(1.0)


def test_pairs_cover_grid_neighbours(grid):
    tileset = read_tileset(grid)
    pairs = set(candidate_pairs(tileset))
    rc = list(zip(tileset.tiles["row"], tileset.tiles["col"], strict=True))
    for i, (r, c) in enumerate(rc):
        for dr, dc in ((0, 1), (1, 0)):
            if (r + dr, c + dc) in rc:
                assert (i, rc.index((r + dr, c + dc))) in pairs


def test_offsets_match_truth(grid):
    tileset = read_tileset(grid)
    true = _truth(grid, tileset)
    pairs = register_pairs(tileset)
    nb = pairs[pairs["kind"] == "neighbour"]
    err = np.hypot(*(nb[["dy", "dx"]].to_numpy() - (true[nb["j"]] - true[nb["i"]])).T)
    grid_pairs = ((nb["nominal_dy"].abs() < 100) | (nb["nominal_dx"].abs() < 100)).to_numpy()
    good = err[grid_pairs] < 0.5
    assert good.mean() >= 0.9, err[grid_pairs]
    assert np.sqrt(np.mean(err[grid_pairs][good] ** 2)) < 0.2
    null = pairs.loc[pairs["kind"] == "null", "quality"]
    assert len(null) > 0
    assert nb["quality"][grid_pairs][err[grid_pairs] < 0.5].median() > null.median()


def test_lazy_builds_without_computing(grid, no_compute):
    tileset = read_tileset(grid)
    with no_compute():
        lazy = register_pairs(tileset, compute=False)
    assert hasattr(lazy, "compute")
