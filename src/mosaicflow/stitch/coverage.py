"""Where the tiles cover the mosaic: a lazy boolean image of the same shape, chunks and
coordinates as the fused mosaic (:func:`mosaicflow.stitch.fuse.fuse`), computed from the
tiles' positions alone (no tile is read). Missing tiles leave holes."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.tokenize import tokenize

from mosaicflow.config import DEFAULT_CHUNK_PX
from mosaicflow.io.tiles import TileSet
from mosaicflow.stitch.equalize import integer_origins as _integer_origins
from mosaicflow.stitch.fuse import _normalize_chunks, mosaic_shape, pixel_coords


class _Coverage:
    """The tiles' footprint as a sliceable boolean image: any box is computed from the tile
    origins on demand. Wrapped by ``dask.array.from_array``, each chunk is a plain read of one
    source, so a task that needs a chunk and its halo reads that box at once
    (``_shared.halo.store_source``) instead of gathering edges from neighbouring tasks, which
    held chunks in memory in proportion to the mosaic's width."""

    ndim = 2
    dtype = np.dtype(bool)

    def __init__(
        self, origins: np.ndarray, shape: tuple[int, int], tile_shape: tuple[int, int]
    ) -> None:
        self.origins = np.asarray(origins, dtype=np.int64).reshape(-1, 2)
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile_shape = (int(tile_shape[0]), int(tile_shape[1]))

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise IndexError(f"coverage: a box of two slices is read, got {key!r}")
        (y0, y1, sy), (x0, x1, sx) = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        if sy != 1 or sx != 1:
            raise IndexError(f"coverage: only unit steps are read, got {key!r}")
        h, w = self.tile_shape
        y1, x1 = max(y0, y1), max(x0, x1)
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        ty, tx = self.origins[:, 0], self.origins[:, 1]
        hits = (ty < y1) & (ty + h > y0) & (tx < x1) & (tx + w > x0)
        for oy, ox in self.origins[hits]:
            out[max(0, oy - y0) : max(0, oy + h - y0), max(0, ox - x0) : max(0, ox + w - x0)] = True
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
    Any box of it can be read in one task (see :class:`_Coverage`).
    """
    positions = tileset.tiles if positions is None else positions
    origins = _integer_origins(positions)
    shape = mosaic_shape(tileset, positions)
    chunk_tuple = _normalize_chunks(chunks, shape)
    source = _Coverage(origins, shape, tileset.tile_shape)
    name = f"coverage-{tokenize(origins, chunk_tuple, tileset.tile_shape)}"
    data = da.from_array(source, chunks=chunk_tuple, name=name, meta=np.empty((0, 0), dtype=bool))
    return xr.DataArray(
        data,
        dims=("y", "x"),
        coords=pixel_coords(shape, tileset.pixel_size_nm),
        name="coverage",
        attrs={"pixel_size_nm": list(tileset.pixel_size_nm), "units": "nm"},
    )
