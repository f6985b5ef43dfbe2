"""Fusion of positioned tiles into one lazily computed mosaic, planned per output chunk.

Each output pixel is taken from the tile whose centre is nearest (distance normalised by the
tile's half-size), so seams fall in the middle of overlaps and no pixel is blurred by averaging
two slightly misplaced tiles. The choice depends only on global pixel coordinates, so the mosaic
is identical for any chunking. Pixels covered by no tile are 0 and reported by ``coverage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from dask.tokenize import tokenize

from mosaicflow.config import DEFAULT_CHUNK_PX
from mosaicflow.errors import ConfigError
from mosaicflow.io.tiles import TileSet, read_tile


def _integer_origins(positions: pd.DataFrame) -> np.ndarray:
    origins = np.rint(positions[["y_px", "x_px"]].to_numpy(dtype=np.float64)).astype(np.int64)
    return origins - origins.min(axis=0)


def mosaic_shape(tileset: TileSet, positions: pd.DataFrame | None = None) -> tuple[int, int]:
    """Shape ``(height, width)`` of the mosaic the tiles span at ``positions``."""
    origins = _integer_origins(tileset.tiles if positions is None else positions)
    h, w = tileset.tile_shape
    return int(origins[:, 0].max() + h), int(origins[:, 1].max() + w)


def _fuse_chunk(
    region: tuple[int, int, int, int],
    origins: np.ndarray,
    tile_shape: tuple[int, int],
    dtype: Any,
    *tiles: np.ndarray,
) -> np.ndarray:
    y0, y1, x0, x1 = region
    h, w = tile_shape
    out = np.zeros((y1 - y0, x1 - x0), dtype=dtype)
    best = np.full(out.shape, np.inf)
    yy = np.arange(y0, y1, dtype=np.float64)[:, None]
    xx = np.arange(x0, x1, dtype=np.float64)[None, :]
    for (ty, tx), tile in zip(origins, tiles, strict=True):
        # Chebyshev distance to the tile centre in units of half-sizes: < 1 inside the tile.
        dist = np.maximum(
            np.abs(yy - (ty + (h - 1) / 2)) / (h / 2), np.abs(xx - (tx + (w - 1) / 2)) / (w / 2)
        )
        sy0, sy1 = max(y0, ty), min(y1, ty + h)
        sx0, sx1 = max(x0, tx), min(x1, tx + w)
        inside = np.zeros(out.shape, dtype=bool)
        inside[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = True
        take = inside & (dist < best)
        src = np.zeros(out.shape, dtype=dtype)
        src[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
            sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx
        ]
        out[take] = src[take]
        best[take] = dist[take]
    return out


def _normalize_chunks(
    chunks: int | Sequence[int], shape: tuple[int, int]
) -> tuple[tuple[int, ...], ...]:
    if isinstance(chunks, int):
        chunks = (chunks, chunks)
    return da.core.normalize_chunks(tuple(chunks), shape)


def fuse(
    tileset: TileSet,
    positions: pd.DataFrame | None = None,
    *,
    chunks: int | Sequence[int] = DEFAULT_CHUNK_PX,
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

    Returns
    -------
    xarray.DataArray
        Dims ``("y", "x")``, coordinates in nm (0 at the top-left pixel centre), the tiles'
        dtype, backed by a Dask graph with one read task per tile and one fuse task per chunk.

    Notes
    -----
    Memory per fuse task: the chunk plus the tiles touching it. Nothing is read until computed.
    """
    positions = tileset.tiles if positions is None else positions
    if len(positions) != len(tileset.tiles):
        raise ConfigError(
            f"positions has {len(positions)} rows, the tile set {len(tileset.tiles)} tiles"
        )
    origins = _integer_origins(positions)
    shape = mosaic_shape(tileset, positions)
    h, w = tileset.tile_shape
    chunk_tuple = _normalize_chunks(chunks, shape)
    token = tokenize(
        list(tileset.tiles["path"]),
        origins,
        chunk_tuple,
        str(tileset.dtype),
        tileset.tile_shape,
        tileset.crop_bottom,
    )
    read_name = f"read-tile-{token}"
    name = f"fuse-{token}"
    dsk: dict[Any, Any] = {}
    for i, path in enumerate(tileset.tiles["path"]):
        dsk[(read_name, i)] = (
            _read_tile_task,
            path,
            (h, w),
            str(tileset.dtype),
            tileset.crop_bottom,
        )
    ystarts = np.cumsum((0, *chunk_tuple[0]))
    xstarts = np.cumsum((0, *chunk_tuple[1]))
    for bi in range(len(chunk_tuple[0])):
        y0, y1 = int(ystarts[bi]), int(ystarts[bi + 1])
        hits_y = (origins[:, 0] < y1) & (origins[:, 0] + h > y0)
        for bj in range(len(chunk_tuple[1])):
            x0, x1 = int(xstarts[bj]), int(xstarts[bj + 1])
            hits = np.flatnonzero(hits_y & (origins[:, 1] < x1) & (origins[:, 1] + w > x0))
            dsk[(name, bi, bj)] = (
                _fuse_chunk,
                (y0, y1, x0, x1),
                origins[hits],
                (h, w),
                str(tileset.dtype),
                *[(read_name, int(t)) for t in hits],
            )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    data = da.Array(graph, name, chunk_tuple, meta=np.empty((0, 0), dtype=tileset.dtype))
    return xr.DataArray(
        data,
        dims=("y", "x"),
        coords=pixel_coords(shape, tileset.pixel_size_nm),
        name="mosaic",
        attrs={
            "pixel_size_nm": list(tileset.pixel_size_nm),
            "units": "nm",
            "source": str(tileset.folder),
            "n_tiles": len(tileset.tiles),
        },
    )


def _coverage_chunk(
    region: tuple[int, int, int, int], origins: np.ndarray, tile_shape: tuple[int, int]
) -> np.ndarray:
    y0, y1, x0, x1 = region
    h, w = tile_shape
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for ty, tx in origins:
        out[max(0, ty - y0) : max(0, ty + h - y0), max(0, tx - x0) : max(0, tx + w - x0)] = True
    return out


def coverage(
    tileset: TileSet,
    positions: pd.DataFrame | None = None,
    *,
    chunks: int | Sequence[int] = DEFAULT_CHUNK_PX,
) -> xr.DataArray:
    """Lazy boolean image of the mosaic: True where some tile was acquired.

    Missing tiles leave holes (False), which the particle table reports as
    ``touches_uncovered``. Same shape, chunks and coordinates as :func:`fuse`; reads no tile.
    """
    positions = tileset.tiles if positions is None else positions
    origins = _integer_origins(positions)
    shape = mosaic_shape(tileset, positions)
    h, w = tileset.tile_shape
    chunk_tuple = _normalize_chunks(chunks, shape)
    name = f"coverage-{tokenize(origins, chunk_tuple, tileset.tile_shape)}"
    ystarts = np.cumsum((0, *chunk_tuple[0]))
    xstarts = np.cumsum((0, *chunk_tuple[1]))
    dsk: dict[Any, Any] = {}
    for bi in range(len(chunk_tuple[0])):
        y0, y1 = int(ystarts[bi]), int(ystarts[bi + 1])
        for bj in range(len(chunk_tuple[1])):
            x0, x1 = int(xstarts[bj]), int(xstarts[bj + 1])
            hits = (
                (origins[:, 0] < y1)
                & (origins[:, 0] + h > y0)
                & (origins[:, 1] < x1)
                & (origins[:, 1] + w > x0)
            )
            dsk[(name, bi, bj)] = (_coverage_chunk, (y0, y1, x0, x1), origins[hits], (h, w))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    data = da.Array(graph, name, chunk_tuple, meta=np.empty((0, 0), dtype=bool))
    return xr.DataArray(
        data,
        dims=("y", "x"),
        coords=pixel_coords(shape, tileset.pixel_size_nm),
        name="coverage",
        attrs={"pixel_size_nm": list(tileset.pixel_size_nm), "units": "nm"},
    )


def _read_tile_task(
    path: str, shape: tuple[int, int], dtype: str, crop_bottom: int = 0
) -> np.ndarray:
    """One tile's grey pixels with the data bar cropped (``TileSet.crop_bottom``)."""
    return read_tile(path, shape=shape, dtype=dtype, crop_bottom=crop_bottom)


def pixel_coords(shape: tuple[int, int], pixel_size_nm: Sequence[float]) -> dict[str, np.ndarray]:
    """Physical coordinates (nm) of the pixel centres of an image of ``shape``."""
    return {
        "y": np.arange(shape[0], dtype=np.float64) * float(pixel_size_nm[0]),
        "x": np.arange(shape[1], dtype=np.float64) * float(pixel_size_nm[1]),
    }
