"""Fusion: the chunked mosaic equals a whole-image placement of the tiles by the same
nearest-centre rule, for any chunking; coverage marks exactly the acquired pixels."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from mosaicflow import synth
from mosaicflow.errors import ConfigError
from mosaicflow.io import read_tileset
from mosaicflow.stitch import coverage, fuse, mosaic_shape


def _whole_image_oracle(tileset) -> tuple[np.ndarray, np.ndarray]:
    """Every tile over the whole mosaic at once: each pixel from the tile whose centre is
    nearest in half-tile units (first tile on ties), and which pixels some tile covers."""
    origins = np.rint(tileset.tiles[["y_px", "x_px"]].to_numpy(float)).astype(int)
    origins -= origins.min(axis=0)
    h, w = tileset.tile_shape
    shape = (origins[:, 0].max() + h, origins[:, 1].max() + w)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    best = np.full(shape, np.inf)
    out = np.zeros(shape, dtype=tileset.dtype)
    covered = np.zeros(shape, dtype=bool)
    for (ty, tx), path in zip(origins, tileset.tiles["path"], strict=True):
        dist = np.maximum(
            np.abs(yy - (ty + (h - 1) / 2)) / (h / 2), np.abs(xx - (tx + (w - 1) / 2)) / (w / 2)
        )
        inside = np.zeros(shape, dtype=bool)
        inside[ty : ty + h, tx : tx + w] = True
        take = inside & (dist < best)
        placed = np.zeros(shape, dtype=tileset.dtype)
        placed[ty : ty + h, tx : tx + w] = tifffile.imread(path)
        out[take] = placed[take]
        best[take] = dist[take]
        covered |= inside
    return out, covered


@pytest.fixture(scope="module")
def holey_grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("holey") / "acq"
    synth.write_maps_grid(
        folder, rows=3, cols=3, tile_shape=(120, 160), snr=20.0, seed=4, missing_tiles=[(2, 2)]
    )
    return read_tileset(folder)


@pytest.mark.parametrize("chunks", [1000, 128, (37, 53), (9, 250)])
def test_fused_mosaic_equals_the_whole_image_placement(holey_grid, chunks):
    expected, covered = _whole_image_oracle(holey_grid)
    mosaic = fuse(holey_grid, chunks=chunks)
    assert mosaic.shape == expected.shape == mosaic_shape(holey_grid)
    np.testing.assert_array_equal(mosaic.values, expected)
    np.testing.assert_array_equal(coverage(holey_grid, chunks=chunks).values, covered)
    assert not covered.all()  # the missing tile leaves a hole the coverage shows
    assert (mosaic.values[~covered] == 0).all()


def test_coordinates_are_nm_from_the_pixel_size(holey_grid):
    mosaic = fuse(holey_grid, chunks=64)
    py, px = holey_grid.pixel_size_nm
    np.testing.assert_allclose(mosaic["y"].values, np.arange(mosaic.shape[0]) * py)
    np.testing.assert_allclose(mosaic["x"].values, np.arange(mosaic.shape[1]) * px)
    assert mosaic.attrs["pixel_size_nm"] == [py, px]


def test_positions_must_match_the_tiles(holey_grid):
    with pytest.raises(ConfigError, match="positions has 2 rows"):
        fuse(holey_grid, holey_grid.tiles.iloc[:2])
