"""The one blockwise driver every halo stage uses (denoisers, the particle table): an exact
halo of real neighbouring pixels.

Inside the mosaic each chunk is extended by ``depth`` pixels of its neighbours; at the mosaic's
own border no halo is added, so the whole-image function's edge mode (``reflect``) acts there
exactly as on the whole image. Where the reach exceeds the image along an axis, that axis is
processed as one chunk (the halo could not be formed otherwise).

An input read plainly from a store (a Zarr array through ``dask.array.from_zarr``, as the
pipeline's stages read their inputs) gets one task per chunk, which reads its chunk and halo
in one read (:func:`store_source`). Any other input goes through a graph of two tasks per
chunk: ``edges`` cuts from each input chunk the strips and corners
its eight neighbours need (one small bundle), and ``apply`` assembles its chunk with the
neighbours' bundles and runs the kernel. ``dask.array.map_overlap`` would make about a dozen
tasks per chunk (one slice task per neighbour, a concatenation, a trim), and on a distributed
cluster that per-task cost, not the filter, bounded the throughput of the fast filters. Where a
chunk is thinner than the halo, neighbours beyond the adjacent ones would be needed, and the
driver hands over to ``map_overlap``, which merges chunks.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.tokenize import tokenize

from mosaicflow import dispatch
from mosaicflow.errors import ConfigError

#: Largest halo (pixels per side) a denoiser may ask for. Each task holds a
#: ``(chunk + 2 * halo)^2`` block, so an unbounded reach would let a parameter typo exhaust
#: worker memory; callers may raise it explicitly with ``max_halo=``.
MAX_HALO_PX = 256


def blockwise_exact(
    data: da.Array | Overlapped,
    kernel: Callable[..., Any],
    depth: tuple[int, int],
    *,
    what: str,
    max_halo: int = MAX_HALO_PX,
    **kwargs: Any,
) -> da.Array:
    """Apply ``kernel(block, **kwargs)`` with a ``depth`` halo; float32 output, chunk type kept."""
    if max(depth) > max_halo:
        raise ConfigError(
            f"{what}: the parameters need a halo of {max(depth)} px per side, more than the "
            f"allowed {max_halo} px (each task would hold a (chunk + 2 x halo)^2 block); "
            f"use smaller parameters or pass max_halo={max(depth)} explicitly"
        )
    if isinstance(data, Overlapped):
        if all(
            d <= have and d < n for d, have, n in zip(depth, data.depth, data.shape, strict=True)
        ):
            return data.apply(kernel, depth, kwargs)
        data = data.core()  # its halo is too narrow for this kernel: the usual ways below
    depths = {}
    for axis, d in enumerate(depth):
        if d >= data.shape[axis]:
            # The reach spans the whole axis: one chunk along it, no halo needed.
            data = data.rechunk({axis: -1})
            d = 0
        depths[axis] = d
    meta = dispatch.array_module(data).empty((0, 0), dtype=np.float32)
    if not any(depths.values()):
        return da.map_blocks(kernel, data, dtype=np.float32, meta=meta, **kwargs)
    if all(min(data.chunks[axis]) >= depths[axis] for axis in (0, 1)):
        source = store_source(data)
        if source is not None:
            return _stored_halo(data, source, kernel, (depths[0], depths[1]), meta, kwargs)
        return _two_task_halo(data, kernel, (depths[0], depths[1]), meta, kwargs)
    return da.map_overlap(
        kernel, data, depth=depths, boundary="none", dtype=np.float32, meta=meta, **kwargs
    )


@dataclass(frozen=True)
class Overlapped:
    """A 2-D image held as overlapping blocks: block ``(i, j)`` of ``blocks`` is chunk
    ``(i, j)`` of ``chunks`` extended by ``depth`` pixels on each side where the image goes on
    (clipped at its border, as ``dask.array.overlap`` with ``boundary="none"`` lays them out).
    A producer that makes each chunk with its halo in one task (the fusion of the tiles) hands
    it this way to :func:`blockwise_exact`, whose kernel then needs no store read and no edge
    tasks; :meth:`core` gives the image itself."""

    blocks: da.Array
    chunks: tuple[tuple[int, ...], tuple[int, ...]]
    depth: tuple[int, int]
    ndim = 2

    @staticmethod
    def extended(
        chunks: tuple[tuple[int, ...], tuple[int, ...]], depth: tuple[int, int]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The blocks' sizes for ``chunks`` extended by ``depth`` (clipped at the border)."""
        out = []
        for sizes, d in zip(chunks, depth, strict=True):
            starts = np.cumsum((0, *sizes))
            n = int(starts[-1])
            out.append(
                tuple(int(min(n, b + d) - max(0, a - d)) for a, b in pairwise(starts.tolist()))
            )
        return out[0], out[1]

    @property
    def shape(self) -> tuple[int, int]:
        return sum(self.chunks[0]), sum(self.chunks[1])

    @property
    def dtype(self) -> np.dtype:
        return self.blocks.dtype

    def core(self) -> da.Array:
        """The image: each block cut back to its chunk (fused into the tasks that follow)."""
        return self._map(None, (0, 0), {}, self.blocks.dtype)

    def apply(self, kernel: Callable[..., Any], depth: tuple[int, int], kwargs: dict) -> da.Array:
        """``kernel`` on each chunk with a ``depth`` halo (at most :attr:`depth`) cut from its
        block, the result cut back to the chunk: what the other ways of
        :func:`blockwise_exact` give, bit for bit. float32."""
        return self._map(kernel, depth, kwargs, np.dtype(np.float32))

    def _map(
        self, kernel: Callable[..., Any] | None, depth: tuple[int, int], kwargs: dict, dtype: Any
    ) -> da.Array:
        meta = dispatch.array_module(self.blocks).empty((0, 0), dtype=dtype)
        return da.map_blocks(
            _overlapped_block,
            self.blocks,
            kernel=kernel,
            kernel_kwargs=kwargs,
            grid=self.chunks,
            chunks=self.chunks,
            have=self.depth,
            need=depth,
            dtype=dtype,
            meta=meta,
        )


def _overlapped_block(
    block: Any,
    kernel: Callable[..., Any] | None,
    kernel_kwargs: dict[str, Any],
    grid: tuple[tuple[int, ...], tuple[int, ...]],
    have: tuple[int, int],
    need: tuple[int, int],
    block_info: Any = None,
) -> Any:
    """Chunk ``(i, j)`` of the chunks ``grid`` (from ``block_info``) from its block, which
    reaches ``have`` px beyond it: with ``kernel``, the kernel on the chunk and a ``need`` px
    halo, cut to the chunk."""
    box = []
    for axis in (0, 1):
        k = block_info[0]["chunk-location"][axis]
        start = sum(grid[axis][:k])
        stop = start + grid[axis][k]
        first = max(0, start - have[axis])  # the block's first pixel, in the image
        box.append((max(0, start - need[axis]) - first, start - first, stop - first))
    (ya, y0, y1), (xa, x0, x1) = box
    if kernel is None:
        return block[y0:y1, x0:x1]
    extended = block[ya : min(y1 + need[0], block.shape[0]), xa : min(x1 + need[1], block.shape[1])]
    return _apply_box(kernel, kernel_kwargs, extended, y0 - ya, x0 - xa, y1 - y0, x1 - x0)


_OFFSETS = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0))


def _axis_piece(offset: int, depth: int) -> slice:
    # The part of a chunk lying ``offset`` chunks from a requester that the requester needs
    # along one axis: a chunk above it (offset -1) gives its last rows, one below its first.
    if offset == -1:
        return slice(-depth, None) if depth else slice(0, 0)
    if offset == 1:
        return slice(0, depth)
    return slice(None)


def edge_bundle(block: Any, dy: int, dx: int) -> dict[tuple[int, int], Any]:
    """The strips and corners of ``block`` that each neighbour needs, keyed by where ``block``
    lies relative to that neighbour."""
    return {(a, b): block[_axis_piece(a, dy), _axis_piece(b, dx)].copy() for (a, b) in _OFFSETS}


def assemble(block: Any, neighbours: list[list[Any]], dy: int, dx: int) -> tuple[Any, int, int]:
    """``block`` joined with its neighbours' pieces (None beyond the mosaic), and where the
    block starts inside the result (rows, columns)."""
    xp = dispatch.array_module(block)
    rows = []
    for a in (-1, 0, 1):
        row = [block if (a, b) == (0, 0) else neighbours[a + 1][b + 1] for b in (-1, 0, 1)]
        row = [p for p in row if p is not None]
        rows.append(xp.concatenate(row, axis=1) if len(row) > 1 else (row[0] if row else None))
    present = [r for a, r in zip((-1, 0, 1), rows, strict=True) if a == 0 or r is not None]
    extended = xp.concatenate(present, axis=0) if len(present) > 1 else present[0]
    top = dy if neighbours[0][1] is not None else 0
    left = dx if neighbours[1][0] is not None else 0
    return extended, top, left


def neighbour_pieces(edges_name: str, i: int, j: int, ny: int, nx: int) -> list[list[Any]]:
    """Graph references to the pieces chunk ``(i, j)`` needs from its eight neighbours' edge
    bundles (None where the mosaic ends)."""
    neighbours: list[list[Any]] = []
    for a in (-1, 0, 1):
        row: list[Any] = []
        for b in (-1, 0, 1):
            ni, nj = i + a, j + b
            if (a, b) == (0, 0) or not (0 <= ni < ny and 0 <= nj < nx):
                row.append(None)
            else:
                # The neighbour lies at (a, b) from this chunk: take that piece of it.
                row.append((operator.getitem, (edges_name, ni, nj), (a, b)))
        neighbours.append(row)
    return neighbours


def _apply(
    kernel: Callable[..., Any],
    kwargs: dict[str, Any],
    dy: int,
    dx: int,
    block: Any,
    neighbours: list[list[Any]],
) -> Any:
    """Assemble ``block`` with its neighbours' pieces, run ``kernel`` and cut the result back
    to the block."""
    extended, top, left = assemble(block, neighbours, dy, dx)
    return _apply_box(kernel, kwargs, extended, top, left, block.shape[0], block.shape[1])


def _two_task_halo(
    data: da.Array,
    kernel: Callable[..., Any],
    depth: tuple[int, int],
    meta: Any,
    kwargs: dict[str, Any],
) -> da.Array:
    dy, dx = depth
    token = tokenize(data, kernel, depth, kwargs)
    edges_name = f"halo-edges-{token}"
    name = f"{getattr(kernel, '__name__', 'kernel').strip('_')}-{token}"
    ny, nx = data.numblocks
    dsk: dict[Any, Any] = {}
    for i in range(ny):
        for j in range(nx):
            dsk[(edges_name, i, j)] = (edge_bundle, (data.name, i, j), dy, dx)
    for i in range(ny):
        for j in range(nx):
            neighbours = neighbour_pieces(edges_name, i, j, ny, nx)
            # A missing side neighbour means the mosaic border: no halo there.
            dsk[(name, i, j)] = (_apply, kernel, kwargs, dy, dx, (data.name, i, j), neighbours)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[data])  # type: ignore[list-item]
    return da.Array(graph, name, data.chunks, meta=meta)


def _apply_box(
    kernel: Callable[..., Any],
    kwargs: dict[str, Any],
    extended: Any,
    top: int,
    left: int,
    height: int,
    width: int,
) -> Any:
    """Run ``kernel`` on a chunk read with its halo and cut the result back to the chunk."""
    out = kernel(extended, **kwargs)
    return out[top : top + height, left : left + width]


def _stored_halo(
    data: da.Array,
    source: str,
    kernel: Callable[..., Any],
    depth: tuple[int, int],
    meta: Any,
    kwargs: dict[str, Any],
) -> da.Array:
    """One task per chunk of a stored image: it reads its chunk and halo (clipped at the
    image's border, as :func:`assemble` leaves out the neighbours beyond it) in one read and
    runs the kernel. Nothing waits in worker memory for the neighbours: with edge tasks, each
    chunk of a wide mosaic stayed there until the row below it was read. The tasks are
    blockwise (the stored array is their one dependency), so a writer that follows fuses into
    them instead of running as tasks of its own."""
    token = tokenize(data, kernel, depth, kwargs, "stored")
    name = f"{getattr(kernel, '__name__', 'kernel').strip('_')}-{token}"
    layers = data.__dask_graph__().layers
    stored = Delayed(source, HighLevelGraph({source: layers[source]}, {source: set()}))
    return da.map_blocks(
        _stored_block,
        stored=stored,
        kernel=kernel,
        kernel_kwargs=kwargs,
        depth=depth,
        shape=data.shape,
        chunks=data.chunks,
        dtype=meta.dtype,
        meta=meta,
        name=name,
    )


def _stored_block(
    stored: Any,
    kernel: Callable[..., Any],
    kernel_kwargs: dict[str, Any],
    depth: tuple[int, int],
    shape: tuple[int, int],
    block_info: Any = None,
) -> Any:
    """Read one chunk and its halo from the stored array and run the kernel on it."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    ey0, ex0 = max(0, y0 - depth[0]), max(0, x0 - depth[1])
    ey1, ex1 = min(shape[0], y1 + depth[0]), min(shape[1], x1 + depth[1])
    extended = da.core.getter(stored, (slice(ey0, ey1), slice(ex0, ex1)))
    return _apply_box(kernel, kernel_kwargs, extended, y0 - ey0, x0 - ex0, y1 - y0, x1 - x0)


def store_source(array: Any) -> str | None:
    """The graph key of the stored array (a Zarr array, through ``dask.array.from_zarr``) a Dask
    array reads its blocks from, when every block is a plain ``getter`` of that one source;
    else None. A task can then read any box of it, a chunk and its halo in one read
    (:func:`read_box_task`), instead of gathering the halo from its neighbours' tasks."""
    import dask.array as da

    graph = array.__dask_graph__()
    first = (array.name,) + (0,) * array.ndim
    task = graph.get(first) if len(graph) == array.npartitions + 1 else None
    deps = getattr(task, "dependencies", ())
    if getattr(task, "func", None) is not da.core.getter or len(deps) != 1 or task.kwargs:
        return None
    return str(next(iter(deps)))


def read_box_task(source: str, box: tuple[int, int, int, int]) -> tuple[Any, ...]:
    """A graph task reading ``box`` (y0, x0, y1, x1) of the stored array at key ``source``."""
    import dask.array as da

    y0, x0, y1, x1 = box
    return (da.core.getter, source, (slice(y0, y1), slice(x0, x1)))
