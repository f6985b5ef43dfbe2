"""Seam contrast: the brightness step where one tile gives way to the next.

For each pair of grid neighbours (same row, next column; or same column, next row) the seam is
the middle line of their overlap, where the nearest-centre rule switches tile. Both tiles show
the same specimen there, so the step the seam makes is the mean of ``tile_j - tile_i`` (each as
fusion corrects it) over a band of ``2 * band`` pixels centred on that line, along the part of
the line the two tiles share (an eighth of the tile kept clear of other tiles' overlaps). The
specimen cancels in the difference; what is left is the tiles' gain/offset difference plus noise
averaged over thousands of pixels. ``seam_contrast`` is the mean absolute step over all seams.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pandas as pd

from mosaicflow.io import TileSet, read_tile
from mosaicflow.runner import Runner
from mosaicflow.stitch.equalize import integer_origins


def _neighbours(tiles: pd.DataFrame) -> list[tuple[int, int, int]]:
    """``(i, j, axis)``: ``axis`` 1 for row neighbours (j right of i), 0 for column ones."""
    index = {(int(r), int(c)): k for k, (r, c) in enumerate(tiles[["row", "col"]].to_numpy())}
    out = []
    for (r, c), i in index.items():
        if (r, c + 1) in index:
            out.append((i, index[(r, c + 1)], 1))
        if (r + 1, c) in index:
            out.append((i, index[(r + 1, c)], 0))
    return out


def seam_windows(
    origins: np.ndarray, i: int, j: int, axis: int, tile_shape: tuple[int, int], band: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """The seam band of neighbours ``i`` and ``j`` in each tile's own frame, or None when they
    share too little."""
    size, other = tile_shape[axis], tile_shape[1 - axis]
    oi, oj = origins[i], origins[j]
    at = (int(oj[axis]) + int(oi[axis]) + size) // 2  # the nearest-centre switch line
    a0, a1 = at - band, at + band
    lo = max(int(oi[1 - axis]), int(oj[1 - axis])) + other // 8
    hi = min(int(oi[1 - axis]), int(oj[1 - axis])) + other - other // 8
    if hi <= lo or a0 < int(oj[axis]) or a1 > int(oi[axis]) + size:
        return None
    windows = []
    for o in (oi, oj):
        along = slice(a0 - int(o[axis]), a1 - int(o[axis]))
        across = slice(lo - int(o[1 - axis]), hi - int(o[1 - axis]))
        windows.append((along, across) if axis == 0 else (across, along))
    return windows[0], windows[1]


def _step(
    tile_i: np.ndarray,
    tile_j: np.ndarray,
    win_i: tuple[slice, slice],
    win_j: tuple[slice, slice],
    corr_i: tuple[float, float],
    corr_j: tuple[float, float],
    flat: np.ndarray | None,
) -> float:
    def corrected(tile: np.ndarray, win: tuple[slice, slice], gain_offset: tuple[float, float]):
        part = tile[win].astype(np.float64)
        if flat is not None:
            part = part / flat[win]
        return part * gain_offset[0] + gain_offset[1]

    return float(np.mean(corrected(tile_j, win_j, corr_j) - corrected(tile_i, win_i, corr_i)))


def seam_contrast(
    tileset: TileSet,
    positions: pd.DataFrame | None = None,
    *,
    gains: pd.DataFrame | None = None,
    flatfield: np.ndarray | None = None,
    band: int = 8,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Mean absolute step across the seams of the tiles fused at ``positions``.

    Parameters
    ----------
    tileset : TileSet
        The tiles.
    positions : pandas.DataFrame, optional
        ``y_px, x_px`` per tile (default the tile set's own).
    gains : pandas.DataFrame, optional
        ``gain, offset`` per tile as fusion applies them (default none).
    flatfield : numpy.ndarray, optional
        The flat field fusion divides by (default none).
    band : int
        Half-width of the band around each seam line, pixels.
    runner : Runner, optional
        Computes the one task per seam.

    Returns
    -------
    dict
        ``mean_step`` (grey levels), ``n_seams``, and ``steps``: a table ``i, j, axis, step``
        (signed: tile j minus tile i).
    """
    positions = tileset.tiles if positions is None else positions
    origins = integer_origins(positions)
    h, w = tileset.tile_shape
    corr = (
        np.tile([1.0, 0.0], (len(origins), 1))
        if gains is None
        else gains[["gain", "offset"]].to_numpy(np.float64)
    )
    reader = dask.delayed(read_tile, pure=True)
    paths = list(tileset.tiles["path"])
    flat = None if flatfield is None else dask.delayed(np.asarray(flatfield, np.float64))
    cache: dict[int, Any] = {}
    rows, tasks = [], []
    for i, j, axis in _neighbours(tileset.tiles):
        windows = seam_windows(origins, i, j, axis, (h, w), band)
        if windows is None:
            continue
        for t in (i, j):
            if t not in cache:
                cache[t] = reader(
                    paths[t],
                    shape=(h, w),
                    dtype=str(tileset.dtype),
                    crop_bottom=tileset.crop_bottom,
                )
        rows.append((i, j, axis))
        tasks.append(
            dask.delayed(_step, pure=True)(
                cache[i], cache[j], *windows, tuple(corr[i]), tuple(corr[j]), flat
            )
        )
    values = (runner or Runner()).compute(dask.delayed(list)(tasks), "seams") if tasks else []
    steps = pd.DataFrame(rows, columns=["i", "j", "axis"]).assign(step=values)
    return {
        "mean_step": float(np.abs(steps["step"]).mean()) if len(steps) else float("nan"),
        "n_seams": len(steps),
        "steps": steps,
    }
