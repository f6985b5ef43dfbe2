"""The naive baseline: tiles of known content placed and measured (the objects drawn are the
oracle), its plan from a tile set mosaicflow reads, its fresh interpreter, and the memory
decision."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from mosaicflow.bench import baseline, naive
from mosaicflow.config import Config
from mosaicflow.io.tiles import read_tileset


def _tiles(tmp_path):
    """Two 80x100 tiles side by side with a 20 px overlap, a 10-row data bar below each: three
    discs of radius 6 and one single bright pixel (too small to be a particle)."""
    plan_tiles = []
    for i, x in enumerate((0, 80)):
        tile = np.full((90, 100), 30, np.uint8)
        tile[80:] = 255  # the data bar: cut by tile_shape, never placed
        if i == 0:
            tile[disk((20, 20), 6)] = 200
            tile[disk((60, 40), 6)] = 200
            tile[50, 10] = 255
        else:
            tile[disk((40, 60), 6)] = 200
        path = tmp_path / f"t{i}.tif"
        tifffile.imwrite(path, tile)
        plan_tiles.append([str(path), 0.0, float(x)])
    return plan_tiles


def test_naive_run_finds_the_drawn_objects(tmp_path):
    plan = {
        "tiles": _tiles(tmp_path),
        "tile_shape": [80, 100],
        "dtype": "uint8",
        "sigma": 0.5,
        "polarity": "auto",
        "connectivity": 1,
        "min_diameter_px": 3.0,
    }
    result = naive.run(plan)
    assert result["mosaic_shape"] == [80, 180]
    assert result["polarity"] == "bright"
    assert result["n_objects"] == 4 and result["n_particles"] == 3
    assert list(result["steps"]) == ["place", "gaussian", "otsu", "label", "table", "total"]
    assert len(result["properties"]) == 16
    assert result["peak_rss_bytes"] >= result["rss_after_imports_bytes"] > 0


def test_dark_particles_by_polarity(tmp_path):
    path = tmp_path / "t.tif"
    tile = np.full((60, 60), 200, np.uint8)
    tile[disk((30, 30), 8)] = 20
    tifffile.imwrite(path, tile)
    plan = {
        "tiles": [[str(path), 0, 0]],
        "tile_shape": [60, 60],
        "dtype": "uint8",
        "sigma": 1.0,
        "polarity": "auto",
        "connectivity": 2,
        "min_diameter_px": 3.0,
    }
    result = naive.run(plan)
    assert result["polarity"] == "dark" and result["n_particles"] == 1


def test_plan_from_a_tile_set_runs_in_a_fresh_interpreter(small_grid):
    tileset = read_tileset(small_grid.folder)
    plan = baseline.plan(tileset, Config())
    assert len(plan["tiles"]) == len(tileset.tiles)
    assert plan["tile_shape"] == list(tileset.tile_shape)
    assert plan["min_diameter_px"] == pytest.approx(3.0)
    result = baseline.run_once(plan)
    assert "failed" not in result, result
    assert result["mosaic_shape"] == list(baseline.mosaic_shape(tileset))
    assert result["n_particles"] > 0


def test_run_once_reports_a_failure(tmp_path):
    plan = {
        "tiles": [[str(tmp_path / "missing.tif"), 0, 0]],
        "tile_shape": [10, 10],
        "dtype": "uint8",
        "sigma": 1.0,
        "min_diameter_px": 3.0,
    }
    result = baseline.run_once(plan)
    assert "exit status" in result["failed"] and "missing.tif" in result["failed"]


def test_too_large_a_mosaic_is_skipped_with_the_reason(small_grid, monkeypatch):
    tileset = read_tileset(small_grid.folder)
    assert baseline.decide(tileset)["run"]
    monkeypatch.setattr(baseline, "available_memory", lambda: 2**20)
    decision = baseline.decide(tileset)
    assert not decision["run"]
    assert "does not fit in memory" in decision["reason"]
    h, w = baseline.mosaic_shape(tileset)
    assert decision["mosaic_bytes"] == h * w  # uint8
    assert decision["estimate_bytes"] > decision["mosaic_bytes"]
