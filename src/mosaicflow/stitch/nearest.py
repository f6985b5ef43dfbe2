"""The nearest-centre rule: which tile the fused mosaic takes each pixel from, where the
``"nearest"`` blend (:mod:`mosaicflow.stitch.fuse`) and the report's truth frame
(:class:`mosaicflow.report.frames.TileFrame`) need it, and the rectangles where tiles overlap,
which the linear blend also uses.

A pixel one tile covers is that tile's. Where tiles overlap, the region is cut along every
tile edge into rectangles each covered by one fixed set of tiles (:func:`overlap_cells`), and
only there are the tiles' centre distances compared, tile by tile in table order (the first of
equally near tiles keeps the pixel).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np


def _centre_distance(ly: np.ndarray, lx: np.ndarray, h: int, w: int) -> np.ndarray:
    """Chebyshev distance of tile pixels ``(ly, lx)`` (tile coordinates) to the tile's centre
    in units of half-sizes: < 1 inside the tile. The nearest-centre rule's measure."""
    return np.maximum(np.abs(ly - (h - 1) / 2) / (h / 2), np.abs(lx - (w - 1) / 2) / (w / 2))


def nearest_cells(
    region: tuple[int, int, int, int], origins: np.ndarray, tile_shape: tuple[int, int]
) -> tuple[list[tuple[int, int, int, int]], list[int], list[tuple[Any, ...]]]:
    """The nearest-centre rule over ``region`` without a map of the whole region: the boxes
    (``y0, y1, x0, x1`` in the region) of the tiles touching it and their indices into
    ``origins``, and for each rectangle two or more of them cover (:func:`overlap_cells`)
    ``(rectangle, tiles, taken)``: the indices of the tiles covering it and the tile the rule
    takes at each of its pixels (index + 1; the first of equally near tiles, in table order).
    A pixel of a box outside every such rectangle is that box's tile's."""
    y0, y1, x0, x1 = region
    h, w = tile_shape
    boxes, index = [], []
    for k, (ty, tx) in enumerate(origins):
        sy0, sy1 = max(y0, int(ty)), min(y1, int(ty) + h)
        sx0, sx1 = max(x0, int(tx)), min(x1, int(tx) + w)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        boxes.append((sy0 - y0, sy1 - y0, sx0 - x0, sx1 - x0))
        index.append(k)
    cells = []
    for (a, b, c, d), members in overlap_cells(boxes):
        best = np.full((b - a, d - c), np.inf)
        cell = np.zeros((b - a, d - c), dtype=np.int32)
        for m in members:  # table order: the first of equally near tiles keeps the pixel
            k = index[m]
            ty, tx = int(origins[k][0]), int(origins[k][1])
            ly = np.arange(a + y0 - ty, b + y0 - ty, dtype=np.float64)[:, None]
            lx = np.arange(c + x0 - tx, d + x0 - tx, dtype=np.float64)[None, :]
            dist = _centre_distance(ly, lx, h, w)
            take = dist < best
            np.copyto(best, dist, where=take)
            cell[take] = k + 1
        cells.append(((a, b, c, d), [index[m] for m in members], cell))
    return boxes, index, cells


def nearest_tile(
    region: tuple[int, int, int, int], origins: np.ndarray, tile_shape: tuple[int, int]
) -> np.ndarray:
    """Which tile the nearest-centre rule takes each pixel of ``region`` from: index + 1 into
    ``origins``, 0 where no tile covers it (the first tile wins ties). A pixel one tile covers
    is that tile's; the distances are compared only where tiles overlap (rectangles,
    :func:`overlap_cells`), tile by tile in table order (:func:`nearest_cells`). The
    ``"nearest"`` blend (:func:`_combine`) and the report's truth frame
    (:class:`mosaicflow.report.frames.TileFrame`) both use it."""
    y0, y1, x0, x1 = region
    out = np.zeros((y1 - y0, x1 - x0), dtype=np.int32)
    boxes, index, cells = nearest_cells(region, origins, tile_shape)
    for (a, b, c, d), k in zip(boxes, index, strict=True):
        out[a:b, c:d] = k + 1
    for (a, b, c, d), _, cell in cells:
        out[a:b, c:d] = cell
    return out


def overlap_cells(
    boxes: list[tuple[int, int, int, int]],
) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """The rectangles that two or more of ``boxes`` (``(y0, y1, x0, x1)``) cover together,
    each with the indices of the boxes covering it: the region cut along every box edge."""
    ys = sorted({v for b in boxes for v in b[:2]})
    xs = sorted({v for b in boxes for v in b[2:]})
    cells = []
    for a, b in pairwise(ys):
        rows = [k for k, box in enumerate(boxes) if box[0] <= a and b <= box[1]]
        if len(rows) < 2:
            continue
        for c, d in pairwise(xs):
            members = [k for k in rows if boxes[k][2] <= c and d <= boxes[k][3]]
            if len(members) > 1:
                cells.append(((a, b, c, d), members))
    return cells
