"""Per-tile gain/offset equalisation from the overlaps, and a flat-field estimate from all tiles.

Each tile ``t`` is corrected as ``gain_t * raw / flat + offset_t`` before blending
(``docs/STITCHING.md``, "Fusion"). The gains and offsets come from the overlaps, solved for all
tiles together by weighted least squares, like the positions: two overlapping tiles show the
same specimen, so after correction their overlap must have the same mean and the same spread.

* Gains: ``log gain_i + log s_i = log gain_j + log s_j`` per overlapping pair (``s``: standard
  deviation of the tile's pixels over the common overlap), weighted by the overlap's size.
* Offsets, given the gains: ``gain_i m_i + offset_i = gain_j m_j + offset_j`` (``m``: mean over
  the overlap).

Each system fixes a connected group of tiles only up to a constant; the minimum-norm
least-squares solution takes the gains' geometric mean 1 and the offsets' mean 0 over each group
(the mosaic keeps its overall brightness), and gain 1, offset 0 for a tile with no overlap.

The flat field is the mean of all tiles, each divided by its own mean, smoothed by a wide
Gaussian and scaled to mean 1: the shading every tile shares (vignetting, detector response),
valid when the specimen does not repeat from tile to tile. One Dask task per tile plus a sum.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pandas as pd
from scipy import ndimage, sparse

from mosaicflow._shared.batches import batches
from mosaicflow.io import TileSet, read_tile
from mosaicflow.io.regions import read_tile_region
from mosaicflow.runner import Runner

MIN_OVERLAP_PX = 64
"""Overlaps smaller than this many pixels (diagonal corners) are not used."""

STAT_COLUMNS = ("i", "j", "n", "mean_i", "mean_j", "std_i", "std_j")
#: Overlaps measured by one Dask task (one takes about a millisecond; see
#: :mod:`mosaicflow._shared.batches`).
PAIRS_PER_TASK = 32


def integer_origins(positions: pd.DataFrame) -> np.ndarray:
    """Tile origins rounded to whole pixels, shifted so the smallest is 0 (fusion's frame)."""
    origins = np.rint(positions[["y_px", "x_px"]].to_numpy(dtype=np.float64)).astype(np.int64)
    return origins - origins.min(axis=0)


def overlapping_pairs(
    origins: np.ndarray, tile_shape: tuple[int, int], min_px: int = MIN_OVERLAP_PX
) -> list[tuple[int, int, tuple[slice, slice], tuple[slice, slice]]]:
    """Pairs ``(i, j)``, ``i < j``, whose placed rectangles share at least ``min_px`` pixels,
    with the common rectangle in each tile's own pixel frame."""
    h, w = tile_shape
    out = []
    for i in range(len(origins)):
        for j in range(i + 1, len(origins)):
            y0 = max(origins[i, 0], origins[j, 0])
            y1 = min(origins[i, 0], origins[j, 0]) + h
            x0 = max(origins[i, 1], origins[j, 1])
            x1 = min(origins[i, 1], origins[j, 1]) + w
            if y1 <= y0 or x1 <= x0 or (y1 - y0) * (x1 - x0) < min_px:
                continue
            regions = tuple(
                (
                    slice(int(y0 - origins[t, 0]), int(y1 - origins[t, 0])),
                    slice(int(x0 - origins[t, 1]), int(x1 - origins[t, 1])),
                )
                for t in (i, j)
            )
            out.append((i, j, regions[0], regions[1]))
    return out


def _corrected(tile: np.ndarray, flat: np.ndarray | None) -> np.ndarray:
    out = tile.astype(np.float32)
    return out / flat if flat is not None else out


def _pair_stats(
    paths: tuple[str, str],
    regions: tuple[tuple[slice, slice], tuple[slice, slice]],
    read: dict[str, Any],
    flat: np.ndarray | None,
) -> tuple[int, float, float, float, float]:
    """Mean and standard deviation of both tiles over their common rectangle (only that
    rectangle of each tile is read)."""
    values = []
    for path, region in zip(paths, regions, strict=True):
        part = read_tile_region(path, *region, **read)
        values.append(_corrected(part, None if flat is None else flat[region]).astype(np.float64))
    a, b = values
    return int(a.size), float(a.mean()), float(b.mean()), float(a.std()), float(b.std())


def _some_pair_stats(
    items: list[tuple[tuple[str, str], tuple[tuple[slice, slice], tuple[slice, slice]]]],
    read: dict[str, Any],
    flat: np.ndarray | None,
) -> list[tuple[int, float, float, float, float]]:
    """:func:`_pair_stats` for each ``(paths, regions)`` of one task's pairs."""
    return [_pair_stats(paths, regions, read, flat) for paths, regions in items]


def overlap_stats(
    tileset: TileSet,
    positions: pd.DataFrame | None = None,
    *,
    flatfield: np.ndarray | None = None,
    compute: bool = True,
) -> pd.DataFrame | Any:
    """Mean and standard deviation of both tiles over each overlap, reading only the two
    overlapping rectangles; one Dask task per :data:`PAIRS_PER_TASK` pairs.

    Returns a table with :data:`STAT_COLUMNS` (``i``, ``j``: row positions in
    ``tileset.tiles``; ``n``: overlap pixels); with ``compute=False`` the Dask delayed table.
    """
    positions = tileset.tiles if positions is None else positions
    origins = integer_origins(positions)
    read = {
        "shape": tileset.tile_shape,
        "dtype": str(tileset.dtype),
        "crop_bottom": int(tileset.crop_bottom),
    }
    paths = [str(p) for p in tileset.tiles["path"]]
    pairs = overlapping_pairs(origins, tileset.tile_shape)
    flat = None if flatfield is None else dask.delayed(np.asarray(flatfield, np.float32))
    items = [((paths[i], paths[j]), (ri, rj)) for i, j, ri, rj in pairs]
    stats = [
        dask.delayed(_some_pair_stats, pure=True)(some, read, flat)
        for some in batches(items, PAIRS_PER_TASK)
    ]

    def build(batches: list[list[tuple[int, float, float, float, float]]]) -> pd.DataFrame:
        values = [v for batch in batches for v in batch]
        rows = [(i, j, *v) for (i, j, _, _), v in zip(pairs, values, strict=True)]
        return pd.DataFrame(rows, columns=list(STAT_COLUMNS))

    table = dask.delayed(build, pure=True)(stats)
    return table.compute() if compute else table


def _weighted_lstsq(
    n: int, i: np.ndarray, j: np.ndarray, d: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """The minimum-norm ``x`` minimising ``sum w (x_i - x_j - d)^2``.

    Each connected group of tiles is fixed only up to a constant; the minimum-norm solution
    picks the one with ``sum x = 0`` over the group, and ``x = 0`` for a tile in no pair.
    """
    if len(i) == 0:
        return np.zeros(n)
    from scipy.sparse.linalg import lsqr  # here: the workers import this module, never solve

    sw = np.sqrt(w)
    rows = np.arange(len(i))
    a = sparse.csr_matrix((np.r_[sw, -sw], (np.r_[rows, rows], np.r_[i, j])), shape=(len(i), n))
    # LSQR started from zero converges to the minimum-norm solution.
    return lsqr(a, d * sw, atol=1e-14, btol=1e-14, iter_lim=20 * n + 100)[0]


def solve_gain_offset(stats: pd.DataFrame, n_tiles: int) -> pd.DataFrame:
    """Gain and offset per tile (``gain``, ``offset`` columns, ``n_tiles`` rows) from
    :func:`overlap_stats`; pairs whose spread is zero in either tile constrain only offsets."""
    i = stats["i"].to_numpy(np.int64)
    j = stats["j"].to_numpy(np.int64)
    weight = stats["n"].to_numpy(np.float64)
    weight = weight / weight.max() if len(weight) else weight
    s_i, s_j = stats["std_i"].to_numpy(float), stats["std_j"].to_numpy(float)
    spread = (s_i > 0) & (s_j > 0)
    log_gain = _weighted_lstsq(
        n_tiles,
        i[spread],
        j[spread],
        np.log(s_j[spread]) - np.log(s_i[spread]),
        weight[spread],
    )
    gain = np.exp(log_gain)
    m_i, m_j = stats["mean_i"].to_numpy(float), stats["mean_j"].to_numpy(float)
    offset = _weighted_lstsq(n_tiles, i, j, gain[j] * m_j - gain[i] * m_i, weight)
    return pd.DataFrame({"gain": gain, "offset": offset})


def _tile_normalised(tile: np.ndarray) -> np.ndarray:
    t = tile.astype(np.float64)
    mean = t.mean()
    return t / mean if mean > 0 else np.ones_like(t)


def _finish_flatfield(total: np.ndarray, count: int, sigma_px: float) -> np.ndarray:
    flat = ndimage.gaussian_filter(total / count, sigma_px, mode="nearest")
    flat /= flat.mean()
    return flat.astype(np.float32)


def estimate_flatfield(
    tileset: TileSet, *, sigma_fraction: float = 0.125, compute: bool = True
) -> np.ndarray | Any:
    """The shading all tiles share, mean 1, shape ``tileset.tile_shape`` (float32).

    Parameters
    ----------
    tileset : TileSet
        The tiles; each is read once.
    sigma_fraction : float
        Smoothing Gaussian sigma as a fraction of the smaller tile side: shading varies slowly,
        the specimen does not.
    compute : bool
        ``False`` returns the Dask delayed array.
    """
    h, w = tileset.tile_shape
    reader = dask.delayed(read_tile, pure=True)
    parts = [
        dask.delayed(_tile_normalised, pure=True)(
            reader(p, shape=(h, w), dtype=str(tileset.dtype), crop_bottom=tileset.crop_bottom)
        )
        for p in tileset.tiles["path"]
    ]
    while len(parts) > 1:  # a tree sum keeps at most a few tiles in memory per task
        parts = [
            dask.delayed(np.add, pure=True)(*parts[k : k + 2]) if k + 1 < len(parts) else parts[k]
            for k in range(0, len(parts), 2)
        ]
    sigma = max(1.0, sigma_fraction * min(h, w))
    flat = dask.delayed(_finish_flatfield, pure=True)(parts[0], len(tileset.tiles), sigma)
    return flat.compute() if compute else flat


def equalize_tileset(
    tileset: TileSet,
    positions: pd.DataFrame | None = None,
    *,
    flatfield: np.ndarray | None = None,
    runner: Runner | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Gains and offsets per tile (in ``tileset.tiles`` order) of the tiles as fusion corrects
    them (divided by ``flatfield`` when given, :func:`estimate_flatfield`), and a summary: how
    many overlaps were used and the gains' and offsets' range."""
    stats = (runner or Runner()).compute(
        overlap_stats(tileset, positions, flatfield=flatfield, compute=False), "equalise"
    )
    table = solve_gain_offset(stats, len(tileset.tiles))
    info: dict[str, Any] = {
        "n_overlaps": len(stats),
        "gain_range": [float(table["gain"].min()), float(table["gain"].max())],
        "offset_range": [float(table["offset"].min()), float(table["offset"].max())],
    }
    return table, info
