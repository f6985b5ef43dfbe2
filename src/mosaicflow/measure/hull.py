"""Convex hulls of many particles at once, and from them the convex area and the Feret
diameters of each (the measurement kernel's hull geometry), in exact integer arithmetic.

scikit-image's ``convex_hull_image`` takes the hull of every pixel's four edge midpoints (a
"diamond" around the pixel centre) and keeps the pixel centres inside it or on it. A row of a
particle contributes to that hull only through its first and last pixel. In doubled
coordinates every such point and every pixel centre is a pair of integers, so the hull and the
"inside or on an edge" decision are exact:

* the hull of a point set is its left chain (the smallest column at each row coordinate,
  reduced to a convex chain) and its right chain; every particle's chains are reduced
  together, by removing in each pass every point that is not strictly convex with respect to
  its current neighbours (such a point is never a hull vertex), until none is left;
* a row of the particle's bounding box holds the hull's pixels from the left chain's column
  at that row, rounded up, to the right chain's, rounded down: the convex image comes out as
  one run of columns per row, equal to scikit-image's pixel for pixel (tested).

``feret_diameter_max`` follows scikit-image too: the largest distance between two points of
the 0.5 iso-contour of the convex image padded by 2 px, which on a binary image are the
midpoints of the pixel edges between the region and the background. For a region given by its
row runs, the hull of those midpoints is the hull of each run's two side midpoints and of the
midpoints above and below its end pixels (the other midpoints lie between these). The smallest
Feret diameter is the rotating-calipers minimum over the same hull's edges.
"""

from __future__ import annotations

import math

import numpy as np


def _starts(group: np.ndarray) -> np.ndarray:
    """Indices where a sorted group array changes (the first element of each group)."""
    return np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))


def _ends(starts: np.ndarray, size: int) -> np.ndarray:
    """The last index of each group, from the groups' first indices."""
    return np.concatenate((starts[1:], [size])) - 1


def _chain(pid: np.ndarray, y: np.ndarray, x: np.ndarray, side: int) -> tuple[np.ndarray, ...]:
    """One convex chain per particle from points sorted by ``(pid, y)`` with ``y`` strictly
    increasing within a particle: ``side`` +1 keeps the left chain (smallest ``x``), -1 the
    right chain. Returns the chain points ``(pid, y, x)``."""
    while len(pid) > 2:
        first = np.concatenate(([True], pid[1:] != pid[:-1]))
        last = np.concatenate((pid[1:] != pid[:-1], [True]))
        yp, xp = np.roll(y, 1), np.roll(x, 1)
        yn, xn = np.roll(y, -1), np.roll(x, -1)
        # side * (x - chord(y)) * (yn - yp) >= 0: on the chord or on its inner side
        off = (x - xp) * (yn - yp) - (xn - xp) * (y - yp)
        drop = ~first & ~last & (side * off >= 0)
        if not drop.any():
            break
        keep = ~drop
        pid, y, x = pid[keep], y[keep], x[keep]
    return pid, y, x


def _chains(pid: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[tuple[np.ndarray, ...], ...]:
    """The left and right hull chains of each particle's integer points ``(pid, y, x)``."""
    order = np.lexsort((x, y, pid))
    pid, y, x = pid[order], y[order], x[order]
    first = np.flatnonzero(np.concatenate(([True], (pid[1:] != pid[:-1]) | (y[1:] != y[:-1]))))
    last = _ends(first, len(pid))
    left = _chain(pid[first], y[first], x[first], 1)
    right = _chain(pid[first], y[first], x[last], -1)
    return left, right


def _polygons(
    left: tuple[np.ndarray, ...], right: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    """Each particle's hull vertices in order around it (left chain down, right chain up),
    the points the two chains share at the top and bottom listed once."""
    lp, ly, lx = left
    rp, ry, rx = right
    # a right chain's end is the left chain's end where both hold the same point
    top_r, top_l = _starts(rp), _starts(lp)
    bottom_r, bottom_l = _ends(top_r, len(rp)), _ends(top_l, len(lp))
    dup = np.zeros(len(rp), dtype=bool)
    dup[top_r] = rx[top_r] == lx[top_l]
    dup[bottom_r] |= rx[bottom_r] == lx[bottom_l]
    rp, ry, rx = rp[~dup], ry[~dup], rx[~dup]
    pid = np.concatenate((lp, rp))
    y = np.concatenate((ly, ry))
    x = np.concatenate((lx, rx))
    # left points by rising y, then right points by falling y
    rank = np.concatenate((ly, -ry))
    part = np.concatenate((np.zeros(len(lp), np.int8), np.ones(len(rp), np.int8)))
    order = np.lexsort((rank, part, pid))
    return pid[order], y[order], x[order]


def _runs_of_pixels(
    pid: np.ndarray, ys: np.ndarray, xs: np.ndarray, height: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each particle row's first and last pixel: ``(pid, y, first x, last x)`` by particle
    then row, for the rows that hold pixels (``height``: each particle's rows)."""
    offset = np.cumsum(height) - height
    at = offset[pid] + ys
    first = np.full(int(offset[-1] + height[-1]), np.iinfo(np.int64).max)
    last = np.full(len(first), -1, dtype=np.int64)
    np.minimum.at(first, at, xs)
    np.maximum.at(last, at, xs)
    rows = np.flatnonzero(last >= 0)
    run_pid = np.repeat(np.arange(len(height)), height)[rows]
    return run_pid, rows - offset[run_pid], first[rows], last[rows]


def _side_points(
    pid: np.ndarray, y2: np.ndarray, a2: np.ndarray, b2: np.ndarray, out: int
) -> tuple[np.ndarray, ...]:
    """Six points per run (doubled units): above, beside and below its first pixel ``a2`` and
    its last pixel ``b2`` at row ``y2``; ``out`` is how far beside (1 for a diamond's side
    point and for an edge midpoint alike)."""
    ps = np.tile(pid, 6)
    yy = np.concatenate((y2 - 1, y2, y2 + 1, y2 - 1, y2, y2 + 1))
    xx = np.concatenate((a2, a2 - out, a2, b2, b2 + out, b2))
    return ps, yy, xx


def convex_runs(
    pid: np.ndarray, ys: np.ndarray, xs: np.ndarray, height: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The convex image of each particle as runs, one per row of its bounding box.

    Parameters
    ----------
    pid : ndarray of int
        Each pixel's particle, ``0 .. n-1``; every particle has pixels.
    ys, xs : ndarray of int
        Each pixel's row and column within its particle's box (from 0).
    height : ndarray of int
        Each particle's box height (rows ``0 .. height - 1``).

    Returns
    -------
    (run_pid, row, lo, hi)
        One entry per row of each box, by particle then row: the first and last column of the
        hull's pixels in that row (``hi < lo`` where it holds none), equal to
        ``skimage.morphology.convex_hull_image`` of the particle's box.
    """
    pid = np.asarray(pid, dtype=np.int64)
    height = np.asarray(height, dtype=np.int64)
    rp, ry, ra, rb = _runs_of_pixels(
        pid, np.asarray(ys, np.int64), np.asarray(xs, np.int64), height
    )
    left, right = _chains(*_side_points(rp, 2 * ry, 2 * ra, 2 * rb, 1))
    run_pid = np.repeat(np.arange(len(height)), height)
    row = np.arange(len(run_pid)) - np.repeat(np.cumsum(height) - height, height)
    span = 4 * (int(height.max()) + 2)
    # rows above the first and below the last row of pixels hold none of the hull's pixels
    starts = _starts(rp)
    top = np.full(len(height), span)
    bottom = np.full(len(height), -span)
    top[rp[starts]] = ry[starts]
    bottom[rp[starts]] = ry[_ends(starts, len(rp))]
    inside = (row >= top[run_pid]) & (row <= bottom[run_pid])
    lo = np.zeros(len(row), dtype=np.int64)
    hi = np.full(len(row), -1, dtype=np.int64)
    lo[inside] = _cross(left, run_pid[inside], 2 * row[inside], span, up=True)
    hi[inside] = _cross(right, run_pid[inside], 2 * row[inside], span, up=False)
    return run_pid, row, lo, hi


def _cross(
    chain: tuple[np.ndarray, ...], pid: np.ndarray, y2: np.ndarray, span: int, *, up: bool
) -> np.ndarray:
    """The column where each row ``y2`` (doubled) of particle ``pid`` crosses the chain, halved
    and rounded up (``up``) or down: the first or last pixel centre on the chain's inner side.
    Every row lies strictly between its chain's first and last point (rows of pixels do)."""
    cp, cy, cx = chain
    at = np.searchsorted(cp * span + cy, pid * span + y2, side="right") - 1
    ya, xa, yb, xb = cy[at], cx[at], cy[at + 1], cx[at + 1]
    num = xa * (yb - ya) + (xb - xa) * (y2 - ya)
    den = 2 * (yb - ya)
    return -((-num) // den) if up else num // den


def _feret(pid: np.ndarray, y: np.ndarray, x: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Largest and smallest caliper width of each polygon (vertices in order, grouped by
    ``pid``, coordinates in doubled units): the farthest vertex pair, and the minimum over edges
    of the largest distance of a vertex from that edge's line."""
    starts = _starts(pid)
    count = np.diff(np.concatenate((starts, [len(pid)])))
    # every vertex against every vertex of its polygon
    rep = np.repeat(count, count)
    i = np.repeat(np.arange(len(pid)), rep)
    j = np.repeat(np.repeat(starts, count), rep) + (
        np.arange(len(i)) - np.repeat(np.cumsum(rep) - rep, rep)
    )
    dy = (y[j] - y[i]).astype(np.float64) / 2
    dx = (x[j] - x[i]).astype(np.float64) / 2
    pair_starts = np.cumsum(rep) - rep
    far = np.maximum.reduceat(dy * dy + dx * dx, pair_starts)
    fmax = np.sqrt(np.maximum.reduceat(far, starts))
    # edge i -> next vertex of the same polygon, against every vertex j
    nxt = np.arange(len(pid)) + 1
    nxt[starts + count - 1] = starts
    ey = (y[nxt] - y).astype(np.float64) / 2
    ex = (x[nxt] - x).astype(np.float64) / 2
    length = np.hypot(ey, ex)
    with np.errstate(invalid="ignore", divide="ignore"):
        ny, nx = -ex / length, ey / length
    proj = np.abs(dy * ny[i] + dx * nx[i])
    width = np.maximum.reduceat(proj, pair_starts)
    width[length == 0] = np.inf
    fmin = np.minimum.reduceat(width, starts)
    fmin[count < 3] = 0.0
    out_max = np.full(n, math.nan)
    out_min = np.full(n, math.nan)
    out_max[pid[starts]] = fmax
    out_min[pid[starts]] = fmin
    return out_max, out_min


def _outline(run_pid: np.ndarray, row: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Outline hull polygons (doubled units, offset by the 2 px padding) of regions given as
    row runs."""
    full = hi >= lo
    p, r, a, b = run_pid[full], row[full], lo[full], hi[full]
    pts = _side_points(p, 2 * r + 4, 2 * a + 4, 2 * b + 4, 1)
    return _polygons(*_chains(*pts))


def shapes(
    pid: np.ndarray, ys: np.ndarray, xs: np.ndarray, height: np.ndarray, need_feret: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convex area (pixels) and largest and smallest Feret diameters (pixels; NaN unless
    ``need_feret``) of every particle, from its pixels (arguments as :func:`convex_runs`)."""
    n = len(height)
    run_pid, row, lo, hi = convex_runs(pid, ys, xs, height)
    area = np.bincount(run_pid, np.maximum(hi - lo + 1, 0), minlength=n)
    if not need_feret:
        return area, np.full(n, math.nan), np.full(n, math.nan)
    fmax, fmin = _feret(*_outline(run_pid, row, lo, hi), n)
    return area, fmax, fmin


def _one(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One region's pixels as :func:`convex_runs` takes them."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(
            f"hull: the region must be a 2-D mask with pixels, got shape {mask.shape} "
            f"with {int(mask.sum())} pixel(s)"
        )
    ys, xs = np.nonzero(mask)
    return np.zeros(len(ys), np.int64), ys, xs, np.array([mask.shape[0]])


def convex_image(mask: np.ndarray) -> np.ndarray:
    """The convex image of one region (boolean, the shape of ``mask``; ``mask`` holds pixels)."""
    _, _, lo, hi = convex_runs(*_one(mask))
    cols = np.arange(mask.shape[1])
    return (cols >= lo[:, None]) & (cols <= hi[:, None])


def _hull(image_convex: np.ndarray) -> np.ndarray:
    """Vertices of scikit-image's outline hull of a convex image, as (row, column) in the image
    padded by 2 px."""
    _, y, x = _outline(*_runs_of_pixels(*_one(image_convex)))
    return np.stack([y, x], 1) / 2


def feret_diameters(image_convex: np.ndarray) -> tuple[float, float]:
    """Largest and smallest caliper width of a region's convex image, in pixels."""
    fmax, fmin = _feret(*_outline(*_runs_of_pixels(*_one(image_convex))), 1)
    return float(fmax[0]), float(fmin[0])


def feret_diameter_min(image_convex: np.ndarray) -> float:
    """Smallest caliper width of a region in pixels (see :func:`feret_diameters`)."""
    return feret_diameters(image_convex)[1]


__all__ = [
    "convex_image",
    "convex_runs",
    "feret_diameter_min",
    "feret_diameters",
    "shapes",
]
