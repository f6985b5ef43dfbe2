"""Fusion of positioned tiles into one lazily computed mosaic, planned per output chunk.

Two rules (``blend``):

* ``"linear"`` (the default): every tile covering a pixel contributes, weighted by the pixel's
  distance to the tile's nearest edge (``min(1 + d_top, 1 + d_bottom, 1 + d_left, 1 + d_right)``),
  so across an overlap the weights ramp linearly from one tile to the other and no seam is left
  where registered tiles meet.
* ``"nearest"``: each pixel from the tile whose centre is nearest (distance normalised by the
  tile's half-size); seams fall in the middle of overlaps and nothing is averaged.

Before blending each tile can be corrected: ``gain * raw / flatfield + offset`` (from
:mod:`mosaicflow.stitch.equalize`). Both rules depend only on global pixel coordinates, and a
pixel sums its tiles in the tiles' table order, so the mosaic is identical for any chunking.
Pixels covered by no tile are 0 and reported by ``coverage``. Integer tiles give an integer
mosaic of the same type (rounded, clipped to the type's range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.tokenize import tokenize

from mosaicflow._shared import opencv
from mosaicflow._shared.halo import Overlapped
from mosaicflow.config import BLEND_MODES, DEFAULT_CHUNK_PX
from mosaicflow.errors import ConfigError
from mosaicflow.io.regions import read_tile_region
from mosaicflow.io.tiles import TileSet
from mosaicflow.stitch.equalize import integer_origins as _integer_origins
from mosaicflow.stitch.nearest import nearest_tile, overlap_cells


def mosaic_shape(tileset: TileSet, positions: pd.DataFrame | None = None) -> tuple[int, int]:
    """Shape ``(height, width)`` of the mosaic the tiles span at ``positions``."""
    origins = _integer_origins(tileset.tiles if positions is None else positions)
    h, w = tileset.tile_shape
    return int(origins[:, 0].max() + h), int(origins[:, 1].max() + w)


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _corrected(part: np.ndarray, gain: float, offset: float, flat: np.ndarray | None) -> np.ndarray:
    """``gain * part / flat + offset`` in float64 (``flat``: the same part of the flat field)."""
    out = part.astype(np.float64)
    if flat is not None:
        out /= flat
    if gain != 1.0 or offset != 0.0:
        out = out * gain + offset
    return out


def _tile_values(
    part: np.ndarray, gain: float, offset: float, flat: np.ndarray | None, out_dtype: np.dtype
) -> np.ndarray:
    """One tile's part corrected and cast to the mosaic's type, as :func:`_to_dtype` of
    :func:`_corrected` gives it. Without a flat field, 8- and 16-bit unsigned tiles go through
    a table of every possible value (the same numbers, one lookup per pixel)."""
    if flat is None and gain == 1.0 and offset == 0.0 and part.dtype == out_dtype:
        return part
    if flat is None and part.dtype in (np.uint8, np.uint16):
        every = np.arange(np.iinfo(part.dtype).max + 1, dtype=part.dtype)
        table = _to_dtype(_corrected(every, gain, offset, None), out_dtype)
        cv2 = opencv.module()
        if cv2 is not None and part.dtype == table.dtype == np.uint8 and part.ndim == 2:
            return cv2.LUT(part, table)  # the same lookup, about ten times faster
        return table[part]
    return _to_dtype(_corrected(part, gain, offset, flat), out_dtype)


def _combine(
    region: tuple[int, int, int, int],
    origins: np.ndarray,
    tile_shape: tuple[int, int],
    dtype: str,
    mode: str,
    gains: np.ndarray,
    flat: np.ndarray | None,
    parts: list[np.ndarray],
) -> np.ndarray:
    """One output region from the parts of the tiles touching it (each tile's pixels inside the
    region), corrected, then combined by ``mode``.

    ``"linear"``: a pixel one tile covers is that tile's corrected value; only where tiles
    overlap (rectangles, :func:`overlap_cells`) are the weighted sums formed, adding the
    tiles in table order, so a pixel's value never depends on the region around it."""
    y0, y1, x0, x1 = region
    h, w = tile_shape
    out_dtype = np.dtype(dtype)
    if mode == "nearest":
        return _combine_nearest(region, origins, tile_shape, out_dtype, gains, flat, parts)
    out = np.zeros((y1 - y0, x1 - x0), dtype=out_dtype)
    boxes = []
    for (ty, tx), part, (g, o) in zip(origins, parts, gains, strict=True):
        sy0, sy1 = max(y0, ty), min(y1, ty + h)
        sx0, sx1 = max(x0, tx), min(x1, tx + w)
        box = (int(sy0 - y0), int(sy1 - y0), int(sx0 - x0), int(sx1 - x0))
        boxes.append(box)
        src = (slice(sy0 - ty, sy1 - ty), slice(sx0 - tx, sx1 - tx))
        out[box[0] : box[1], box[2] : box[3]] = _tile_values(
            part, g, o, None if flat is None else flat[src], out_dtype
        )
    for (a, b, c, d), members in overlap_cells(boxes):
        total = np.zeros((b - a, d - c), dtype=np.float64)
        weight = np.zeros_like(total)
        for k in members:  # table order, as every pixel adds its tiles
            (ty, tx), (g, o), box = origins[k], gains[k], boxes[k]
            cut = (slice(a - box[0], b - box[0]), slice(c - box[2], d - box[2]))
            ry, rx = int(a + y0 - ty), int(c + x0 - tx)  # the cell's corner in the tile
            src = (slice(ry, ry + b - a), slice(rx, rx + d - c))
            ly = np.arange(src[0].start, src[0].stop, dtype=np.float64)[:, None]
            lx = np.arange(src[1].start, src[1].stop, dtype=np.float64)[None, :]
            values = _corrected(parts[k][cut], g, o, None if flat is None else flat[src])
            wt = np.minimum(np.minimum(ly + 1, h - ly), np.minimum(lx + 1, w - lx))
            total += wt * values
            weight += wt
        out[a:b, c:d] = _to_dtype(total / weight, out_dtype)
    return out


def _combine_nearest(
    region: tuple[int, int, int, int],
    origins: np.ndarray,
    tile_shape: tuple[int, int],
    out_dtype: np.dtype,
    gains: np.ndarray,
    flat: np.ndarray | None,
    parts: list[np.ndarray],
) -> np.ndarray:
    """The ``"nearest"`` rule: each pixel from its nearest-centre tile (:func:`nearest_tile`)."""
    y0, y1, x0, x1 = region
    h, w = tile_shape
    identity = flat is None and bool((gains == (1.0, 0.0)).all())
    total = np.zeros((y1 - y0, x1 - x0), dtype=np.float64)
    owner = nearest_tile(region, origins, tile_shape)
    for k, ((ty, tx), part, (g, o)) in enumerate(zip(origins, parts, gains, strict=True)):
        sy0, sy1 = max(y0, ty), min(y1, ty + h)
        sx0, sx1 = max(x0, tx), min(x1, tx + w)
        src = (slice(sy0 - ty, sy1 - ty), slice(sx0 - tx, sx1 - tx))
        dst = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
        values = part if identity else _corrected(part, g, o, None if flat is None else flat[src])
        np.copyto(total[dst], values, where=owner[dst] == k + 1)
    if identity:
        return total.astype(out_dtype)  # raw values, untouched
    return _to_dtype(total, out_dtype)


def _fuse_region_task(
    region: tuple[int, int, int, int],
    origins: np.ndarray,
    tile_shape: tuple[int, int],
    dtype: str,
    mode: str,
    gains: np.ndarray,
    flat: np.ndarray | None,
    paths: list[str],
    crop_bottom: int,
) -> np.ndarray:
    """Read each touching tile's pixels inside ``region`` (only those) and combine them: the
    task's memory is the region and its tiles' parts, whatever the mosaic's size."""
    y0, y1, x0, x1 = region
    h, w = tile_shape
    parts = [
        read_tile_region(
            path,
            slice(max(y0, ty) - ty, min(y1, ty + h) - ty),
            slice(max(x0, tx) - tx, min(x1, tx + w) - tx),
            shape=(h, w),
            dtype=dtype,
            crop_bottom=crop_bottom,
        )
        for (ty, tx), path in zip(origins, paths, strict=True)
    ]
    return _combine(region, origins, tile_shape, dtype, mode, gains, flat, parts)


@dataclass(frozen=True)
class _FusePlan:
    """What every chunk's fusion needs: the tiles' integer origins, size, type, the blending
    rule, gain and offset per tile, the flat field, the tiles' paths and the rows cropped."""

    origins: np.ndarray
    tile_shape: tuple[int, int]
    dtype: str
    blend: str
    gains: np.ndarray
    flat: np.ndarray | None
    paths: list[str]
    crop_bottom: int


def _fuse_block(plan: _FusePlan, block_info: Any = None) -> np.ndarray:
    """Fuse one output chunk (its place from ``block_info``) from the tiles that touch it."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    return _fuse_box(plan, (y0, y1, x0, x1))


def _fuse_extended_block(
    plan: _FusePlan,
    grid: tuple[tuple[int, ...], tuple[int, ...]],
    depth: int,
    block_info: Any = None,
) -> np.ndarray:
    """Fuse chunk ``(i, j)`` of the chunks ``grid`` (from ``block_info``) with ``depth`` more
    pixels on each side, clipped at the mosaic's border."""
    box = []
    for axis in (0, 1):
        k = block_info[None]["chunk-location"][axis]
        start = sum(grid[axis][:k])
        box += [max(0, start - depth), min(sum(grid[axis]), start + grid[axis][k] + depth)]
    return _fuse_box(plan, (box[0], box[1], box[2], box[3]))


def _fuse_box(plan: _FusePlan, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    h, w = plan.tile_shape
    ty, tx = plan.origins[:, 0], plan.origins[:, 1]
    hits = np.flatnonzero((ty < y1) & (ty + h > y0) & (tx < x1) & (tx + w > x0))
    return _fuse_region_task(
        box,
        plan.origins[hits],
        plan.tile_shape,
        plan.dtype,
        plan.blend,
        plan.gains[hits],
        plan.flat,
        [plan.paths[int(t)] for t in hits],
        plan.crop_bottom,
    )


def _normalize_chunks(
    chunks: int | Sequence[int], shape: tuple[int, int]
) -> tuple[tuple[int, ...], ...]:
    if isinstance(chunks, int):
        chunks = (chunks, chunks)
    return da.core.normalize_chunks(tuple(chunks), shape)


def fuse_overlapped(
    tileset: TileSet,
    positions: pd.DataFrame | None = None,
    *,
    depth: int,
    chunks: int | Sequence[int] = DEFAULT_CHUNK_PX,
    blend: str = "linear",
    gains: pd.DataFrame | None = None,
    flatfield: np.ndarray | None = None,
) -> tuple[xr.DataArray, Overlapped]:
    """:func:`fuse`, with each chunk fused together with ``depth`` pixels around it in one
    task: returns the mosaic (as :func:`fuse` returns it, its chunks cut from those blocks)
    and the blocks (:class:`~mosaicflow._shared.halo.Overlapped`), which a halo filter
    (:func:`mosaicflow.restoration.gaussian_filter`) takes as they are. Writing both in one
    computation fuses each chunk's tiles once for both, where the filter would otherwise read
    the stored mosaic again, nine stored chunks for each chunk and its halo."""
    if int(depth) < 1:
        raise ConfigError(f"fuse_overlapped: depth must be at least 1 px, got {depth!r}")
    mosaic, overlapped = _fuse(tileset, positions, chunks, blend, gains, flatfield, int(depth))
    assert overlapped is not None  # made for depth >= 1
    return mosaic, overlapped


def fuse(
    tileset: TileSet,
    positions: pd.DataFrame | None = None,
    *,
    chunks: int | Sequence[int] = DEFAULT_CHUNK_PX,
    blend: str = "linear",
    gains: pd.DataFrame | None = None,
    flatfield: np.ndarray | None = None,
) -> xr.DataArray:
    """Fuse a tile set into a lazy mosaic.

    Parameters
    ----------
    tileset : TileSet
        Tiles and metadata from :func:`mosaicflow.io.read_tileset`.
    positions : pandas.DataFrame, optional
        ``y_px``, ``x_px`` per tile, in the order of ``tileset.tiles`` (e.g. from registration).
        Defaults to the nominal stage positions. Rounded to whole pixels.
    chunks : int or (int, int)
        Output chunk size in pixels.
    blend : {"linear", "nearest"}
        How overlapping tiles are combined (module docstring).
    gains : pandas.DataFrame, optional
        ``gain`` and ``offset`` per tile, in the order of ``tileset.tiles``
        (:func:`mosaicflow.stitch.equalize.equalize_tileset`); default none.
    flatfield : numpy.ndarray, optional
        The shading every tile is divided by, shape ``tileset.tile_shape``, mean about 1.

    Returns
    -------
    xarray.DataArray
        Dims ``("y", "x")``, coordinates in nm (0 at the top-left pixel centre), the tiles'
        dtype, backed by a Dask graph of one task per chunk that reads only the parts of the
        tiles inside the chunk.

    Notes
    -----
    Memory per task: the chunk plus the tiles' parts inside it, whatever the mosaic's size (no
    tile is held for several chunks). Nothing is read until computed.
    """
    return _fuse(tileset, positions, chunks, blend, gains, flatfield, 0)[0]


def _fuse(
    tileset: TileSet,
    positions: pd.DataFrame | None,
    chunks: int | Sequence[int],
    blend: str,
    gains: pd.DataFrame | None,
    flatfield: np.ndarray | None,
    depth: int,
) -> tuple[xr.DataArray, Overlapped | None]:
    """:func:`fuse`, and with ``depth`` the blocks of :func:`fuse_overlapped`."""
    positions = tileset.tiles if positions is None else positions
    if len(positions) != len(tileset.tiles):
        raise ConfigError(
            f"positions has {len(positions)} rows, the tile set {len(tileset.tiles)} tiles"
        )
    if blend not in BLEND_MODES:
        raise ConfigError(f"option blend: {blend!r} is not one of {', '.join(BLEND_MODES)}")
    origins = _integer_origins(positions)
    shape = mosaic_shape(tileset, positions)
    h, w = tileset.tile_shape
    gain_table = _gain_table(gains, len(tileset.tiles))
    if flatfield is not None:
        flatfield = np.asarray(flatfield, dtype=np.float32)
        if flatfield.shape != (h, w) or not (np.isfinite(flatfield).all() and flatfield.min() > 0):
            raise ConfigError(
                f"flatfield: expected finite positive values of shape {(h, w)}, got "
                f"{flatfield.shape}"
            )
    chunk_tuple = _normalize_chunks(chunks, shape)
    token = tokenize(
        list(tileset.tiles["path"]),
        origins,
        chunk_tuple,
        str(tileset.dtype),
        tileset.tile_shape,
        tileset.crop_bottom,
        blend,
        gain_table,
        flatfield,
    )
    # One blockwise task per chunk, so the writer that follows fuses into it (no task of its
    # own); the tiles' table reaches each worker once, as one dependency.
    plan = dask.delayed(
        _FusePlan(
            origins,
            (h, w),
            str(tileset.dtype),
            blend,
            gain_table,
            flatfield,
            [str(p) for p in tileset.tiles["path"]],
            int(tileset.crop_bottom),
        ),
        pure=True,
    )
    meta = np.empty((0, 0), dtype=tileset.dtype)
    overlapped = None
    if depth:
        blocks = da.map_blocks(
            _fuse_extended_block,
            plan=plan,
            chunks=Overlapped.extended(chunk_tuple, (depth, depth)),
            dtype=tileset.dtype,
            meta=meta,
            name=f"fuse-{depth}-{token}",
            grid=chunk_tuple,
            depth=depth,
        )
        overlapped = Overlapped(blocks, chunk_tuple, (depth, depth))
        data = overlapped.core()
    else:
        data = da.map_blocks(
            _fuse_block,
            plan=plan,
            chunks=chunk_tuple,
            dtype=tileset.dtype,
            meta=meta,
            name=f"fuse-{token}",
        )
    mosaic = xr.DataArray(
        data,
        dims=("y", "x"),
        coords=pixel_coords(shape, tileset.pixel_size_nm),
        name="mosaic",
        attrs={
            "pixel_size_nm": list(tileset.pixel_size_nm),
            "units": "nm",
            "source": str(tileset.folder),
            "n_tiles": len(tileset.tiles),
            "blend": blend,
            "equalised": gains is not None,
            "flatfield": flatfield is not None,
        },
    )
    return mosaic, overlapped


def _gain_table(gains: pd.DataFrame | None, n_tiles: int) -> np.ndarray:
    """``(n_tiles, 2)`` gain and offset per tile; the identity without ``gains``."""
    if gains is None:
        return np.tile(np.array([1.0, 0.0]), (n_tiles, 1))
    if len(gains) != n_tiles or not {"gain", "offset"} <= set(gains.columns):
        raise ConfigError(
            f"gains: expected 'gain' and 'offset' columns for {n_tiles} tiles, got "
            f"{len(gains)} rows with {list(gains.columns)}"
        )
    table = gains[["gain", "offset"]].to_numpy(np.float64)
    if not (np.isfinite(table).all() and (table[:, 0] > 0).all()):
        raise ConfigError("gains: every gain must be positive and every value finite")
    return table


def pixel_coords(shape: tuple[int, int], pixel_size_nm: Sequence[float]) -> dict[str, np.ndarray]:
    """Physical coordinates (nm) of the pixel centres of an image of ``shape``."""
    return {
        "y": np.arange(shape[0], dtype=np.float64) * float(pixel_size_nm[0]),
        "x": np.arange(shape[1], dtype=np.float64) * float(pixel_size_nm[1]),
    }
