"""OME-Zarr multiscale images: level 0 written chunk by chunk by the workers, each further level
computed from the stored level above, and the NGFF ``multiscales`` metadata for them."""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from mosaicflow._shared.arrays import pixel_grid, value_counts
from mosaicflow.errors import StoreError
from mosaicflow.runner import Runner

OME_VERSION = "0.5"


def image_codecs() -> list[Any]:
    """The compressor of every image and scratch array a run writes: Zstandard at level 1.
    Measured on a synthetic mosaic's 1024 px chunks against Zarr's default (level 0, which is
    zstd's 3): encode 239 / 172 MB/s and decode 1,358 / 964 MB/s for the denoised layer at a
    ratio of 2.52 / 2.66, and the same ratio for the raw mosaic, masks and labels
    (``docs/PERFORMANCE.md``)."""
    return [ZstdCodec(level=1)]


#: Pyramid levels whose chunks would still be at least this many pixels across are written by
#: the task that writes the level-0 chunk below them (:func:`write_multiscale`).
NEAR_LEVEL_MIN_CHUNK = 256


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
    target[tuple(slice(a, b) for a, b in loc)] = block
    counted = None if count is None else value_counts(block, count, 256)
    done = []
    for k, (level, flags) in enumerate(below, 1):
        block = half_size(block, label=label)
        if not block.size:  # the last row or column of chunks has no pixels this far down
            break
        start = [a >> k for a, _ in loc]
        level[tuple(slice(a, a + n) for a, n in zip(start, block.shape, strict=True))] = block
        done.append(flags)
    for flags in (*done, progress):
        if flags is not None:  # recorded only once the chunk's data is written
            flags[index] = 1
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


def _write_markers(
    arr: da.Array,
    target: zarr.Array,
    progress: zarr.Array | None,
    below: tuple[tuple[zarr.Array, zarr.Array | None], ...] = (),
    label: bool = False,
    count: bool = False,
) -> tuple[da.Array, da.Array]:
    """``arr`` rechunked to the target's write unit (checked), and the lazy per-chunk markers
    of writing it there, and its halves into ``below`` (one uint8 per chunk: the chunks
    written; with ``count``, an 8-bit image's ``(1, 1, 257)`` int64: that number, then the
    chunk's pixels per value)."""
    unit = write_unit(target)
    if arr.chunks != da.core.normalize_chunks(unit, arr.shape):
        arr = arr.rechunk(unit)
    check_alignment(arr.chunks, target)
    grid = tuple((1,) * len(c) for c in arr.chunks)
    shape: dict[str, Any] = {"chunks": grid, "dtype": np.uint8}
    if count:  # one more axis: the chunks written, then the 256 values' pixel counts
        shape = {"count": int(np.iinfo(arr.dtype).min), "new_axis": 2, "chunks": (*grid, (257,))}
        shape["dtype"] = np.int64
    markers = da.map_blocks(
        _write_block,
        arr,
        target=target,
        progress=progress,
        below=below,
        label=label,
        meta=np.empty((0,) * (arr.ndim + int(count)), dtype=shape["dtype"]),
        **shape,
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
    """
    if counts is not None and not resume and arr.dtype.itemsize == 1 and arr.dtype.kind in "ui":
        arr, markers = _write_markers(arr, target, progress, below, label, count=True)
        result = np.asarray(runner.compute(markers, description))  # (rows, columns, 1 + 256)
        expected = _chunks_written(list(np.ndindex(*arr.numblocks)), below)
        _check_written(result[..., 0].sum(), expected, description)
        counts["per_value"] = result[..., 1:].sum(axis=(0, 1))
        return expected
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


def _levels_for(shape: tuple[int, ...], chunk: int) -> int:
    return 1 + max(0, math.ceil(math.log2(max(shape) / chunk))) if max(shape) > chunk else 1


def _near_levels(chunk: int, levels: int) -> int:
    """How many levels above level 0 its tasks write themselves (:func:`_write_block`): those
    whose chunks, ``chunk / 2^k`` px, are whole and at least :data:`NEAR_LEVEL_MIN_CHUNK`."""
    near = 0
    while (
        near + 1 < levels
        and chunk % 2 ** (near + 1) == 0
        and chunk >> (near + 1) >= NEAR_LEVEL_MIN_CHUNK
    ):
        near += 1
    return near


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


def half_size(block: np.ndarray, *, label: bool = False) -> np.ndarray:
    """The next pyramid level of a 2-D image or label block: ``floor(n / 2)`` pixels per axis,
    each the rounded mean of a 2x2 block (integers of up to 32 bits exactly; others through a
    float32 mean, rounded and clipped to an integer type), or for labels the block's top-left
    pixel, which keeps label values intact."""
    h, w = block.shape[0] // 2, block.shape[1] // 2
    if label:
        return block[: 2 * h : 2, : 2 * w : 2]
    pairs = block[: 2 * h, : 2 * w].reshape(h, 2, w, 2)
    if np.issubdtype(block.dtype, np.integer) and block.dtype.itemsize <= 4:
        return _mean_2x2_rounded(pairs)
    mean = np.mean(pairs.astype(np.float32), axis=(1, 3))
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        return np.clip(np.round(mean), info.min, info.max).astype(block.dtype)
    return mean.astype(block.dtype)


def _pyramid_block(
    source: zarr.Array,
    target: zarr.Array,
    progress: zarr.Array | None,
    index: tuple[int, int],
    label: bool,
    *after: Any,
) -> np.ndarray:
    """Write chunk ``index`` of pyramid level ``target`` from its 2x2 block of the level above,
    read from the store (``after``: the markers of the tasks that wrote that block)."""
    (ch, cw), (h, w) = write_unit(target), target.shape
    y0, x0 = index[0] * ch, index[1] * cw
    y1, x1 = min(y0 + ch, h), min(x0 + cw, w)
    block = np.asarray(source[2 * y0 : 2 * y1, 2 * x0 : 2 * x1])
    target[y0:y1, x0:x1] = half_size(block, label=label)
    if progress is not None:  # recorded only once the chunk's data is written
        progress[index] = 1
    return np.ones(1, dtype=np.uint8)


def _pyramid_writes(
    level0: zarr.Array, levels: list[tuple[zarr.Array, zarr.Array | None, bool]], label: bool
) -> tuple[da.Array, int]:
    """The markers of writing pyramid levels 1..N (``(target, flags, resume)`` each) from the
    stored level 0, one task per chunk, and how many chunks that is.

    A chunk of level k depends only on the chunks of level k-1 that hold its 2x2 block and are
    written in the same computation; with ``resume``, chunks already flagged are not written
    again (the level below reads them from the store)."""
    import uuid

    from dask.highlevelgraph import HighLevelGraph

    # Unique per call: two runs writing the same image path (two stores, one shared cluster)
    # must never share a key, or the scheduler would write one of them only.
    name = f"pyramid-{uuid.uuid4().hex}"
    graph: dict[Any, Any] = {}
    made: dict[tuple[int, int], Any] = {}  # chunk index of the level above -> its task's key
    source = level0
    for target, flags, resume in levels:
        unit = write_unit(target)
        grid = tuple(math.ceil(n / u) for n, u in zip(target.shape, unit, strict=True))
        done = np.asarray(flags[...]) > 0 if resume and flags is not None else np.zeros(grid, bool)
        here: dict[tuple[int, int], Any] = {}
        for i, j in np.ndindex(*grid):
            if done[i, j]:
                continue
            below = [(2 * i + a, 2 * j + b) for a in (0, 1) for b in (0, 1)]
            after = [made[k] for k in below if k in made]
            key = (name, len(graph))
            graph[key] = (_pyramid_block, source, target, flags, (i, j), label, *after)
            here[(i, j)] = key
        made, source = here, target
    n = len(graph)
    if not n:  # every chunk flagged already
        return da.zeros((0,), dtype=np.uint8), 0
    markers = da.Array(
        HighLevelGraph.from_collections(name, graph, dependencies=[]),
        name,
        chunks=((1,) * n,),
        dtype=np.uint8,
        meta=np.empty((0,), dtype=np.uint8),
    )
    return markers, n


def write_multiscale(
    group: zarr.Group,
    image: xr.DataArray,
    *,
    name: str,
    chunk: int,
    runner: Runner,
    label: bool,
    progress: zarr.Group | None = None,
    resume: bool = False,
    counts: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], int]:
    """Write ``image`` as levels ``0 .. N`` of ``group``; returns the group's ``ome`` metadata
    and the number of chunks written now. ``counts``: see :func:`store_array` (level 0).

    ``name`` (e.g. ``labels/particles``) names the progress bars; its last part names the
    multiscale. With ``progress`` (a group), each level's written chunks are flagged there
    (:func:`progress_array`); with ``resume`` a level already there with the same shape, chunks
    and type keeps its flagged chunks, and only the others are computed and written.

    Level 0 is written from the Dask graph by the workers. The task writing a level-0 chunk
    also writes the "near" levels above it (:func:`_near_levels`; levels 1 and 2 at 1024 px
    chunks, whose chunks are then 512 and 256 px): each the halved chunk of the level below,
    held in memory (:func:`half_size`: 2x2 mean for images, every second pixel for labels,
    which keeps label values intact; both give ``floor(n / 2)`` pixels per axis, so every layer
    has the same shape at every level). The further levels, at ``chunk`` px again, follow in
    one computation of one task per chunk, each from its 2x2 block of the level above, read
    from the store once the tasks writing that block are done, until a level fits one chunk.
    No pixels travel between workers, and a level adds no round trip.
    Each level's translation puts its pixel centres where they lie on level 0: the centre of
    the averaged block for images, the sampled pixel for labels.
    """
    data = image.data if isinstance(image.data, da.Array) else da.from_array(image.data)
    spacing, origin = pixel_grid(image)
    pixel = list(spacing or (1.0, 1.0))
    levels = _levels_for(data.shape, chunk)
    near = _near_levels(chunk, levels)
    datasets = []
    made: list[tuple[zarr.Array, bool]] = []  # each level's array and whether it was kept
    shape = tuple(int(n) for n in data.shape)
    for level in range(levels):
        if level:
            shape = (shape[0] // 2, shape[1] // 2)
        side = chunk >> level if level <= near else chunk
        chunks = (min(side, shape[0]) or 1, min(side, shape[1]) or 1)
        old = group[str(level)] if resume and str(level) in group else None
        assert old is None or isinstance(old, zarr.Array)
        same = old is not None and (old.shape, old.chunks, old.dtype) == (
            shape,
            chunks,
            data.dtype,
        )
        # Every chunk stored, empty ones too: a missing chunk file is then a loss. Zarr keeps
        # this setting with the array object only, so a level opened again is given it too.
        every = {"write_empty_chunks": True}
        target = (
            old.with_config(every)
            if same and old is not None
            else group.create_array(
                str(level),
                shape=shape,
                chunks=chunks,
                dtype=data.dtype,
                fill_value=0,
                dimension_names=("y", "x"),
                overwrite=True,
                compressors=image_codecs(),
                config=every,
            )
        )
        made.append((target, bool(same)))
        scale = [p * 2**level for p in pixel]
        if label:
            # Level k holds level-0 pixels 0, 2^k, 2^(k+1), ...: its first centre is level 0's.
            shift = list(origin)
        else:
            # Level k's pixel is the mean of a 2^k x 2^k block: its centre is that block's.
            shift = [o + (s - p) / 2 for o, s, p in zip(origin, scale, pixel, strict=True)]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": shift},
                ],
            }
        )
    # A level-0 chunk flagged written had its near levels written too, unless those were
    # made anew just now: then level 0 is written again whole.
    keep0 = all(same for _, same in made[: near + 1])
    # The near levels have no flags of their own: a level-0 chunk's flag is set only once its
    # near levels are written, and vouches for them.
    flags: list[zarr.Array | None] = []
    for k, (target, same) in enumerate(made):
        if progress is None or 0 < k <= near:
            if progress is not None and str(k) in progress:
                del progress[str(k)]  # an earlier layout's
            flags.append(None)
        else:
            flags.append(progress_array(progress, str(k), target, keep=keep0 if k == 0 else same))
    below = tuple((made[k][0], None) for k in range(1, near + 1))
    written = store_array(
        data,
        made[0][0],
        runner,
        name,
        flags[0],
        resume=keep0,
        below=below,
        label=label,
        counts=counts,
    )
    far = [(t, flags[k], same) for k, (t, same) in enumerate(made) if k > near]
    if far:
        markers, todo = _pyramid_writes(made[near][0], far, label)
        written += _run_writes([markers], [todo], runner, f"{name}[{near + 1}-{levels - 1}]")
    ome: dict[str, Any] = {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": name.split("/")[-1],
                "axes": [
                    {"name": "y", "type": "space", "unit": "nanometer"},
                    {"name": "x", "type": "space", "unit": "nanometer"},
                ],
                "datasets": datasets,
                "type": "nearest" if label else "mean",
            }
        ],
    }
    return ome, written
