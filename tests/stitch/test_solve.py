"""Global solve: synthetic accuracy, featureless tiles never worse than their own stage error,
the stage priors' pull on registered tiles, and the real SEM-BSE 2x3 grid against its reference
positions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from mosaicflow import synth
from mosaicflow.io import read_tileset
from mosaicflow.stitch import register_pairs, register_tileset, solve_positions
from mosaicflow.stitch.register import candidate_pairs, is_corner_pair

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
BSE = REAL / "sem_bse_2x3_stitch2d"
FEI_TAG = 34682


def _relative_error(positions: np.ndarray, true: np.ndarray) -> np.ndarray:
    err = positions - true
    err -= err.mean(axis=0)
    return np.hypot(err[:, 0], err[:, 1])


def _write(write_grid, folder: Path, seed: int) -> tuple:
    write_grid(folder, seed)
    tileset = read_tileset(folder)
    origins = synth.read_ground_truth(folder)[1]
    merged = tileset.tiles.merge(origins, on=["row", "col"], suffixes=("", "_true"))
    return tileset, merged[["y_px_true", "x_px_true"]].to_numpy(float)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_synthetic_accuracy(write_grid, tmp_path, seed):
    tileset, true = _write(write_grid, tmp_path / "grid", seed)
    solved = solve_positions(tileset, register_pairs(tileset))
    assert list(solved.columns) == ["y_px", "x_px", "residual_px", "n_pairs_kept"]
    assert solved.index.equals(tileset.tiles.index)
    before = _relative_error(tileset.tiles[["y_px", "x_px"]].to_numpy(float), true)
    after = _relative_error(solved[["y_px", "x_px"]].to_numpy(float), true)
    assert np.sqrt(np.mean(before**2)) > 5  # the stage error is really there
    assert np.sqrt(np.mean(after**2)) <= 0.2, after
    assert after.max() <= 0.5, after
    # the frame stays the nominal one
    assert np.allclose(solved[["y_px", "x_px"]].mean(), tileset.tiles[["y_px", "x_px"]].mean())


def _flatten(path: Path, value: int, rng: np.random.Generator) -> None:
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags[FEI_TAG]
        tif.filehandle.seek(tag.valueoffset)
        raw = tif.filehandle.read(tag.count)
        shape, dtype = tif.pages.first.shape, tif.pages.first.dtype
    flat = np.clip(value + rng.normal(0, 2, size=shape), 0, 255).astype(dtype)
    tifffile.imwrite(path, flat, photometric="minisblack", extratags=[(FEI_TAG, "s", 0, raw, True)])


def test_featureless_tiles_never_worse_than_their_stage_error(write_grid, tmp_path):
    """The frame: a tile's error is its position minus its true position, minus the mean of
    that difference over all tiles (``_relative_error``), for stage and solved positions alike.
    The solved mean equals the nominal mean over all tiles and over every connected component
    of kept pairs, so a tile without a kept pair, left at its stage position, has exactly its
    stage error in this frame. The registered tiles are judged in their own frame (the mean
    over them only): as a block they are placed by their stage positions' mean, whose offset
    from the flat tiles' is only known to the stage's accuracy."""
    folder = tmp_path / "grid"
    tileset, true = _write(write_grid, folder, 2)
    rng = np.random.default_rng(0)
    rc = list(zip(tileset.tiles["row"], tileset.tiles["col"], strict=True))
    flat = [rc.index((2, 2)), rc.index((2, 3))]  # two neighbouring tiles
    for k in flat:  # flat value + noise; the FEI block (tag 34682) and so the stage stay
        _flatten(Path(tileset.tiles["path"].iloc[k]), 50, rng)
    tileset = read_tileset(folder)
    solved = solve_positions(tileset, register_pairs(tileset))
    nominal = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    placed = solved[["y_px", "x_px"]].to_numpy(float)
    stage_error = _relative_error(nominal, true)
    after = _relative_error(placed, true)
    assert (solved["n_pairs_kept"].iloc[flat] == 0).all()
    assert stage_error[flat].min() > 1  # the flat tiles really are off
    np.testing.assert_allclose(placed[flat], nominal[flat], atol=1e-6)
    assert (after[flat] <= stage_error[flat] + 1e-6).all(), (after[flat], stage_error[flat])
    others = np.setdiff1d(np.arange(len(after)), flat)
    assert _relative_error(placed[others], true[others]).max() <= 0.5
    assert np.allclose(placed.mean(axis=0), nominal.mean(axis=0))


@pytest.mark.skipif(not BSE.is_dir(), reason=f"real data folder {BSE} is absent")
def test_real_sem_bse_within_reference(tmp_path):
    ref = pd.read_csv(BSE / "reference_positions.csv")
    truth, layout = {}, []
    h, w = 442, 512  # tiles; ~10 % vertical, ~26 % horizontal overlap
    for rec in ref.itertuples():
        # stitch2d names: Grid@COL ROW
        col, row = (int(v) for v in re.search(r"Grid@(\d+) (\d+)", rec.filename).groups())
        nominal = (row * h * (1 - 0.10), col * w * (1 - 0.26))
        layout.append((BSE / rec.filename, row + 1, col + 1, *nominal, 1.0))
        truth[(row + 1, col + 1)] = (rec.y_px, rec.x_px)
    columns = ["file", "row", "col", "stage_y_nm", "stage_x_nm", "pixel_size_nm"]
    pd.DataFrame(layout, columns=columns).to_csv(tmp_path / "layout.csv", index=False)
    tileset = read_tileset(tmp_path / "layout.csv")  # the JPEGs, read as they are
    assert tileset.tile_shape == (h, w)
    true = np.array(
        [truth[rc] for rc in zip(tileset.tiles["row"], tileset.tiles["col"], strict=True)]
    )
    solved = solve_positions(tileset, register_pairs(tileset))
    before = _relative_error(tileset.tiles[["y_px", "x_px"]].to_numpy(float), true)
    after = _relative_error(solved[["y_px", "x_px"]].to_numpy(float), true)
    assert before.max() > 3
    assert after.max() <= 1.5, after


def _corner_pairs(tileset, pairs) -> set:
    pos = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    return {
        (int(i), int(j))
        for i, j in zip(pairs["i"], pairs["j"], strict=True)
        if is_corner_pair(pos[j] - pos[i], tileset.tile_shape)
    }


@pytest.mark.parametrize("seed", [1, 3])
def test_diagonal_pairs_are_registered_only_for_tiles_the_sides_leave_apart(
    write_grid, tmp_path, seed
):
    tileset, true = _write(write_grid, tmp_path / "grid", seed)
    every = candidate_pairs(tileset)
    sides = candidate_pairs(tileset, corners=False)
    corners = set(every) - set(sides)
    assert corners and len(sides) == 17  # 3x4 grid: 9 horizontal + 8 vertical neighbours
    # the oracle: the side pairs alone, solved; which tiles lie outside their largest group
    side_pairs = register_pairs(tileset, pairs=sides)
    _, judged = solve_positions(tileset, side_pairs, return_pairs=True)
    kept = judged[judged["kept"]]
    groups = {t: {t} for t in range(len(tileset.tiles))}
    for i, j in zip(kept["i"], kept["j"], strict=True):
        merged = groups[i] | groups[j]
        for t in merged:
            groups[t] = merged
    largest = max(groups.values(), key=len)
    expected = corners if len(largest) < len(tileset.tiles) else set()

    tiles, pairs, info = register_tileset(tileset)  # corners="auto", the default
    assert _corner_pairs(tileset, pairs) == expected
    assert info["n_corner_pairs"] == len(expected)
    assert (pairs["kind"] == "neighbour").sum() == len(sides) + len(expected)
    all_tiles, all_pairs, all_info = register_tileset(tileset, corners="all")
    assert _corner_pairs(tileset, all_pairs) == corners and all_info["n_corner_pairs"] == len(
        corners
    )
    none_tiles, none_pairs, _ = register_tileset(tileset, corners="none")
    assert not _corner_pairs(tileset, none_pairs)
    for solved in (tiles, all_tiles, none_tiles):
        after = _relative_error(solved[["y_px", "x_px"]].to_numpy(float), true)
        assert after.max() <= 0.5, after
    with pytest.raises(ValueError, match="corners must be one of"):
        register_tileset(tileset, corners="some")


def test_tiles_the_sides_leave_apart_get_every_diagonal_pair(write_grid, tmp_path):
    folder = tmp_path / "grid"
    tileset, _ = _write(write_grid, folder, 2)
    rng = np.random.default_rng(0)
    rc = list(zip(tileset.tiles["row"], tileset.tiles["col"], strict=True))
    flat = [rc.index((2, 2)), rc.index((2, 3))]
    for k in flat:
        _flatten(Path(tileset.tiles["path"].iloc[k]), 50, rng)
    tileset = read_tileset(folder)
    tiles, pairs, info = register_tileset(tileset)
    every, _, _ = register_tileset(tileset, corners="all")
    corners = set(candidate_pairs(tileset)) - set(candidate_pairs(tileset, corners=False))
    assert _corner_pairs(tileset, pairs) == corners and info["n_corner_pairs"] == len(corners)
    pd.testing.assert_frame_equal(tiles, every)  # the sides left tiles apart: as with "all"
    nominal = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    # nothing a flat tile's diagonal shows is kept: it stays at its stage position
    assert (tiles["n_pairs_kept"].iloc[flat] == 0).all()
    np.testing.assert_allclose(tiles[["y_px", "x_px"]].to_numpy(float)[flat], nominal[flat])
