"""Stage positions checked against the row/col grid model: one tile's stage off by 1 mm, two
tiles with swapped stage metadata, and a sound grid left alone (real FEI-tag TIFFs)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mosaicflow import synth
from mosaicflow.io import read_tileset
from mosaicflow.io.positions import grid_model

FEI_TAG = 34682
ROWS, COLS, SHAPE = 3, 4, (120, 160)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stage") / "acq"
    synth.write_maps_grid(
        folder, rows=ROWS, cols=COLS, tile_shape=SHAPE, overlap=0.1, stage_error_px=4, seed=5
    )
    return folder


@pytest.fixture
def acq(grid: Path, tmp_path: Path) -> Path:
    import shutil

    dest = tmp_path / "acq"
    shutil.copytree(grid, dest)
    return dest


def _tile(folder: Path, row: int, col: int) -> Path:
    return next(folder.glob(f"Tile_{row:03d}-{col:03d}-*.tif"))


def _stage(path: Path) -> dict[str, float]:
    with tifffile.TiffFile(path) as tif:
        return dict(tif.fei_metadata["Stage"])


def _set_stage(path: Path, **values: float) -> None:
    """Rewrite the tile with its pixels and FEI block (tag 34682), some ``[Stage]`` keys
    changed."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags[FEI_TAG]
        tif.filehandle.seek(tag.valueoffset)
        text = tif.filehandle.read(tag.count).decode("latin-1")
        pixels = tif.pages.first.asarray()
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key}=.*$", f"{key}={value!r}", text)
        assert n == 1, key
    raw = text.encode("latin-1")
    tifffile.imwrite(
        path, pixels, photometric="minisblack", extratags=[(FEI_TAG, "s", 0, raw, True)]
    )


def _truth_error(folder: Path, tiles) -> np.ndarray:
    """Each tile's distance (px) from its true origin, in the frame of the mean difference."""
    origins = synth.read_ground_truth(folder)[1]
    merged = tiles.merge(origins, on=["row", "col"], suffixes=("", "_true"))
    err = merged[["y_px", "x_px"]].to_numpy(float) - merged[["y_px_true", "x_px_true"]].to_numpy()
    err -= np.median(err, axis=0)
    return np.hypot(err[:, 0], err[:, 1])


def test_sound_grid_is_left_alone(grid):
    tileset = read_tileset(grid)  # no warning (the test configuration makes warnings errors)
    assert not tileset.tiles["stage_outlier"].any()
    assert _truth_error(grid, tileset.tiles).max() < 20  # only the stage error


def test_one_tile_off_by_a_millimetre(acq):
    before = read_tileset(acq).tiles
    path = _tile(acq, 2, 3)
    _set_stage(path, StageX=_stage(path)["StageX"] + 1e-3)
    with pytest.warns(UserWarning, match="stage position") as record:
        tileset = read_tileset(acq)
    message = str(record[0].message)
    assert path.name in message and "(row 2, col 3)" in message
    assert "500000 px (1000 µm)" in message  # 1 mm at 2 nm/px
    assert "swapped" not in message
    tiles = tileset.tiles
    flagged = tiles.loc[tiles["stage_outlier"], ["row", "col"]].to_numpy().tolist()
    assert flagged == [[2, 3]]
    # no giant mosaic: the extent is the grid's, and the replaced tile sits near its true place
    assert tiles["x_px"].max() + SHAPE[1] < COLS * SHAPE[1]
    assert tiles["y_px"].max() + SHAPE[0] < ROWS * SHAPE[0]
    assert _truth_error(acq, tiles).max() < 20
    # the other tiles keep their stage positions exactly
    keep = ~tiles["stage_outlier"].to_numpy()
    shift = tiles[["y_px", "x_px"]].to_numpy()[keep] - before[["y_px", "x_px"]].to_numpy()[keep]
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-6)


def test_swapped_stage_metadata(acq):
    a, b = _tile(acq, 1, 2), _tile(acq, 3, 4)
    sa, sb = _stage(a), _stage(b)
    _set_stage(a, StageX=sb["StageX"], StageY=sb["StageY"])
    _set_stage(b, StageX=sa["StageX"], StageY=sa["StageY"])
    with pytest.warns(UserWarning, match="swapped") as record:
        tileset = read_tileset(acq)
    message = str(record[0].message)
    assert a.name in message and b.name in message and "2 of 12 tiles" in message
    tiles = tileset.tiles
    flagged = tiles.loc[tiles["stage_outlier"], ["row", "col"]].to_numpy().tolist()
    assert flagged == [[1, 2], [3, 4]]
    assert _truth_error(acq, tiles).max() < 20


def test_positions_that_follow_no_grid_are_kept(acq):
    """A third of the tiles or more off the grid: the grid model is not trusted."""
    for row, col in [(1, 1), (1, 2), (2, 1), (2, 2), (3, 3)]:
        path = _tile(acq, row, col)
        _set_stage(path, StageY=_stage(path)["StageY"] + 1e-4 * (row + col))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tileset = read_tileset(acq)
    messages = [str(w.message) for w in record]
    assert any("do not follow a grid and are kept" in m for m in messages), messages
    assert not tileset.tiles["stage_outlier"].any()
    assert tileset.tiles["y_px"].max() > ROWS * SHAPE[0]  # kept as measured


def test_grid_model_fits_a_rotated_grid_exactly():
    rows, cols = np.divmod(np.arange(12), 4)
    t = np.deg2rad(2.0)
    y = 100 + rows * 90 * np.cos(t) + cols * 140 * np.sin(t)
    x = -50 - rows * 90 * np.sin(t) + cols * 140 * np.cos(t)
    y_bad = y.copy()
    y_bad[5] += 1e5
    my, mx = grid_model(rows, cols, y_bad, x)
    np.testing.assert_allclose(my, y, atol=1e-9)
    np.testing.assert_allclose(mx, x, atol=1e-9)
    assert grid_model(np.array([1, 2]), np.array([1, 2]), np.zeros(2), np.zeros(2)) is None
