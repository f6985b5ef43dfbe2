"""How well the overlaps of side-by-side tiles match at given positions: the raw-pixel NCC of
each pair's common overlap, and each pair's own best integer offset (an upper bound no set of
rigid positions need reach for every pair at once). A diagnostic for comparing sets of
positions (``benchmarks/bench_register_real.py``, ``docs/STITCHING.md``); the pipeline does
not use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.io import TileSet
from mosaicflow.stitch.register import (
    _strip_pixels,
    _strips,
    candidate_pairs,
    default_max_shift,
    masked_ncc,
)


def _ncc_at(a: np.ndarray, b: np.ndarray, offset: np.ndarray) -> tuple[float, int]:
    """Raw-pixel NCC over the common region of tiles ``a`` and ``b`` with ``b`` at the integer
    ``offset`` from ``a``, and the number of common pixels."""
    dy, dx = int(offset[0]), int(offset[1])
    ya, xa = max(dy, 0), max(dx, 0)
    yb, xb = max(-dy, 0), max(-dx, 0)
    hh = min(a.shape[0] - ya, b.shape[0] - yb)
    ww = min(a.shape[1] - xa, b.shape[1] - xb)
    if hh <= 1 or ww <= 1:
        return np.nan, 0
    ca = a[ya : ya + hh, xa : xa + ww] - a[ya : ya + hh, xa : xa + ww].mean()
    cb = b[yb : yb + hh, xb : xb + ww] - b[yb : yb + hh, xb : xb + ww].mean()
    den = np.sqrt(float((ca * ca).sum()) * float((cb * cb).sum()))
    return (float((ca * cb).sum()) / den if den > 0 else np.nan), hh * ww


def overlap_ncc(
    tileset: TileSet,
    positions: dict[str, np.ndarray],
    *,
    max_shift_px: float | None = None,
    min_overlap: float = 0.25,
) -> pd.DataFrame:
    """How well the overlaps of side-by-side neighbours match: raw-pixel NCC over each pair's
    common overlap at the given positions, and at the best integer offset of the pair alone.

    Parameters
    ----------
    tileset : TileSet
        The tiles; their ``y_px``, ``x_px`` are the nominal positions.
    positions : dict of str to (n, 2) array
        Named sets of tile origins ``(y, x)`` in the order of ``tileset.tiles``; each pair's
        offset is rounded to whole pixels.
    max_shift_px : float, optional
        The exhaustive search covers every integer offset within this distance of the nominal
        offset along each axis (a square), with a common area of at least ``min_overlap`` of the
        nominal overlap. Default: :func:`default_max_shift`.
    min_overlap : float
        Smallest common area of a searched offset, as a fraction of the nominal overlap.

    Returns
    -------
    pandas.DataFrame
        One row per pair of neighbours sharing a side (diagonal pairs left out): ``i``, ``j``,
        ``ncc_<name>`` per set of positions, ``best_ncc``, ``best_dy``, ``best_dx``. The best
        is each pair's own upper bound: no one set of rigid positions need reach it for every
        pair at once.
    """
    h, w = tileset.tile_shape
    max_shift = default_max_shift(tileset.tile_shape) if max_shift_px is None else max_shift_px
    margin = int(np.ceil(max_shift))
    nominal = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    paths = tileset.tiles["path"].to_numpy()
    tiles: dict[int, np.ndarray] = {}

    def tile(k: int) -> np.ndarray:
        if k not in tiles:
            tiles[k] = _strip_pixels(tileset, paths[k], (slice(0, h), slice(0, w)), None)
        return tiles[k]

    rows = []
    for i, j in candidate_pairs(tileset):
        nom = nominal[j] - nominal[i]
        if abs(nom[0]) >= h / 2 and abs(nom[1]) >= w / 2:
            continue  # diagonal
        row: dict[str, Any] = {"i": i, "j": j}
        for name, pos in positions.items():
            off = np.rint(np.asarray(pos[j], float) - np.asarray(pos[i], float))
            row[f"ncc_{name}"] = _ncc_at(tile(i), tile(j), off)[0]
        base = np.rint(nom).astype(int)
        win_i, win_j = _strips(base, tileset.tile_shape, margin)
        mov = tile(j)[win_j]
        ncc, count = masked_ncc(tile(i)[win_i], mov)
        offy = win_i[0].start + np.arange(ncc.shape[0]) - (mov.shape[0] - 1) - win_j[0].start
        offx = win_i[1].start + np.arange(ncc.shape[1]) - (mov.shape[1] - 1) - win_j[1].start
        nominal_area = max(0, h - abs(base[0])) * max(0, w - abs(base[1]))
        allowed = (
            (np.abs(offy - nom[0]) <= max_shift)[:, None]
            & (np.abs(offx - nom[1]) <= max_shift)[None, :]
            & (count >= max(16.0, min_overlap * nominal_area))
        )
        k = np.unravel_index(int(np.argmax(np.where(allowed, ncc, -np.inf))), ncc.shape)
        row.update(best_ncc=float(ncc[k]), best_dy=int(offy[k[0]]), best_dx=int(offx[k[1]]))
        rows.append(row)
    return pd.DataFrame(rows)
