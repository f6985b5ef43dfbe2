"""Gain/offset equalisation and the flat field: known corrections recovered from tiles cut out
of one scene, and the seam step of a synthetic Maps grid reduced."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from mosaicflow import synth
from mosaicflow.io import read_tileset
from mosaicflow.stitch import register_tileset
from mosaicflow.stitch.equalize import (
    equalize_tileset,
    estimate_flatfield,
    overlap_stats,
    solve_gain_offset,
)
from mosaicflow.stitch.seams import seam_contrast

TILE = (96, 128)
STEP = (80, 104)


def _scene(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 40 * ndimage.gaussian_filter(rng.normal(size=shape), 3)).astype(np.float32)


def _write_cut_tiles(folder: Path, gains, offsets, shading=None, rows=2, cols=3, seed=0) -> Path:
    """Tiles cut from one scene at exact grid positions, each ``gain * part * shading +
    offset``, float32 TIFFs with a layout CSV giving the positions."""
    folder.mkdir(parents=True)
    scene = _scene(((rows - 1) * STEP[0] + TILE[0], (cols - 1) * STEP[1] + TILE[1]), seed)
    lines = ["file,row,col,stage_y_nm,stage_x_nm,pixel_size_nm"]
    k = 0
    for r in range(rows):
        for c in range(cols):
            y, x = r * STEP[0], c * STEP[1]
            part = scene[y : y + TILE[0], x : x + TILE[1]]
            if shading is not None:
                part = part * shading
            tifffile.imwrite(
                folder / f"t{k}.tif", (gains[k] * part + offsets[k]).astype(np.float32)
            )
            lines.append(f"t{k}.tif,{r + 1},{c + 1},{y * 2.0},{x * 2.0},2.0")
            k += 1
    (folder / "layout.csv").write_text("\n".join(lines) + "\n")
    return folder / "layout.csv"


def test_known_gains_and_offsets_are_undone(tmp_path):
    gains = np.array([1.0, 1.2, 0.8, 1.1, 0.9, 1.3])
    offsets = np.array([0.0, -15.0, 20.0, 5.0, -3.0, 8.0])
    tileset = read_tileset(_write_cut_tiles(tmp_path / "acq", gains, offsets))
    table, info = equalize_tileset(tileset)
    assert info["n_overlaps"] == len(overlap_stats(tileset))
    # corrected = est_gain * (gain * scene + offset) + est_offset must be one map for all tiles
    scale = table["gain"].to_numpy() * gains
    shift = table["gain"].to_numpy() * offsets + table["offset"].to_numpy()
    np.testing.assert_allclose(scale, scale.mean(), rtol=1e-5)
    np.testing.assert_allclose(shift, shift.mean(), atol=1e-3 * 100)
    # the gauge: geometric mean gain 1 (priors), so the mosaic keeps its overall brightness
    assert abs(np.log(table["gain"]).mean()) < 1e-6


def test_a_tile_without_overlaps_keeps_gain_one_and_offset_zero():
    stats = pd.DataFrame(
        {
            "i": [0],
            "j": [1],
            "n": [1000],
            "mean_i": [100.0],
            "mean_j": [50.0],
            "std_i": [10.0],
            "std_j": [5.0],
        }
    )
    table = solve_gain_offset(stats, 3)
    assert table.loc[2, "gain"] == pytest.approx(1.0) and table.loc[2, "offset"] == 0.0
    assert table.loc[0, "gain"] * 10 == pytest.approx(table.loc[1, "gain"] * 5, rel=1e-6)


def test_flat_spread_constrains_only_offsets():
    stats = pd.DataFrame(
        {
            "i": [0],
            "j": [1],
            "n": [1000],
            "mean_i": [100.0],
            "mean_j": [90.0],
            "std_i": [0.0],
            "std_j": [3.0],
        }
    )
    table = solve_gain_offset(stats, 2)
    assert np.isfinite(table.to_numpy()).all()
    np.testing.assert_allclose(table["gain"], 1.0)
    assert table.loc[0, "offset"] + 100 == pytest.approx(table.loc[1, "offset"] + 90, abs=1e-3)


def test_the_shared_shading_is_recovered(tmp_path):
    yy, xx = np.mgrid[: TILE[0], : TILE[1]]
    shading = 1.0 - 0.25 * ((yy / (TILE[0] - 1) - 0.5) ** 2 + (xx / (TILE[1] - 1) - 0.5) ** 2) * 2
    n = 12
    layout = _write_cut_tiles(
        tmp_path / "acq", np.ones(n), np.zeros(n), shading=shading, rows=3, cols=4, seed=3
    )
    flat = estimate_flatfield(read_tileset(layout))
    truth = shading / shading.mean()
    assert flat.shape == TILE and flat.dtype == np.float32
    assert abs(float(flat.mean()) - 1.0) < 1e-5
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(flat[inner] - truth[inner]).max() < 0.03
    assert np.corrcoef(flat.ravel(), truth.ravel())[0, 1] > 0.95


def test_equalisation_cuts_the_seam_step_of_a_maps_grid(tmp_path):
    folder = tmp_path / "grid"
    synth.write_maps_grid(
        folder,
        rows=2,
        cols=3,
        tile_shape=(200, 300),
        snr=20,
        seed=5,
        stage_error_px=4,
        gain_sigma=0.1,
        offset_sigma=0.05,
        density=40.0,
    )
    tileset = read_tileset(folder)
    tiles, _, _ = register_tileset(tileset)
    tileset = dataclasses.replace(tileset, tiles=tiles)
    before = seam_contrast(tileset)
    gains, _ = equalize_tileset(tileset)
    after = seam_contrast(tileset, gains=gains)
    assert before["n_seams"] == after["n_seams"] == 7
    assert after["mean_step"] * 5 <= before["mean_step"]
