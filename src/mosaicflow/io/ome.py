"""OME-Zarr multiscale images: level 0 written chunk by chunk by the workers, each further level
computed from the stored level above, and the NGFF ``multiscales`` metadata for them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from mosaicflow._shared.arrays import pixel_grid
from mosaicflow.io.chunk_io import read_region, set_flag, write_region
from mosaicflow.io.chunk_writes import (
    ChunkSummaries,
    ChunkWrite,
    _run_writes,
    half_size,
    progress_array,
    store_array,
    store_together,
    write_unit,
)
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
    block = read_region(source, (slice(2 * y0, 2 * y1), slice(2 * x0, 2 * x1)))
    write_region(target, (slice(y0, y1), slice(x0, x1)), half_size(block, label=label))
    if progress is not None:  # recorded only once the chunk's data is written
        set_flag(progress, index)
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
    summaries: ChunkSummaries | None = None,
) -> tuple[dict[str, Any], int]:
    """Write ``image`` as levels ``0 .. N`` of ``group``; returns the group's ``ome`` metadata
    and the number of chunks written now. ``counts``, ``summaries``: see :func:`store_array`
    (level 0).

    ``name`` (e.g. ``labels/particles``) names the progress bars; its last part names the
    multiscale. With ``progress`` (a group), each level's written chunks are flagged there
    (:func:`progress_array`); with ``resume`` a level already there with the same shape, chunks
    and type keeps its flagged chunks, and only the others are computed and written.

    Level 0 is written from the Dask graph by the workers. The task writing a level-0 chunk
    also writes the "near" levels above it (:func:`_near_levels`; levels 1 to 3 at 2048 px
    chunks, whose chunks are then 1024, 512 and 256 px): each the halved chunk of the level below,
    held in memory (:func:`half_size`: 2x2 mean for images, every second pixel for labels,
    which keeps label values intact; both give ``floor(n / 2)`` pixels per axis, so every layer
    has the same shape at every level). The further levels, at ``chunk`` px again, follow in
    one computation of one task per chunk, each from its 2x2 block of the level above, read
    from the store once the tasks writing that block are done, until a level fits one chunk.
    No pixels travel between workers, and a level adds no round trip.
    Each level's translation puts its pixel centres where they lie on level 0: the centre of
    the averaged block for images, the sampled pixel for labels.
    """
    plan = _plan_levels(group, image, chunk=chunk, label=label, progress=progress, resume=resume)
    written = store_array(
        plan.data,
        plan.made[0][0],
        runner,
        name,
        plan.flags[0],
        resume=plan.keep0,
        below=plan.below,
        label=label,
        counts=counts,
        summaries=summaries,
    )
    written += _write_far_levels(plan, runner, name, label)
    return _multiscale_metadata(plan, name, label), written


def write_multiscales(
    images: Sequence[tuple[zarr.Group, xr.DataArray, str, zarr.Group | None]],
    *,
    chunk: int,
    runner: Runner,
    counts: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[dict[str, Any], int]]:
    """Write several images whose Dask graphs share work, each as :func:`write_multiscale`
    writes an image afresh (not resumed, not labels), with the level 0 of all of them in one
    computation (:func:`~mosaicflow.io.chunk_writes.store_together`), so the shared part runs
    once. ``images``: ``(group, image, name, progress)`` each; ``counts``: per name, the dict
    :func:`write_multiscale` would take. Returns each image's metadata and chunks written."""
    counts = counts or {}
    plans = [
        _plan_levels(group, image, chunk=chunk, label=False, progress=progress, resume=False)
        for group, image, _, progress in images
    ]
    written = store_together(
        [
            ChunkWrite(plan.data, plan.made[0][0], plan.flags[0], plan.below, False, counts.get(n))
            for plan, (_, _, n, _) in zip(plans, images, strict=True)
        ],
        runner,
        " + ".join(n for _, _, n, _ in images),
    )
    out = []
    for plan, (_, _, name, _), n in zip(plans, images, written, strict=True):
        n += _write_far_levels(plan, runner, name, False)
        out.append((_multiscale_metadata(plan, name, False), n))
    return out


@dataclass
class _Levels:
    """One image's pyramid made ready for writing (:func:`_plan_levels`): its level-0 data,
    each level's array and whether an earlier one was kept, the flags, the near levels written
    with level 0, whether level 0's flagged chunks are kept, and the NGFF datasets."""

    data: da.Array
    made: list[tuple[zarr.Array, bool]]
    flags: list[zarr.Array | None]
    near: int
    keep0: bool
    datasets: list[dict[str, Any]]

    @property
    def below(self) -> tuple[tuple[zarr.Array, zarr.Array | None], ...]:
        return tuple((self.made[k][0], None) for k in range(1, self.near + 1))


def _plan_levels(
    group: zarr.Group,
    image: xr.DataArray,
    *,
    chunk: int,
    label: bool,
    progress: zarr.Group | None,
    resume: bool,
) -> _Levels:
    """Create (or, resuming, keep) every level's array and flags of ``image`` in ``group``."""
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
    return _Levels(data, made, flags, near, keep0, datasets)


def _write_far_levels(plan: _Levels, runner: Runner, name: str, label: bool) -> int:
    """Write the levels below the near ones, each chunk from its 2x2 block of the level above
    (one computation); returns the chunks written."""
    far = [(t, plan.flags[k], same) for k, (t, same) in enumerate(plan.made) if k > plan.near]
    if not far:
        return 0
    markers, todo = _pyramid_writes(plan.made[plan.near][0], far, label)
    return _run_writes([markers], [todo], runner, f"{name}[{plan.near + 1}-{len(plan.made) - 1}]")


def _multiscale_metadata(plan: _Levels, name: str, label: bool) -> dict[str, Any]:
    """The group's NGFF ``ome`` metadata."""
    ome: dict[str, Any] = {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": name.split("/")[-1],
                "axes": [
                    {"name": "y", "type": "space", "unit": "nanometer"},
                    {"name": "x", "type": "space", "unit": "nanometer"},
                ],
                "datasets": plan.datasets,
                "type": "nearest" if label else "mean",
            }
        ],
    }
    return ome
