"""A rectangle of one tile's pixels, decoding only the TIFF strips or tiles it touches: the
overlap strips registration correlates, without decoding the rest of each tile.

The pixels equal ``read_tile(path, ...)[rows, cols]`` (same grey conversion, same data-bar
crop). A TIFF whose segments are laid out simply (one page, contiguous samples or one sample,
no depth) is read segment by segment with tifffile's own segment decoder; anything else, and
PNG, JPEG and BMP, is decoded whole and sliced. Uncompressed contiguous pixels are read by
row range straight from the file; for a local file, where they lie is remembered per process
(:data:`RAW_LAYOUTS`), so later windows of the same unchanged file skip tifffile's parse of
its header (about 1 ms a read; registration, equalisation and fusion read each tile several
times).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from mosaicflow.errors import TileReadError
from mosaicflow.io.images import (
    TIFF_SUFFIXES,
    check_complete,
    opened,
    read_tile,
    tile_errors,
    to_grey,
)
from mosaicflow.io.remote import RemotePath, as_path


@dataclass(frozen=True)
class RawLayout:
    """Where an uncompressed, contiguous TIFF page keeps its pixels."""

    offset: int  # byte of the first pixel
    shape: tuple[int, int]  # stored rows, columns
    samples: int
    stored: np.dtype  # with the file's byte order
    dtype: np.dtype  # the page's, native


#: ``(path, size, mtime_ns) -> RawLayout`` of the local TIFFs this process has read: a file
#: changed since (another size or time) is parsed again.
RAW_LAYOUTS: dict[tuple[str, int, int], RawLayout] = {}
RAW_LAYOUTS_MAX = 8192


def _span(window: slice, size: int, name: str) -> tuple[int, int]:
    start, stop, step = window.indices(size)
    if step != 1:
        raise ValueError(f"read_tile_region: {name} must have step 1, got {window!r}")
    return start, max(start, stop)


def segment_grid(page: tifffile.TiffPage) -> tuple[int, int, int, int] | None:
    """``(segment_height, segment_width, n_down, n_across)`` of a TIFF page read segment by
    segment here, or None where its layout is not the simple one (then it is decoded whole)."""
    separate, depth, length, width, _ = page.shaped
    if separate != 1 or depth != 1 or page.is_subsampled:
        return None
    if page.is_tiled:
        seg_h, seg_w = int(page.tilelength), int(page.tilewidth)
    else:
        seg_h = int(page.rowsperstrip) or int(length)
        seg_h, seg_w = min(seg_h, int(length)), int(width)
    grid = (seg_h, seg_w, math.ceil(length / seg_h), math.ceil(width / seg_w))
    if grid[2] * grid[3] != len(page.dataoffsets):
        return None
    return grid


def segments_for(page: tifffile.TiffPage, rows: slice, cols: slice) -> list[int] | None:
    """Indices (in the page's offsets) of the segments a window of stored pixels touches, or
    None where the page is decoded whole. ``rows``, ``cols``: step-1 slices, in bounds."""
    grid = segment_grid(page)
    if grid is None:
        return None
    seg_h, seg_w, _, n_across = grid
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return []
    down = range(rows.start // seg_h, (rows.stop - 1) // seg_h + 1)
    across = range(cols.start // seg_w, (cols.stop - 1) // seg_w + 1)
    return [d * n_across + a for d in down for a in across]


def _raw_rows(handle: Any, layout: RawLayout, rows: slice, cols: slice, name: str) -> np.ndarray:
    """Uncompressed contiguous pixels (one strip or many, in order): read the window's rows
    only, straight from the file."""
    width = layout.shape[1]
    row_bytes = width * layout.samples * layout.stored.itemsize
    handle.seek(layout.offset + rows.start * row_bytes)
    data = handle.read((rows.stop - rows.start) * row_bytes)
    if len(data) != (rows.stop - rows.start) * row_bytes:
        raise TileReadError(
            f"tile {name!r}: truncated TIFF (rows {rows.start}-"
            f"{rows.stop} run past the end of the file)"
        )
    window = np.frombuffer(data, dtype=layout.stored).reshape(-1, width, layout.samples)[:, cols]
    window = window.astype(layout.dtype)
    return window[..., 0] if layout.samples == 1 else window


def _file_key(path: Path) -> tuple[str, int, int] | None:
    if isinstance(path, RemotePath):
        return None
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def _tiff_window(path: Path, rows: slice, cols: slice, stored: tuple[int, int]) -> np.ndarray:
    """Stored pixels (samples last where there are several) of a window of a TIFF's first page."""
    key = _file_key(path)
    known = None if key is None else RAW_LAYOUTS.get(key)
    if known is not None and known.shape == stored:
        with open(path, "rb") as handle:
            return _raw_rows(handle, known, rows, cols, path.name)
    with opened(path) as source, tifffile.TiffFile(source) as tif:
        page = tif.pages.first
        shape = (int(page.shaped[2]), int(page.shaped[3]))
        if shape != stored:
            raise TileReadError(f"tile {path.name!r}: size {shape}, expected {stored}")
        check_complete(tif, path)
        if page.is_final and page.is_contiguous and page.shaped[:2] == (1, 1):
            layout = RawLayout(
                int(page.dataoffsets[0]),
                shape,
                int(page.shaped[4]),
                np.dtype(page.dtype).newbyteorder(tif.byteorder),
                np.dtype(page.dtype),
            )
            if key is not None:
                if len(RAW_LAYOUTS) >= RAW_LAYOUTS_MAX:
                    RAW_LAYOUTS.clear()
                RAW_LAYOUTS[key] = layout
            return _raw_rows(tif.filehandle, layout, rows, cols, path.name)
        needed = segments_for(page, rows, cols)
        if needed is None:
            return np.asarray(page.asarray())[rows, cols]
        samples = int(page.shaped[4])
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start, samples), dtype=page.dtype)
        handle = tif.filehandle
        tables = getattr(page, "jpegtables", None)
        for index in needed:
            count = int(page.databytecounts[index])
            data = None
            if count:
                handle.seek(int(page.dataoffsets[index]))
                data = handle.read(count)
            segment, (_, _, y, x, _), seg_shape = page.decode(data, index, jpegtables=tables)
            y0, y1 = max(y, rows.start), min(y + seg_shape[1], rows.stop)
            x0, x1 = max(x, cols.start), min(x + seg_shape[2], cols.stop)
            if y1 <= y0 or x1 <= x0:
                continue
            dest = out[y0 - rows.start : y1 - rows.start, x0 - cols.start : x1 - cols.start]
            if segment is None:  # an empty segment holds the page's fill value
                dest[...] = page.nodata
            else:
                dest[...] = np.asarray(segment).reshape(seg_shape)[
                    0, y0 - y : y1 - y, x0 - x : x1 - x
                ]
        return out[..., 0] if samples == 1 else out


def read_tile_region(
    path: str | os.PathLike[str],
    rows: slice,
    cols: slice,
    *,
    shape: tuple[int, int],
    dtype: Any,
    crop_bottom: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Grey pixels ``[rows, cols]`` of one tile, decoding only what the window needs.

    Parameters
    ----------
    path : path or str
        The tile's image file: a local path or an fsspec URL (``s3://...``).
    rows, cols : slice
        The window, in the tile's pixels after the data-bar crop (step 1; ``None`` bounds and
        bounds past the tile are clipped as NumPy slicing clips them).
    shape : (int, int)
        The tile's size after the crop, as in :func:`mosaicflow.io.images.read_tile`.
    dtype : dtype
        The tile's pixel type.
    crop_bottom : int
        Rows of data bar below the tile.
    storage_options : dict, optional
        fsspec options opening a URL (default: those its
        :class:`~mosaicflow.io.remote.RemotePath` carries).

    Returns
    -------
    numpy.ndarray
        Equal to ``read_tile(path, shape=shape, dtype=dtype, crop_bottom=crop_bottom)[rows,
        cols]``.

    Notes
    -----
    For a TIFF only the strips or tiles the window touches are read and decoded (a strip of a
    tile's height decodes one column of tiles; of a strip-organised TIFF, the strips of its
    rows, whole rows wide); uncompressed contiguous pixels (a single strip included, the usual
    Maps tile) are read row range by row range from the file. Other formats are decoded
    whole. A remote TIFF is read the same way through a file object: only the byte ranges
    the window needs (in blocks of :data:`~mosaicflow.io.images.REMOTE_BLOCK`) are fetched.

    Raises
    ------
    TileReadError
        As :func:`mosaicflow.io.images.read_tile`: unreadable file, wrong size or type.
    """
    path = as_path(path, storage_options)
    h, w = int(shape[0]), int(shape[1])
    r0, r1 = _span(rows, h, "rows")
    c0, c1 = _span(cols, w, "cols")
    if path.suffix.lower() not in TIFF_SUFFIXES:
        tile = read_tile(path, shape=shape, dtype=dtype, crop_bottom=crop_bottom)
        return tile[r0:r1, c0:c1]
    stored = (h + int(crop_bottom), w)
    with tile_errors(path, "cannot decode pixels"):
        data = to_grey(_tiff_window(path, slice(r0, r1), slice(c0, c1), stored))
    if data.dtype != np.dtype(dtype):
        raise TileReadError(f"tile {path.name!r}: pixel type {data.dtype}, expected {dtype}")
    return data
