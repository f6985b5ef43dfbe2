"""Blank, NaN and unreadable tiles named before the heavy stages: one task per tile, real
TIFFs (a float32 grid with a NaN, an all-zero uint8 Maps tile with its FEI block), a sound grid
passing, and the error naming the tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from mosaicflow.errors import TileReadError
from mosaicflow.io import read_tileset
from mosaicflow.io.tile_checks import (
    TILES_PER_TASK,
    TileProblem,
    check_tile_pixels,
    raise_for_tile_problems,
)

FEI_TAG = 34682


def _rewrite_pixels(path: Path, pixels: np.ndarray) -> None:
    """New pixels, the same FEI block (tag 34682): the headers still read as before."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags[FEI_TAG]
        tif.filehandle.seek(tag.valueoffset)
        raw = tif.filehandle.read(tag.count)
    tifffile.imwrite(
        path, pixels, photometric="minisblack", extratags=[(FEI_TAG, "s", 0, raw, True)]
    )


def _float_grid(folder: Path, nan_at: tuple[int, int] | None = None) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        tile = rng.normal(100, 5, size=(64, 80)).astype(np.float32)
        if i == 1 and nan_at is not None:
            tile[nan_at] = np.nan
            tile[0, 0] = np.inf
        tifffile.imwrite(folder / f"tile_{i}.tif", tile, photometric="minisblack")
    return folder


def _read_float_grid(folder: Path):
    return read_tileset(folder, grid=(1, 3), pixel_size_nm=2.0, overlap=0.1)


def test_sound_grids_pass(small_grid, tmp_path, no_compute):
    tileset = read_tileset(small_grid.folder)
    assert check_tile_pixels(tileset) == []
    assert check_tile_pixels(_read_float_grid(_float_grid(tmp_path / "f"))) == []
    with no_compute():  # building the graph reads nothing
        lazy = check_tile_pixels(tileset, compute=False)
    keys = [k for k in dict(lazy.__dask_graph__()) if str(k).startswith("check-tile-")]
    assert len(keys) == -(-len(tileset.tiles) // TILES_PER_TASK)  # one task per few tiles
    raise_for_tile_problems(lazy.compute())  # nothing to raise


def test_nan_in_a_float32_tile(tmp_path):
    tileset = _read_float_grid(_float_grid(tmp_path / "f", nan_at=(slice(10, 13), 5)))
    assert tileset.dtype == np.float32
    problems = check_tile_pixels(tileset)
    assert problems == [
        TileProblem("tile_1.tif", 1, 2, "non-finite", "4 of 5120 pixels are NaN or infinite")
    ]
    with pytest.raises(TileReadError, match=r"1 tile\(s\) cannot be used: tile 'tile_1.tif'"):
        raise_for_tile_problems(problems, "input 'f'")


def test_blank_and_unreadable_maps_tiles(grid_copy):
    tileset = read_tileset(grid_copy)
    paths = [Path(p) for p in tileset.tiles["path"]]
    head = tifffile.imread(paths[2])
    _rewrite_pixels(paths[2], np.zeros_like(head))  # all black, metadata intact
    _rewrite_pixels(paths[4], np.zeros((10, 10), head.dtype))  # cut after the headers were read
    problems = check_tile_pixels(tileset)
    assert [(p.file, p.kind) for p in problems] == [
        (paths[2].name, "blank"),
        (paths[4].name, "unreadable"),
    ]
    assert problems[0].detail == "every pixel is 0"
    assert "size (10, 10)" in problems[1].detail
    with pytest.raises(TileReadError) as info:
        raise_for_tile_problems(problems, f"input {str(grid_copy)!r}")
    message = str(info.value)
    assert paths[2].name in message and paths[4].name in message and "blank" in message


def test_problems_come_back_from_workers(grid_copy, client):
    tileset = read_tileset(grid_copy)
    path = Path(tileset.tiles["path"].iloc[0])
    _rewrite_pixels(path, np.full_like(tifffile.imread(path), 7))
    problems = client.compute(check_tile_pixels(tileset, compute=False)).result()
    assert [(p.file, p.row, p.col, p.detail) for p in problems] == [
        (path.name, 1, 1, "every pixel is 7")
    ]


def test_the_error_counts_beyond_the_first_few():
    problems = [TileProblem(f"t{i}.tif", 1, i, "blank", "every pixel is 0") for i in range(1, 9)]
    with pytest.raises(TileReadError, match=r"8 tile\(s\) .*'t5.tif'.*; and 3 more") as info:
        raise_for_tile_problems(problems)
    assert "t6.tif" not in str(info.value)
