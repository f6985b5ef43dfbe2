"""The Dask graph of windowed inference: a layer of window tasks (where the model runs, and where
Dask resources route work to GPU workers) and a layer of blend tasks (one per output chunk).

The tasks themselves are in :mod:`mosaicflow.segmentation._tasks`; :func:`build_graph` only
wires them, so building a graph computes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from mosaicflow.segmentation._tasks import (
    _BatchPlan,
    _blend_chunk,
    _BlendPlan,
    _Boxed,
    _Options,
    _run_window_batch,
)
from mosaicflow.segmentation.windows import WindowGrid, window_grid

if TYPE_CHECKING:
    from mosaicflow.segmentation._model import _Model


@dataclass(frozen=True, eq=False)
class _Settings:
    """The validated settings of one :func:`predict` call, defaults taken from the model."""

    model: _Model
    options: _Options
    overlap: float
    batch_size: int
    pad_small: bool
    resources: dict[str, float] | None


def _blocks_between(bounds: np.ndarray, lo: int, hi: int) -> range:
    """Indices of the chunks (edges ``bounds``) that overlap the pixels ``lo:hi``."""
    first = int(np.searchsorted(bounds, lo, side="right")) - 1
    last = int(np.searchsorted(bounds, hi, side="left")) - 1
    return range(max(first, 0), min(last, len(bounds) - 2) + 1)


def _window_tasks(
    data: da.Array, grid: WindowGrid, settings: _Settings, wname: str
) -> dict[Any, Any]:
    """One task per ``batch_size`` windows of a grid row, keyed ``(wname, row, batch)``."""
    opts = settings.options
    w = opts.window
    dsk: dict[Any, Any] = {}
    model_arg: str | None = None
    if settings.model.module is not None:
        model_arg = f"predict-model-{settings.model.source.token}"
        dsk[model_arg] = _Boxed(settings.model.module)

    ybounds = np.cumsum((0, *data.chunks[0]))
    xbounds = np.cumsum((0, *data.chunks[1]))
    height, width = data.shape
    pad_y, pad_x = grid.pad
    nx = len(grid.starts_x)
    bs = settings.batch_size
    for r, wy in enumerate(grid.starts_y.tolist()):
        top, bottom = max(wy - pad_y, 0), min(wy - pad_y + w, height)
        rows = _blocks_between(ybounds, top, bottom)
        for b in range(-(-nx // bs)):
            starts = grid.starts_x[b * bs : (b + 1) * bs].tolist()
            left, right = max(starts[0] - pad_x, 0), min(starts[-1] - pad_x + w, width)
            cols = _blocks_between(xbounds, left, right)
            specs = tuple(
                (
                    (i, j),
                    int(ybounds[i]),
                    int(ybounds[i + 1]),
                    int(xbounds[j]),
                    int(xbounds[j + 1]),
                )
                for i in rows
                for j in cols
            )
            plan = _BatchPlan(
                settings.model.source,
                opts,
                grid.pad,
                tuple((wy, wx) for wx in starts),
                (top, bottom, left, right),
                specs,
            )
            keys = [(data.name, i, j) for i in rows for j in cols]
            dsk[(wname, r, b)] = (_run_window_batch, model_arg, plan, keys)
    return dsk


def _blend_tasks(
    data: da.Array, grid: WindowGrid, settings: _Settings, name: str, wname: str
) -> dict[Any, Any]:
    """One task per chunk of ``data``: the blend of the window outputs that touch it."""
    opts = settings.options
    w = opts.window
    bs = settings.batch_size
    ybounds = np.cumsum((0, *data.chunks[0]))
    xbounds = np.cumsum((0, *data.chunks[1]))
    pad_y, pad_x = grid.pad
    squeeze = opts.classes == 1
    dsk: dict[Any, Any] = {}
    for i in range(len(ybounds) - 1):
        y0, y1 = int(ybounds[i]) + pad_y, int(ybounds[i + 1]) + pad_y
        r_lo = int(np.searchsorted(grid.starts_y, y0 - w, side="right"))
        r_hi = int(np.searchsorted(grid.starts_y, y1, side="left"))
        for j in range(len(xbounds) - 1):
            x0, x1 = int(xbounds[j]) + pad_x, int(xbounds[j + 1]) + pad_x
            c_lo = int(np.searchsorted(grid.starts_x, x0 - w, side="right"))
            c_hi = int(np.searchsorted(grid.starts_x, x1, side="left"))
            deps: dict[tuple[str, int, int], int] = {}
            windows = []
            if y1 > y0 and x1 > x0:
                for r in range(r_lo, r_hi):
                    for c in range(c_lo, c_hi):
                        key = (wname, r, c // bs)
                        arg = deps.setdefault(key, len(deps))
                        windows.append((arg, c % bs, int(grid.starts_y[r]), int(grid.starts_x[c])))
            plan = _BlendPlan(opts, (y0, y1, x0, x1), tuple(windows), squeeze)
            out_key = (name, i, j) if squeeze else (name, 0, i, j)
            dsk[out_key] = (_blend_chunk, plan, list(deps))
    return dsk


def build_graph(data: da.Array, settings: _Settings) -> da.Array:
    """The lazy probability array of ``data`` under ``settings`` (float32, ``data``'s chunks)."""
    opts = settings.options
    grid = window_grid(data.shape, opts.window, settings.overlap)
    token = tokenize(
        data.name, grid.pad, settings.overlap, settings.batch_size, opts, settings.model.source
    )
    name = f"predict-{token}"
    wname = f"predict-windows-{token}"
    window_dsk = _window_tasks(data, grid, settings, wname)
    blend_dsk = _blend_tasks(data, grid, settings, name, wname)
    # Two layers: the window tasks (where the model runs, so the ones Dask resources route to
    # GPU workers) and the blend tasks (cheap, anywhere).
    wgraph = HighLevelGraph.from_collections(wname, window_dsk, dependencies=[data])  # type: ignore[list-item]
    if settings.resources:
        wgraph.layers[wname].annotations = {"resources": settings.resources}
    layers = {**wgraph.layers, name: MaterializedLayer(blend_dsk)}
    graph = HighLevelGraph(layers, {**wgraph.dependencies, name: {wname}})
    squeeze = opts.classes == 1
    chunks = data.chunks if squeeze else ((opts.classes,), *data.chunks)
    meta = np.empty((0,) * len(chunks), dtype=np.float32)
    return da.Array(graph, name, chunks=chunks, dtype=np.float32, meta=meta)
