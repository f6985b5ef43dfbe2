"""Tile-set reading (positions, bad input) and the run store (OME-Zarr images, tables)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from mosaicflow import synth
from mosaicflow.errors import TileReadError, TileSetError
from mosaicflow.io import read_tileset
from mosaicflow.io.tiles import GRID_FILE


def test_positions_from_stage_metadata(tmp_path):
    truth = synth.write_maps_grid(
        tmp_path / "g", rows=2, cols=3, tile_shape=(120, 160), stage_error_px=0.0, seed=1
    )
    tiles = read_tileset(truth.folder)
    origins = pd.read_csv(truth.tile_origins_csv).sort_values(["row", "col"], ignore_index=True)
    expected = origins[["y_px", "x_px"]].to_numpy() - origins[["y_px", "x_px"]].to_numpy().min(0)
    np.testing.assert_allclose(tiles.tiles[["y_px", "x_px"]].to_numpy(), expected, atol=1e-6)
    assert tiles.tile_shape == (120, 160)
    assert tiles.pixel_size_nm == pytest.approx((2.0, 2.0))
    assert (tiles.rows, tiles.cols, tiles.missing) == (2, 3, ())


def test_positions_carry_stage_error(small_grid):
    tiles = read_tileset(small_grid.folder)
    origins = pd.read_csv(small_grid.tile_origins_csv).sort_values(
        ["row", "col"], ignore_index=True
    )
    true = origins[["y_px", "x_px"]].to_numpy()
    got = tiles.tiles[["y_px", "x_px"]].to_numpy()
    err = (got - got[0]) - (true - true[0])
    assert 0 < np.abs(err).max() < 8 * 6  # sigma 8 px per tile, differences of two tiles


def test_missing_folder():
    with pytest.raises(TileSetError, match="does not exist"):
        read_tileset("/nonexistent/acquisition")


def test_empty_folder(tmp_path):
    with pytest.raises(TileSetError, match="holds no tiles"):
        read_tileset(tmp_path)


def _tile(folder: Path, row: int = 1, col: int = 2) -> Path:
    return folder / f"Tile_{row:03d}-{col:03d}-000000_0-000.tif"


def test_truncated_tile(grid_copy):
    path = _tile(grid_copy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TileReadError, match=rf"{path.name}.*truncated"):
        read_tileset(grid_copy)


def test_wrong_size_tile(grid_copy):
    path = _tile(grid_copy)
    ini = "[Scan]\nPixelWidth=2e-09\nPixelHeight=2e-09\n[Stage]\nStageX=0.001\nStageY=0.002\n"
    tifffile.imwrite(path, np.zeros((100, 400), np.uint8), extratags=[(34682, "s", 0, ini, True)])
    with pytest.raises(TileReadError, match=rf"{path.name}.*size 100x400 px, expected 300x400"):
        read_tileset(grid_copy)


def test_tile_without_metadata(grid_copy):
    path = _tile(grid_copy)
    tifffile.imwrite(path, np.zeros((300, 400), np.uint8))
    with pytest.raises(TileReadError, match=rf"{path.name}.*34682"):
        read_tileset(grid_copy)


def test_grid_file_names_missing_tile(grid_copy):
    path = _tile(grid_copy, 2, 3)
    path.unlink()
    with pytest.raises(TileSetError, match=rf"names tile '{path.name}' \(row 2, col 3\)"):
        read_tileset(grid_copy)


def test_missing_tiles_recorded(tmp_path):
    truth = synth.write_maps_grid(
        tmp_path / "g", rows=2, cols=2, tile_shape=(100, 120), missing_tiles=[(2, 2)], seed=2
    )
    tiles = read_tileset(truth.folder)
    assert tiles.missing == ((2, 2),)
    assert len(tiles.tiles) == 3
    grid = json.loads((truth.folder / GRID_FILE).read_text())
    assert grid["missing"] == [[2, 2]]
