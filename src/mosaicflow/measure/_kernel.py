"""Measurement kernel: one table row per particle of an in-memory label array (no Dask here).

Geometry comes from ``skimage.measure.regionprops`` on the particles' own pixels (so values equal
scikit-image's whole-image table), computed in pixels and scaled by an isotropic pixel size;
intensity statistics are ``scipy.ndimage`` reductions over the labelled pixels; the derived shape
descriptors and the Fourier features are ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.ndimage as ndi
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours, moments_hu
from skimage.morphology import convex_hull_image

from mosaicflow.classify.features import FOURIER_COLUMNS, fourier_features

#: Geometry columns, in table order, with scikit-image's names where they exist.
SHAPE_COLUMNS: tuple[str, ...] = (
    "perimeter",
    "feret_diameter_max",
    "feret_diameter_min",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "eccentricity",
    "solidity",
    "area_convex",
    "circularity",
    "aspect_ratio",
    "roundness",
    "boundary_area_ratio",
    *(f"moments_hu-{k}" for k in range(7)),
)
BASE_COLUMNS: tuple[str, ...] = (
    "label",
    "num_pixels",
    "area",
    "equivalent_diameter_area",
    "centroid-0",
    "centroid-1",
    "bbox-0",
    "bbox-1",
    "bbox-2",
    "bbox-3",
)
INTENSITY_STATS: tuple[str, ...] = ("mean", "std", "min", "max")
FLAG_COLUMNS: tuple[str, ...] = ("touches_edge", "touches_uncovered", "touches_chunk")
#: Columns whose unit is a length (scaled by the pixel size) or an area (by its square).
LENGTH_COLUMNS = frozenset(
    {
        "perimeter",
        "feret_diameter_max",
        "feret_diameter_min",
        "axis_major_length",
        "axis_minor_length",
        "equivalent_diameter_area",
    }
)
AREA_COLUMNS = frozenset({"area", "area_convex"})
INTEGER_COLUMNS = frozenset({"num_pixels", "bbox-0", "bbox-1", "bbox-2", "bbox-3"})


def table_columns(
    *, shape: bool, intensity: bool, extras: Sequence[str], features: bool
) -> list[str]:
    """The table's columns, in order, for the chosen groups."""
    cols = list(BASE_COLUMNS)
    if shape:
        cols += SHAPE_COLUMNS
    if intensity:
        cols += [f"intensity_{s}" for s in INTENSITY_STATS]
    for name in extras:
        cols += [f"intensity_{s}_{name}" for s in INTENSITY_STATS]
    if intensity and features:
        cols += FOURIER_COLUMNS
    cols += FLAG_COLUMNS
    return cols


def empty_table(columns: Sequence[str]) -> pd.DataFrame:
    """A typed table with no rows (the meta of the Dask DataFrame)."""
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c == "label":
            out[c] = np.empty(0, dtype=np.uint32)
        elif c in INTEGER_COLUMNS:
            out[c] = np.empty(0, dtype=np.int64)
        elif c in FLAG_COLUMNS:
            out[c] = np.empty(0, dtype=bool)
        else:
            out[c] = np.empty(0, dtype=np.float64)
    return pd.DataFrame(out)


def _hull(image_convex: np.ndarray) -> np.ndarray:
    """Vertices of the outline scikit-image uses for ``feret_diameter_max``: the convex hull of
    the 0.5 iso-contour of the padded convex image."""
    padded = np.pad(image_convex, 2, mode="constant", constant_values=0)
    contours = find_contours(padded, 0.5, fully_connected="high")
    if not contours:
        return np.zeros((1, 2))
    pts = np.vstack(contours)
    try:
        return np.asarray(pts[ConvexHull(pts).vertices])
    except (QhullError, ValueError):
        return np.asarray(pts)  # collinear outline: all points lie on one line


def feret_diameters(image_convex: np.ndarray) -> tuple[float, float]:
    """Largest and smallest caliper width of a region, in pixels.

    The largest equals scikit-image's ``feret_diameter_max`` (the farthest pair of outline
    points is a pair of hull vertices); the smallest is the minimum over hull edges of the
    largest distance of a vertex from that edge's line (rotating calipers).
    """
    hull = _hull(image_convex)
    diff = hull[:, None, :] - hull[None, :, :]
    dmax = math.sqrt(float(np.max(np.sum(diff * diff, axis=-1))))
    if len(hull) < 3:
        return dmax, 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    ok = lengths > 0
    normals = np.stack([-edges[ok, 1], edges[ok, 0]], axis=1) / lengths[ok, None]
    proj = np.einsum("ejk,ek->ej", hull[None, :, :] - hull[ok][:, None, :], normals)
    return dmax, float(np.abs(proj).max(axis=1).min())


def feret_diameter_min(image_convex: np.ndarray) -> float:
    """Smallest caliper width of a region in pixels (see :func:`feret_diameters`)."""
    return feret_diameters(image_convex)[1]


_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
# Neighbour offsets and their code weights in scikit-image's 4-connected perimeter estimate.
_PERIMETER_CODES = (
    ((-1, -1), 10),
    ((-1, 0), 2),
    ((-1, 1), 10),
    ((0, -1), 2),
    ((0, 1), 2),
    ((1, -1), 10),
    ((1, 0), 2),
    ((1, 1), 10),
)


def _shifted(a: np.ndarray, dy: int, dx: int, fill: Any) -> np.ndarray:
    """``out[y, x] = a[y + dy, x + dx]``, ``fill`` beyond the edge."""
    out = np.full_like(a, fill)
    h, w = a.shape
    out[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = a[
        max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def perimeters(local: np.ndarray, k: int) -> np.ndarray:
    """scikit-image's ``perimeter`` (4-connectivity) of regions ``1..k`` of ``local`` at once.

    A region pixel is on its border when a 4-neighbour is not the region; each border pixel
    gets the code ``1 + sum of weights of its 8 neighbours that are border pixels of the same
    region``, and a region's perimeter is its code histogram times scikit-image's weights, the
    same sum in the same order as ``skimage.measure.perimeter`` on the region's own image.
    """
    inner = local > 0
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        inner &= _shifted(local, dy, dx, 0) == local
    border = (local > 0) & ~inner
    code = border.astype(np.int64)
    for (dy, dx), weight in _PERIMETER_CODES:
        same = _shifted(local, dy, dx, 0) == local
        code += weight * (border & same & _shifted(border, dy, dx, False))
    where = np.flatnonzero(border)
    hist = np.bincount(
        (local.ravel()[where] - 1) * 50 + code.ravel()[where], minlength=k * 50
    ).reshape(k, 50)
    return hist @ _PERIMETER_WEIGHTS


def _chunk_index(starts: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.searchsorted(starts, values, side="right") - 1


def measure(
    labels: np.ndarray,
    keep: np.ndarray,
    *,
    origin_px: tuple[int, int],
    image_shape: tuple[int, int],
    spacing: float,
    origin: tuple[float, float],
    columns: Sequence[str],
    intensity: np.ndarray | None = None,
    extras: Mapping[str, np.ndarray] | None = None,
    near_uncovered: np.ndarray | None = None,
    chunk_starts: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Rows for the particles ``keep`` (label values), each wholly inside ``labels``.

    Moments, perimeters and intensity statistics are computed for all particles at once from
    their pixels (``np.bincount`` by particle); only the convex hull (solidity, Feret
    diameters) and the Fourier features are computed particle by particle.

    Parameters
    ----------
    labels : ndarray of int
        A window of the label image whose top-left pixel is ``origin_px`` in the image.
    keep : ndarray
        Label values to measure, sorted ascending; every one lies wholly inside ``labels``.
    image_shape : (int, int)
        The whole image's shape (for ``touches_edge``).
    spacing : float
        Pixel size (isotropic); lengths are scaled by it, areas by its square.
    origin : (float, float)
        Physical coordinate of the image's pixel (0, 0); centroids are ``origin + px * spacing``.
    columns : sequence of str
        The columns wanted (from :func:`table_columns`).
    intensity, extras : ndarray, optional
        Intensity windows aligned with ``labels``.
    near_uncovered : ndarray of bool, optional
        True where a pixel is, or 8-touches, a pixel outside the acquired area.
    chunk_starts : (ndarray, ndarray), optional
        First row / column of every chunk of the image (for ``touches_chunk``).
    """
    wanted = set(columns)
    if len(keep) == 0:
        return empty_table(columns)
    keep = np.asarray(keep)
    n = len(keep)
    # Local ids 1..n for the kept particles, 0 elsewhere.
    pos = np.minimum(np.searchsorted(keep, labels), n - 1)
    hit = (labels != 0) & (keep[pos] == labels)
    local = np.where(hit, pos + 1, 0).astype(np.int32)
    slices = ndi.find_objects(local, max_label=n)
    if any(sl is None for sl in slices):
        raise AssertionError("measure: a kept label has no pixels in the window")
    box = np.array([(a.start, b.start, a.stop, b.stop) for a, b in slices], dtype=np.int64)
    flat = np.flatnonzero(local)
    idx = local.ravel()[flat] - 1
    ys, xs = np.divmod(flat, labels.shape[1])
    npx = np.bincount(idx, minlength=n)
    # Coordinates within each particle's bounding box keep the moment sums small and exact.
    ly = (ys - box[idx, 0]).astype(np.float64)
    lx = (xs - box[idx, 1]).astype(np.float64)
    cy_l = np.bincount(idx, ly, minlength=n) / npx
    cx_l = np.bincount(idx, lx, minlength=n) / npx
    y0, x0 = origin_px
    s = float(spacing)
    cols: dict[str, Any] = {"label": keep.astype(np.uint32), "num_pixels": npx.astype(np.int64)}
    cols["area"] = npx * s * s
    cols["equivalent_diameter_area"] = np.sqrt(4.0 * npx / np.pi) * s
    cols["centroid-0"] = origin[0] + (cy_l + box[:, 0] + y0) * s
    cols["centroid-1"] = origin[1] + (cx_l + box[:, 1] + x0) * s
    gb = box + np.array([y0, x0, y0, x0])
    for i in range(4):
        cols[f"bbox-{i}"] = gb[:, i]
    if "perimeter" in wanted:
        _shape_columns(cols, local, slices, idx, ly - cy_l[idx], lx - cx_l[idx], npx, s, wanted)
    if intensity is not None and FOURIER_COLUMNS[0] in wanted:
        fourier = np.array(
            [fourier_features(intensity[sl], local[sl] == k + 1) for k, sl in enumerate(slices)]
        ).reshape(n, len(FOURIER_COLUMNS))
        for i, c in enumerate(FOURIER_COLUMNS):
            cols[c] = fourier[:, i]
    images = {}
    if intensity is not None and "intensity_mean" in wanted:
        images[""] = intensity
    for name, img in (extras or {}).items():
        images[f"_{name}"] = img
    if images:
        # Statistics over the particles' own pixels only, grouped once by particle.
        order = np.argsort(idx, kind="stable")
        starts = np.concatenate(([0], np.cumsum(npx)[:-1]))
        for suffix, img in images.items():
            vals = np.asarray(img).ravel()[flat].astype(np.float64)
            mean = np.bincount(idx, vals, minlength=n) / npx
            dev = vals - mean[idx]
            sorted_vals = vals[order]
            cols[f"intensity_mean{suffix}"] = mean
            cols[f"intensity_std{suffix}"] = np.sqrt(np.bincount(idx, dev * dev, minlength=n) / npx)
            cols[f"intensity_min{suffix}"] = np.minimum.reduceat(sorted_vals, starts)
            cols[f"intensity_max{suffix}"] = np.maximum.reduceat(sorted_vals, starts)
    h, w = image_shape
    cols["touches_edge"] = (gb[:, 0] == 0) | (gb[:, 1] == 0) | (gb[:, 2] == h) | (gb[:, 3] == w)
    if near_uncovered is not None and near_uncovered.any():
        cols["touches_uncovered"] = (
            np.bincount(idx, near_uncovered.ravel()[flat].astype(np.float64), minlength=n) > 0
        )
    else:
        cols["touches_uncovered"] = np.zeros(n, dtype=bool)
    if chunk_starts is not None:
        cy, cx = chunk_starts
        cols["touches_chunk"] = (_chunk_index(cy, gb[:, 0]) != _chunk_index(cy, gb[:, 2] - 1)) | (
            _chunk_index(cx, gb[:, 1]) != _chunk_index(cx, gb[:, 3] - 1)
        )
    else:
        cols["touches_chunk"] = np.zeros(n, dtype=bool)
    table = pd.DataFrame({c: cols[c] for c in columns})
    return table.astype(empty_table(columns).dtypes.to_dict())


def _shape_columns(
    cols: dict[str, Any],
    local: np.ndarray,
    slices: list[Any],
    idx: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    npx: np.ndarray,
    s: float,
    wanted: set[str],
) -> None:
    """Shape columns of every particle, from central moments, perimeters and convex hulls."""
    n = len(npx)

    def mu(p: int, q: int) -> np.ndarray:
        return np.bincount(idx, dy**p * dx**q, minlength=n)

    m = {(p, q): mu(p, q) for p in range(4) for q in range(4) if 2 <= p + q <= 3}
    mu0 = npx.astype(np.float64)
    # scikit-image's inertia tensor: [[mu02, -mu11], [-mu11, mu20]] / mu00.
    a = m[(0, 2)] / mu0
    b = -m[(1, 1)] / mu0
    c = m[(2, 0)] / mu0
    tensor = np.stack([np.stack([a, b], -1), np.stack([b, c], -1)], -2)
    eig = np.clip(np.linalg.eigvalsh(tensor), 0, None)  # ascending per particle
    l1, l2 = eig[:, 1], eig[:, 0]
    major = 4 * np.sqrt(l1)
    minor = 4 * np.sqrt(l2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ecc = np.where(l1 == 0, 0.0, np.sqrt(1 - l2 / l1))
        orientation = np.where(
            a - c == 0, np.where(b < 0, np.pi / 4, -np.pi / 4), 0.5 * np.arctan2(-2 * b, c - a)
        )
    perimeter = perimeters(local, n)
    area = mu0
    hull_area = np.empty(n)
    fmax = np.empty(n)
    fmin = np.empty(n)
    need_feret = "feret_diameter_max" in wanted or "feret_diameter_min" in wanted
    for k, sl in enumerate(slices):
        convex = convex_hull_image(local[sl] == k + 1)
        hull_area[k] = np.sum(convex)
        if need_feret:
            fmax[k], fmin[k] = feret_diameters(convex)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {
            "perimeter": perimeter * s,
            "feret_diameter_max": fmax * s,
            "feret_diameter_min": fmin * s,
            "axis_major_length": major * s,
            "axis_minor_length": minor * s,
            "orientation": orientation,
            "eccentricity": ecc,
            "solidity": area / hull_area,
            "area_convex": hull_area * s * s,
            # ImageJ: 4 pi A / P^2, capped at 1 (digitised outlines of small discs exceed it).
            "circularity": np.where(
                perimeter > 0, np.minimum(1.0, 4 * np.pi * area / perimeter**2), np.nan
            ),
            "aspect_ratio": np.where(minor > 0, major / minor, np.nan),
            "roundness": np.where(major > 0, 4 * area / (np.pi * major**2), np.nan),
            "boundary_area_ratio": perimeter / area / s,
        }
    if "moments_hu-0" in wanted:
        nu = np.full((n, 4, 4), np.nan)
        for (p, q), v in m.items():
            nu[:, p, q] = v / mu0 ** ((p + q) / 2 + 1)
        hu = np.array([moments_hu(nu[k]) for k in range(n)]).reshape(n, 7)
        for i in range(7):
            values[f"moments_hu-{i}"] = hu[:, i]
    for col in SHAPE_COLUMNS:
        if col in wanted:
            cols[col] = values[col]
