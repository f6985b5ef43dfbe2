"""Whole chunks of a local Zarr array read and written without Zarr's per-call machinery.

A chunk write through ``zarr.Array.__setitem__`` costs about 1.5-2 ms of CPU beyond its
encoding, and a read about as much beyond its decoding (the selection machinery and the round
trip to Zarr's event loop); a run writes some 2,000 chunks and flags and reads as many. For the
arrays the pipeline writes, a chunk's file is simple: the chunk's pixels, padded to the full
chunk shape with the fill value, as little-endian bytes in C order, optionally compressed with
Zstandard (:class:`zarr.codecs.BytesCodec` and :class:`zarr.codecs.ZstdCodec`, no sharding).
This module encodes and decodes exactly that with numcodecs' Zstandard, the library Zarr's
codec calls, so that the files are byte for byte those Zarr writes
(``tests/io/test_chunk_io.py`` compares them), and replaces a file as Zarr's local store does
(a temporary file renamed over it).

Anything else falls back to Zarr itself: another store (object storage, memory), a read-only
store, Zarr format 2, other codecs or sharding, a selection that is not whole chunks (writes)
or not plain slices (reads), a value of another dtype, and an array opened without
``write_empty_chunks`` (where Zarr would delete an all-fill chunk instead of writing it) unless
the block holds a value other than the fill value (a progress flag).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from mosaicflow.errors import StoreError

#: Blocks up to this many values are checked for all-fill values when the array was opened
#: without ``write_empty_chunks`` (flags); larger ones go through Zarr.
_SMALL = 64


@dataclass(frozen=True)
class _Layout:
    """Where and how one array's chunks are stored."""

    folder: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    fill: Any
    codec: Any  # numcodecs codec, or None for raw bytes
    encode_key: Any
    writable: bool
    write_empty: bool


def _layout(arr: Any) -> _Layout | None:
    """The chunk layout of ``arr`` when its chunks can be handled here, else None."""
    try:
        from zarr.codecs import BytesCodec, ZstdCodec
        from zarr.storage import LocalStore

        meta = arr.metadata
        store = arr.store_path.store
        if getattr(meta, "zarr_format", None) != 3 or not isinstance(store, LocalStore):
            return None
        codecs = tuple(meta.codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
            return None
        dtype = np.dtype(arr.dtype)
        if dtype.kind not in "biuf" or (dtype.itemsize > 1 and dtype.byteorder == ">"):
            return None
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        if dtype.itemsize > 1 and endian not in (None, "little"):
            return None
        codec = None
        if len(codecs) == 2:
            if not isinstance(codecs[1], ZstdCodec):
                return None
            from numcodecs import Zstd

            codec = Zstd(level=int(codecs[1].level), checksum=bool(codecs[1].checksum))
        if arr.async_array.config.order != "C":
            return None
        folder = os.path.join(str(store.root), arr.path) if arr.path else str(store.root)
        return _Layout(
            folder=folder,
            shape=tuple(int(n) for n in arr.shape),
            chunks=tuple(int(c) for c in arr.chunks),
            dtype=dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype,
            fill=arr.fill_value,
            codec=codec,
            encode_key=meta.encode_chunk_key,
            writable=not store.read_only,
            write_empty=bool(arr.async_array.config.write_empty_chunks),
        )
    except (AttributeError, ImportError, TypeError, ValueError):
        return None


def _chunk_path(layout: _Layout, coords: tuple[int, ...]) -> str:
    return os.path.join(layout.folder, *layout.encode_key(coords).split("/"))


def _whole_chunk(layout: _Layout, region: tuple[slice, ...]) -> tuple[int, ...] | None:
    """The coordinates of the one chunk ``region`` covers exactly (to the array's edge), or
    None."""
    if len(region) != len(layout.shape):
        return None
    coords = []
    for sl, n, c in zip(region, layout.shape, layout.chunks, strict=True):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            return None
        start = 0 if sl.start is None else int(sl.start)
        stop = n if sl.stop is None else int(sl.stop)
        if start < 0 or start % c or stop != min(start + c, n):
            return None
        coords.append(start // c)
    return tuple(coords)


def write_region(arr: Any, region: tuple[slice, ...], block: Any) -> None:
    """``arr[region] = block``, where ``region`` is one whole chunk (clipped at the array's
    edge): the chunk's file written directly when :mod:`this module <mosaicflow.io.chunk_io>`
    can, else through Zarr."""
    layout = _layout(arr)
    coords = None if layout is None or not layout.writable else _whole_chunk(layout, region)
    values = np.asarray(block) if isinstance(block, np.ndarray) else None
    expected = None if coords is None else tuple(s.stop - s.start for s in _bounded(layout, region))
    if (
        layout is None
        or coords is None
        or values is None
        or values.dtype != layout.dtype
        or values.shape != expected
        or (not layout.write_empty and not _not_all_fill(values, layout.fill))
    ):
        arr[region] = block
        return
    if values.shape != layout.chunks:  # an edge chunk: padded as Zarr pads it
        full = np.full(layout.chunks, layout.fill, dtype=layout.dtype)
        full[tuple(slice(0, n) for n in values.shape)] = values
        values = full
    data = np.ascontiguousarray(values)
    payload = data if layout.codec is None else layout.codec.encode(data)
    _replace(_chunk_path(layout, coords), memoryview(payload).cast("B"))


def set_flag(flags: Any, index: tuple[int, ...]) -> None:
    """``flags[index] = 1`` for a progress array of one flag per chunk
    (:func:`mosaicflow.io.chunk_writes.progress_array`)."""
    region = tuple(slice(int(i), int(i) + 1) for i in index)
    write_region(flags, region, np.ones((1,) * len(region), dtype=np.uint8))


def _bounded(layout: _Layout, region: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(0 if s.start is None else int(s.start), n if s.stop is None else int(s.stop))
        for s, n in zip(region, layout.shape, strict=True)
    )


def _not_all_fill(values: np.ndarray, fill: Any) -> bool:
    """Whether a small block holds a value other than the fill value (a large one is not
    checked: Zarr's own check costs milliseconds per chunk)."""
    return values.size <= _SMALL and bool(np.any(values != fill))


def _replace(path: str, payload: memoryview) -> None:
    """Write ``path`` whole: a temporary file beside it, renamed over it."""
    folder = os.path.dirname(path)
    tmp = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        fh = open(tmp, "wb")
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fh = open(tmp, "wb")
    try:
        with fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_region(arr: Any, region: tuple[slice, ...]) -> np.ndarray:
    """``arr[region]`` for plain slices (step 1), decoded here chunk by chunk when this module
    can, else through Zarr. Chunks never written read as the fill value."""
    layout = _layout(arr)
    if layout is None or not isinstance(region, tuple) or len(region) != len(layout.shape):
        return np.asarray(arr[region])
    if not all(isinstance(s, slice) and s.step in (None, 1) for s in region):
        return np.asarray(arr[region])
    bounds = [s.indices(n)[:2] for s, n in zip(region, layout.shape, strict=True)]
    shape = tuple(max(0, b - a) for a, b in bounds)
    out = np.empty(shape, dtype=layout.dtype)
    if not out.size:
        return out
    ranges = [
        range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, layout.chunks, strict=True)
    ]
    if shape == layout.chunks and all(len(r) == 1 for r in ranges):  # one whole chunk
        return _read_chunk(layout, tuple(r[0] for r in ranges), out)
    for coords in np.ndindex(*(len(r) for r in ranges)):
        chunk = tuple(r[i] for r, i in zip(ranges, coords, strict=True))
        src, dst = [], []
        for axis, k in enumerate(chunk):
            c = layout.chunks[axis]
            a, b = bounds[axis]
            lo, hi = max(a, k * c), min(b, (k + 1) * c)
            src.append(slice(lo - k * c, hi - k * c))
            dst.append(slice(lo - a, hi - a))
        out[tuple(dst)] = _read_chunk(layout, chunk)[tuple(src)]
    return out


def _read_chunk(layout: _Layout, coords: tuple[int, ...], out: np.ndarray | None = None) -> Any:
    """Chunk ``coords`` decoded (into ``out``, C-contiguous and of the chunk's shape, if
    given): the fill value where the chunk was never written."""
    path = _chunk_path(layout, coords)
    if out is None:
        out = np.empty(layout.chunks, dtype=layout.dtype)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        out.fill(layout.fill)
        return out
    flat = out.reshape(-1).view(np.uint8)
    try:
        if layout.codec is None:
            if len(raw) != flat.size:
                raise ValueError(len(raw))
            flat[:] = np.frombuffer(raw, dtype=np.uint8)
        else:
            if _frame_content_size(raw) != flat.size:  # a shorter frame would leave a tail
                raise ValueError(f"its frame holds {_frame_content_size(raw)} bytes")
            layout.codec.decode(raw, out=flat)
    except (RuntimeError, ValueError) as exc:
        raise StoreError(
            f"chunk file {path} does not decode to a {layout.chunks} chunk: {exc}"
        ) from exc
    return out


def _frame_content_size(raw: bytes) -> int | None:
    """The decompressed size a Zstandard frame's header declares (None: not declared, or not
    a frame), read as RFC 8878, section 3.1.1.1, lays it out."""
    if len(raw) < 6 or raw[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = raw[4]
    fcs_flag, single, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    fcs_bytes = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if not fcs_bytes:
        return None
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    if len(raw) < at + fcs_bytes:
        return None
    size = int.from_bytes(raw[at : at + fcs_bytes], "little")
    return size + 256 if fcs_bytes == 2 else size


class ChunkReader:
    """A read-only view of a Zarr array whose slices are read by :func:`read_region`: what
    :func:`dask.array.from_array` reads the stored images through (see
    :meth:`mosaicflow.io.store.RunStore.read_image`)."""

    def __init__(self, arr: Any) -> None:
        self.array = arr
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.chunks = tuple(arr.chunks)
        self.ndim = len(self.shape)

    def __getitem__(self, region: Any) -> np.ndarray:
        return read_region(self.array, region if isinstance(region, tuple) else (region,))

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("ChunkReader", tokenize(self.array))


def lazy(arr: Any, chunks: tuple[int, ...] | None = None) -> Any:
    """A Dask array over a Zarr array (one task per ``chunks``, default the stored chunks),
    read through :class:`ChunkReader`: what :func:`dask.array.from_zarr` gives, each block a
    plain ``getter`` of the one source, faster where :func:`read_region` can read it."""
    import dask.array as da
    from dask.base import tokenize

    chunks = tuple(int(c) for c in (chunks or arr.chunks))
    return da.from_array(
        ChunkReader(arr),
        chunks=chunks,
        name=f"from-zarr-{tokenize(arr, chunks)}",
        inline_array=False,
    )


__all__ = ["ChunkReader", "lazy", "read_region", "set_flag", "write_region"]
