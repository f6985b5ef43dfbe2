"""Writing a Dask array into a Zarr array chunk by chunk on the workers: each task writes
whole chunks (or shards) only, optionally the halved chunks of the pyramid levels under them,
and flags each chunk once written, so an interrupted write resumes where it stopped. Used by
the multiscale images (:mod:`mosaicflow.io.ome`) and the instance path's arrays."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import zarr

from mosaicflow._shared.arrays import value_counts
from mosaicflow.errors import StoreError
from mosaicflow.io.chunk_io import set_flag, write_region
from mosaicflow.runner import Runner


def _mean_2x2_rounded(block: np.ndarray) -> np.ndarray:
    """The mean of each 2x2 block of an integer image (``block`` shaped ``(h, 2, w, 2)``),
    rounded half to even as ``np.round`` of the float mean: exact integer arithmetic in a type
    twice as wide, no float copy (``>> 2`` and ``& 3`` are floor division by 4 and its
    remainder, for negative sums too)."""
    wide = np.dtype(f"{block.dtype.kind}{2 * block.dtype.itemsize}")
    total = block[:, 0, :, 0].astype(wide)
    total += block[:, 0, :, 1]
    total += block[:, 1, :, 0]
    total += block[:, 1, :, 1]
    rest = total & 3
    total >>= 2
    total += (rest > 2) | ((rest == 2) & (total & 1).astype(bool))
    return total.astype(block.dtype)


def _rounded_quarters() -> np.ndarray:
    """``round(total / 4)``, half to even, of every sum of four bytes (0 .. 1020)."""
    total = np.arange(4 * 255 + 1)
    quarter, rest = total >> 2, total & 3
    return (quarter + ((rest > 2) | ((rest == 2) & (quarter & 1).astype(bool)))).astype(np.uint8)


_QUARTERS = _rounded_quarters()


def _mean_2x2_uint8(block: np.ndarray) -> np.ndarray:
    """:func:`_mean_2x2_rounded` of an 8-bit image of even sides, half the time: row pairs
    summed first (contiguous rows), then column pairs, then one table lookup for the rounding
    (6 against 12 ms for a 2048 px chunk)."""
    rows = block[0::2].astype(np.uint16)
    rows += block[1::2]
    return _QUARTERS[rows[:, 0::2] + rows[:, 1::2]]


def half_size(block: np.ndarray, *, label: bool = False) -> np.ndarray:
    """The next pyramid level of a 2-D image or label block: ``floor(n / 2)`` pixels per axis,
    each the rounded mean of a 2x2 block (integers of up to 32 bits exactly; others through a
    float32 mean, rounded and clipped to an integer type), or for labels the block's top-left
    pixel, which keeps label values intact."""
    h, w = block.shape[0] // 2, block.shape[1] // 2
    if label:
        return block[: 2 * h : 2, : 2 * w : 2]
    if block.dtype == np.uint8:
        return _mean_2x2_uint8(block[: 2 * h, : 2 * w])
    pairs = block[: 2 * h, : 2 * w].reshape(h, 2, w, 2)
    if np.issubdtype(block.dtype, np.integer) and block.dtype.itemsize <= 4:
        return _mean_2x2_rounded(pairs)
    mean = np.mean(pairs.astype(np.float32), axis=(1, 3))
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        return np.clip(np.round(mean), info.min, info.max).astype(block.dtype)
    return mean.astype(block.dtype)


def _write_block(
    block: np.ndarray,
    target: zarr.Array,
    progress: zarr.Array | None = None,
    below: tuple[tuple[zarr.Array, zarr.Array | None], ...] = (),
    label: bool = False,
    count: int | None = None,
    block_info: Any = None,
) -> np.ndarray:
    """Write one chunk, then each level of ``below`` (levels 1, 2, ... with chunks of half,
    a quarter, ... the size) from the halved block: chunk ``index`` of every level covers the
    same area. Flags are set once every level's data is written; returns how many chunks
    were written (with ``count``, the offset of an 8-bit type, followed by the chunk's pixels
    per value)."""
    loc = block_info[0]["array-location"]
    index = tuple(block_info[0]["chunk-location"])
    write_region(target, tuple(slice(a, b) for a, b in loc), block)
    counted = None if count is None else value_counts(block, count, 256)
    done = []
    for k, (level, flags) in enumerate(below, 1):
        block = half_size(block, label=label)
        if not block.size:  # the last row or column of chunks has no pixels this far down
            break
        start = [a >> k for a, _ in loc]
        write_region(
            level, tuple(slice(a, a + n) for a, n in zip(start, block.shape, strict=True)), block
        )
        done.append(flags)
    for flags in (*done, progress):
        if flags is not None:  # recorded only once the chunk's data is written
            set_flag(flags, index)
    if counted is not None:  # an 8-bit chunk's pixels per value, after the chunks written
        return np.concatenate(([1 + len(done)], counted))[None, None, :]
    return np.full((1,) * block.ndim, 1 + len(done), dtype=np.uint8)


def progress_array(group: zarr.Group, name: str, target: zarr.Array, *, keep: bool) -> zarr.Array:
    """One ``uint8`` flag per write unit of ``target`` (1: written), each flag its own Zarr
    chunk so that tasks never share one. ``keep`` reuses flags already there when they still
    describe ``target``'s grid (a resumed write); otherwise they start at 0."""
    grid = tuple(math.ceil(n / u) for n, u in zip(target.shape, write_unit(target), strict=True))
    if keep and name in group and tuple(group[name].shape) == grid:
        return group[name]
    return group.create_array(
        name, shape=grid, chunks=(1,) * len(grid), dtype="uint8", fill_value=0, overwrite=True
    )


def missing_chunks(target: zarr.Array, stored: set[str]) -> list[tuple[int, ...]]:
    """Chunk indices of ``target`` whose file is not among ``stored`` (chunk keys ``c/i/j``
    relative to the array); arrays are written with every chunk stored, empty ones included."""
    grid = [range(math.ceil(n / c)) for n, c in zip(target.shape, target.chunks, strict=True)]
    return [
        idx
        for idx in np.ndindex(*(len(g) for g in grid))
        if "c/" + "/".join(str(i) for i in idx) not in stored
    ]


def write_unit(target: zarr.Array) -> tuple[int, ...]:
    """The block one task may write whole: the shard of a sharded array, else the chunk."""
    shards = getattr(target, "shards", None)
    return tuple(shards) if shards else tuple(target.chunks)


def check_alignment(chunks: tuple[tuple[int, ...], ...], target: zarr.Array) -> None:
    """Refuse Dask chunks that do not start on the target's write units.

    Two tasks writing parts of one Zarr chunk, or of one shard, each read-modify-write the
    whole of it, and one of them loses its part without an error.
    """
    unit = write_unit(target)
    for axis, (sizes, step) in enumerate(zip(chunks, unit, strict=True)):
        starts = np.cumsum((0, *sizes[:-1]))
        bad = starts[starts % step != 0]
        if len(bad):
            raise StoreError(
                f"writing {target.path or 'array'}: a task would start at pixel {int(bad[0])} "
                f"on axis {axis}, inside a {'shard' if unit != tuple(target.chunks) else 'chunk'}"
                f" of {step} px; tasks must write whole chunks and shards"
            )


def _aligned(arr: da.Array, target: zarr.Array) -> da.Array:
    """``arr`` rechunked to the target's write unit, checked (:func:`check_alignment`)."""
    unit = write_unit(target)
    if arr.chunks != da.core.normalize_chunks(unit, arr.shape):
        arr = arr.rechunk(unit)
    check_alignment(arr.chunks, target)
    return arr


def _write_markers(
    arr: da.Array,
    target: zarr.Array,
    progress: zarr.Array | None,
    below: tuple[tuple[zarr.Array, zarr.Array | None], ...] = (),
    label: bool = False,
) -> tuple[da.Array, da.Array]:
    """``arr`` rechunked to the target's write unit (checked), and the lazy per-chunk markers
    of writing it there, and its halves into ``below`` (one uint8 per chunk: the chunks
    written)."""
    arr = _aligned(arr, target)
    markers = da.map_blocks(
        _write_block,
        arr,
        target=target,
        progress=progress,
        below=below,
        label=label,
        chunks=tuple((1,) * len(c) for c in arr.chunks),
        dtype=np.uint8,
        meta=np.empty((0,) * arr.ndim, dtype=np.uint8),
    )
    return arr, markers


def store_array(
    arr: da.Array,
    target: zarr.Array,
    runner: Runner,
    description: str,
    progress: zarr.Array | None = None,
    resume: bool = False,
    below: tuple[tuple[zarr.Array, zarr.Array | None], ...] = (),
    label: bool = False,
    counts: dict[str, Any] | None = None,
    summaries: ChunkSummaries | None = None,
) -> int:
    """Write a Dask array into a Zarr array chunk by chunk, on the workers; returns the number
    of chunks written now (with ``below``, pyramid levels written by the same tasks, see
    :func:`_write_block`, theirs too).

    The Dask array is rechunked to the target's write unit (its shard if sharded, else its
    chunk; the last ones may be shorter) and :func:`check_alignment` verifies it, so that no two
    tasks write the same Zarr chunk or shard. With ``progress`` (:func:`progress_array`) each
    task flags its chunk after writing it; with ``resume`` the chunks already flagged are not
    computed again (an interrupted write resumes where it stopped). A fresh write does not read
    the flags (one small read per chunk on object storage).

    ``counts`` (a dict): an 8-bit image written whole (not resumed) has its pixels counted per
    value by the tasks that write them, summed into ``counts["per_value"]`` (entry ``v -
    dtype.min`` counting value ``v``); otherwise the dict is left as it is.

    ``summaries`` (:class:`ChunkSummaries`): an image written whole (not resumed) has each
    chunk summarised by the task that writes it (see there); a resumed write leaves it as it
    is (``results`` None).
    """
    if (counts is not None or summaries is not None) and not resume:  # store_together's way
        write = ChunkWrite(arr, target, progress, below, label, counts, summaries)
        return store_together([write], runner, description)[0]
    markers, todo = _pending_writes(arr, target, progress, resume, below, label)
    return _run_writes([markers], [todo], runner, description)


def _pending_writes(
    arr: da.Array,
    target: zarr.Array,
    progress: zarr.Array | None,
    resume: bool,
    below: tuple[tuple[zarr.Array, zarr.Array | None], ...] = (),
    label: bool = False,
) -> tuple[da.Array, int]:
    """The markers of the chunks of ``arr`` still to write into ``target`` (all of them, in
    the array's grid, unless ``resume`` finds some flagged: then a flat list) and how many
    chunks those tasks write (with 0, the markers are not to be computed)."""
    arr, markers = _write_markers(arr, target, progress, below, label)
    done = progress[...] > 0 if resume and progress is not None else np.zeros(arr.numblocks, bool)
    todo = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~done), strict=True)]
    chunks = _chunks_written(todo, below)
    if todo and len(todo) < arr.npartitions:  # only the unwritten chunks: the graph is culled
        return da.concatenate([markers.blocks[idx].ravel() for idx in todo]), chunks
    return markers, chunks


def _chunks_written(
    todo: list[tuple[int, ...]], below: tuple[tuple[zarr.Array, zarr.Array | None], ...]
) -> int:
    """How many chunks the level-0 tasks ``todo`` write, their near levels' included (the last
    row or column of chunks may have no pixels that far down)."""
    grids = [_grid(level) for level, _ in below]
    return len(todo) + sum(all(map(int.__lt__, i, g)) for g in grids for i in todo)


def _grid(target: zarr.Array) -> tuple[int, ...]:
    """How many write units ``target`` has per axis."""
    return tuple(math.ceil(n / u) for n, u in zip(target.shape, write_unit(target), strict=True))


def _run_writes(markers: list[da.Array], todo: list[int], runner: Runner, description: str) -> int:
    """Compute the write markers of one or more arrays in one computation; returns the chunks
    written, after checking that every pending chunk was."""
    expected = sum(todo)
    if not expected:
        return 0
    pending = [m for m, n in zip(markers, todo, strict=True) if n]
    written = runner.compute(
        pending[0] if len(pending) == 1 else da.concatenate([m.ravel() for m in pending]),
        description,
    )
    _check_written(np.asarray(written).sum(), expected, description)
    return expected


def _check_written(written: Any, expected: int, description: str) -> None:
    if int(written) != expected:
        raise StoreError(f"{description}: only {int(written)} of {expected} chunks written")


def store_arrays(
    arrays: list[da.Array], targets: list[zarr.Array], runner: Runner, description: str
) -> int:
    """Write several Dask arrays that share work (e.g. two outputs of one model) into Zarr
    arrays in one computation, so the shared part runs once; returns the chunks written."""
    parts = [_write_markers(a, t, None)[1].ravel() for a, t in zip(arrays, targets, strict=True)]
    return _run_writes(parts, [p.shape[0] for p in parts], runner, description)


@dataclass
class ChunkSummaries:
    """A small result per chunk of an array being written, made by the task that writes the
    chunk from its level-0 pixels (no second read): ``function(block, origin)``, ``origin``
    the chunk's first pixel, picklable (a module-level function or a ``functools.partial`` of
    one). Once written, ``results`` holds the values in the chunk grid (an object array)."""

    function: Callable[[np.ndarray, tuple[int, ...]], Any]
    results: np.ndarray | None = None


@dataclass(frozen=True)
class ChunkWrite:
    """One array's part of :func:`store_together`: what :func:`store_array` takes for it
    (``counts``: a dict to receive an 8-bit array's pixels per value; ``summaries``: a
    :class:`ChunkSummaries` to fill)."""

    data: da.Array
    target: zarr.Array
    progress: zarr.Array | None = None
    below: tuple[tuple[zarr.Array, zarr.Array | None], ...] = ()
    label: bool = False
    counts: dict[str, Any] | None = None
    summaries: ChunkSummaries | None = None


def store_together(writes: Sequence[ChunkWrite], runner: Runner, description: str) -> list[int]:
    """Write several Dask arrays whose graphs share work (e.g. two images from one pass over
    the tiles) in one computation, so that the shared part runs once; each as
    :func:`store_array` writes it afresh (not resumed), its chunks flagged and, with
    ``counts`` (one array at most), an 8-bit array's pixels counted per value. The arrays
    share their chunks: one task writes chunk ``(i, j)`` of every array, so Dask fuses the
    shared work into it and nothing waits in memory between a producer and its writers.
    Returns the chunks written, per array."""
    arrays = [_aligned(w.data, w.target) for w in writes]
    if len({a.chunks for a in arrays}) != 1:
        raise StoreError(f"{description}: arrays written together must share their chunks")
    counted = [
        w.counts is not None and a.dtype.itemsize == 1 and a.dtype.kind in "ui"
        for w, a in zip(writes, arrays, strict=True)
    ]
    if sum(counted) > 1:
        raise StoreError(f"{description}: only one array written together can be counted")
    specs = tuple(
        (
            w.target,
            w.progress,
            w.below,
            w.label,
            int(np.iinfo(a.dtype).min) if c else None,
            None if w.summaries is None else w.summaries.function,
        )
        for w, a, c in zip(writes, arrays, counted, strict=True)
    )
    markers = da.map_blocks(
        _write_blocks,
        *arrays,
        specs=specs,
        chunks=tuple((1,) * len(c) for c in arrays[0].chunks),
        dtype=object,
        meta=np.empty((0,) * arrays[0].ndim, dtype=object),
    )
    result = np.asarray(runner.compute(markers, description))
    written = np.array([cell[0] for cell in result.flat], dtype=np.int64).reshape(-1, len(writes))
    todo = list(np.ndindex(*arrays[0].numblocks))
    expected = [_chunks_written(todo, w.below) for w in writes]
    for k, n in enumerate(expected):
        _check_written(written[:, k].sum(), n, description)
    for k, (w, c) in enumerate(zip(writes, counted, strict=True)):
        if c and w.counts is not None:
            w.counts["per_value"] = np.sum([cell[1] for cell in result.flat], axis=0)
        if w.summaries is not None:
            found = np.empty(result.shape, dtype=object)
            for idx in np.ndindex(*result.shape):
                found[idx] = result[idx][2][k]
            w.summaries.results = found
    return expected


def _write_blocks(
    *blocks: np.ndarray, specs: tuple[Any, ...], block_info: Any = None
) -> np.ndarray:
    """Chunk ``(i, j)`` of every array of :func:`store_together`, each written as
    :func:`_write_block` writes it (its data, then its flags); returns one cell holding the
    chunks written per array, the counted array's pixels per value (or None) and each
    array's chunk summary (or None)."""
    written: list[int] = []
    counted = None
    summaries: list[Any] = []
    for k, (block, spec) in enumerate(zip(blocks, specs, strict=True)):
        target, progress, below, label, count, summarise = spec
        info = {0: block_info[k]}
        origin = tuple(a for a, _ in block_info[k]["array-location"])
        summaries.append(None if summarise is None else summarise(block, origin))
        marker = _write_block(block, target, progress, below, label, count, block_info=info)
        written.append(int(marker.flat[0]))
        if count is not None:
            counted = marker.ravel()[1:]
    out = np.empty((1,) * blocks[0].ndim, dtype=object)
    out.flat[0] = (written, counted, summaries)
    return out
