"""Chunk-exact growth of labelled seeds into instances: the chunked counterpart of
:func:`mosaicflow.segmentation.targets.grow` on the whole image.

Each output chunk is grown in a *window*: the chunk plus a halo of ``max_particle_px`` on every
side (none at the image's border). Growth stays inside the foreground, so within one connected
component of the foreground the result depends on that component's pixels only
(:func:`~mosaicflow.segmentation.targets.grow` explains why the flooding order does too). The
window's result is therefore exact on the chunk whenever every foreground component reaching the
chunk lies inside the window. A task checks exactly that: a component reaching the chunk and
the window's border (where that border is not the image's) is *too large* for the halo.

* Read from a store (the pipeline's images and its seed scratch array), the task then reads a
  window twice as wide and grows again, until the components fit (or the window is the whole
  image): particles of any size come out exactly, and the halo only sets the cost of the
  common case. A window wider than ``max_window_px`` is refused with an error naming the
  place and the option (a foreground that spans the mosaic is a threshold problem, not a
  particle).
* Given in-memory Dask arrays, a window cannot be widened inside its task: a too-large
  component raises an error naming its place and ``max_particle_px``. Nothing is ever cut
  silently.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph
from dask.tokenize import tokenize
from scipy import ndimage as ndi

from mosaicflow._shared import halo as _halo
from mosaicflow.errors import MosaicflowError
from mosaicflow.segmentation.targets import grow, u8_threshold

#: Default halo: the largest particle (or touching group) extent, in pixels, grown in one read.
MAX_PARTICLE_PX = 256
#: The widest window a task may widen to (pixels per side): about 1 GiB of working memory.
MAX_WINDOW_PX = 8192


class ParticleTooLarge(MosaicflowError):
    """A foreground component reaches beyond the window its chunk was grown in."""


def _window(
    box: tuple[int, int, int, int], halo: int, shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = box
    return max(0, y0 - halo), max(0, x0 - halo), min(shape[0], y1 + halo), min(shape[1], x1 + halo)


def grow_window(
    seeds: np.ndarray,
    interior_u8: np.ndarray,
    foreground: np.ndarray,
    *,
    window: tuple[int, int, int, int],
    box: tuple[int, int, int, int],
    shape: tuple[int, int],
    connectivity: int,
    min_seed_px: int = 0,
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Grow the seeds of one window and cut out the chunk ``box`` (both in image pixels).

    Returns
    -------
    labels : ndarray of uint32
        The chunk's instances.
    too_large : (y, x) or None
        A pixel (image coordinates) of a foreground component that reaches both the chunk and a
        window border inside the image, or None when the result is exact.
    """
    wy0, wx0, wy1, wx1 = window
    y0, x0, y1, x1 = box
    fg = np.asarray(foreground, bool) | (seeds > 0)
    core = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
    structure = ndi.generate_binary_structure(2, connectivity)
    comp, n = ndi.label(fg, structure=structure)
    if n == 0:
        return np.zeros((y1 - y0, x1 - x0), np.uint32), None
    inside = np.unique(comp[core])
    inside = inside[inside > 0]
    edges = []
    if wy0 > 0:
        edges.append(comp[0, :])
    if wy1 < shape[0]:
        edges.append(comp[-1, :])
    if wx0 > 0:
        edges.append(comp[:, 0])
    if wx1 < shape[1]:
        edges.append(comp[:, -1])
    if edges:
        spill = np.intersect1d(inside, np.concatenate(edges))
        if len(spill):
            ys, xs = np.nonzero(comp[core] == spill[0])
            return np.zeros((y1 - y0, x1 - x0), np.uint32), (int(ys[0] + y0), int(xs[0] + x0))
    mask = np.isin(comp, inside)
    out = grow(
        np.where(mask, seeds, 0).astype(np.uint32),
        interior_u8,
        mask,
        connectivity,
        origin=(wy0, wx0),
        width=shape[1],
        min_seed_px=min_seed_px,
    )
    return np.ascontiguousarray(out[core]), None


def _grow_stored(
    seeds: Any,
    interior: Any,
    foreground: Any,
    box: tuple[int, int, int, int],
    shape: tuple[int, int],
    settings: dict[str, Any],
) -> np.ndarray:
    """One chunk grown from stored arrays, widening its window until the result is exact."""
    halo = int(settings["halo"])
    while True:
        win = _window(box, halo, shape)
        sl = (slice(win[0], win[2]), slice(win[1], win[3]))
        out, too_large = grow_window(
            np.asarray(seeds[sl]),
            np.asarray(interior[sl]),
            np.asarray(foreground[sl]) >= settings["cut"],
            window=win,
            box=box,
            shape=shape,
            connectivity=settings["connectivity"],
            min_seed_px=settings["min_seed_px"],
        )
        if too_large is None:
            return out
        halo = 2 * halo + max(box[2] - box[0], box[3] - box[1])
        side = max(
            min(shape[0], box[2] - box[0] + 2 * halo), min(shape[1], box[3] - box[1] + 2 * halo)
        )
        if side > settings["max_window"]:
            raise ParticleTooLarge(
                f"the foreground component at pixel (y={too_large[0]}, x={too_large[1]}) "
                f"reaches beyond a {settings['max_window']} px window: the foreground spans "
                "too much of the image to be one particle (check the segmentation threshold), "
                "or raise max_window_px"
            )


def _grow_static(
    block: np.ndarray,
    box: tuple[int, int, int, int],
    window: tuple[int, int, int, int],
    shape: tuple[int, int],
    settings: dict[str, Any],
) -> np.ndarray:
    seeds = (block >> np.uint64(9)).astype(np.uint32)
    interior = ((block >> np.uint64(1)) & np.uint64(255)).astype(np.uint8)
    fg = (block & np.uint64(1)).astype(bool)
    out, too_large = grow_window(
        seeds,
        interior,
        fg,
        window=window,
        box=box,
        shape=shape,
        connectivity=settings["connectivity"],
        min_seed_px=settings["min_seed_px"],
    )
    if too_large is not None:
        raise ParticleTooLarge(
            f"the particle or touching group at pixel (y={too_large[0]}, x={too_large[1]}) "
            f"extends more than max_particle_px={settings['halo']} beyond its chunk; pass a "
            "larger max_particle_px, larger chunks, or run it through the pipeline, which widens "
            "the window as needed"
        )
    return out


def grow_chunked(
    seeds: da.Array,
    interior_u8: da.Array,
    foreground_u8: da.Array,
    *,
    foreground_threshold: float,
    connectivity: int = 2,
    max_particle_px: int = MAX_PARTICLE_PX,
    max_window_px: int = MAX_WINDOW_PX,
    min_seed_px: int = 0,
) -> da.Array:
    """Seeds grown into instances, chunk by chunk, equal to the whole image's
    :func:`~mosaicflow.segmentation.targets.grow`.

    Parameters
    ----------
    seeds : dask.array.Array of uint32
        Seeds labelled across chunks (ids independent of the chunking).
    interior_u8, foreground_u8 : dask.array.Array of uint8
        The stored-scale interior and foreground probabilities, same shape and chunks.
    foreground_threshold : float
        Foreground is ``foreground_u8 >= round(255 * threshold)`` (or a seed).
    connectivity : {1, 2}
    max_particle_px : int
        The halo read around each chunk (see the module's notes for larger particles).
    max_window_px : int
        The widest window a stored input may be widened to.
    min_seed_px : int
        Seeds smaller than this are dropped (exact: a seed lies inside one foreground
        component, which lies inside the window).

    Returns
    -------
    dask.array.Array of uint32
        Lazy, the chunks of ``seeds``.
    """
    shape = (int(seeds.shape[0]), int(seeds.shape[1]))
    settings = {
        "halo": int(max_particle_px),
        "cut": u8_threshold(foreground_threshold),
        "connectivity": int(connectivity),
        "max_window": int(max_window_px),
        "min_seed_px": int(min_seed_px),
    }
    sources = [_halo.store_source(a) for a in (seeds, interior_u8, foreground_u8)]
    token = tokenize(seeds.name, interior_u8.name, foreground_u8.name, settings)
    name = f"grow-{token}"
    ys = np.cumsum((0, *seeds.chunks[0]))
    xs = np.cumsum((0, *seeds.chunks[1]))
    dsk: dict[Any, Any] = {}
    deps: list[Any] = [seeds, interior_u8, foreground_u8]
    if all(s is not None for s in sources):
        for i in range(len(ys) - 1):
            for j in range(len(xs) - 1):
                box = (int(ys[i]), int(xs[j]), int(ys[i + 1]), int(xs[j + 1]))
                dsk[(name, i, j)] = (_grow_stored, *sources, box, shape, settings)
    else:
        packed = (
            (seeds.astype(np.uint64) << np.uint64(9))
            | (interior_u8.astype(np.uint64) << np.uint64(1))
            | (foreground_u8 >= settings["cut"]).astype(np.uint64)
        )
        deps = [packed]
        for i in range(len(ys) - 1):
            for j in range(len(xs) - 1):
                box = (int(ys[i]), int(xs[j]), int(ys[i + 1]), int(xs[j + 1]))
                win = _window(box, settings["halo"], shape)
                piece = packed[win[0] : win[2], win[1] : win[3]].rechunk(-1)
                deps.append(piece)
                dsk[(name, i, j)] = (_grow_static, (piece.name, 0, 0), box, win, shape, settings)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    return da.Array(graph, name, seeds.chunks, dtype=np.uint32, meta=np.empty((0, 0), np.uint32))
