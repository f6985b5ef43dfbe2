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
from skimage.measure import find_contours, regionprops

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


def feret_diameter_min(image_convex: np.ndarray) -> float:
    """Smallest caliper width of a region, in pixels.

    Taken over the same outline scikit-image uses for ``feret_diameter_max`` (the 0.5 iso-contour
    of the padded convex image), by rotating calipers: the minimum over hull edges of the
    largest distance of a hull vertex from that edge's line.
    """
    padded = np.pad(image_convex, 2, mode="constant", constant_values=0)
    contours = find_contours(padded, 0.5, fully_connected="high")
    if not contours:
        return 0.0
    pts = np.vstack(contours)
    try:
        hull = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):
        # Collinear outline (one row or column of pixels): zero width along the line normal.
        return 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    ok = lengths > 0
    normals = np.stack([-edges[ok, 1], edges[ok, 0]], axis=1) / lengths[ok, None]
    # Distance of every vertex from every edge line; width = max over vertices, per edge.
    proj = np.einsum("ejk,ek->ej", hull[None, :, :] - hull[ok][:, None, :], normals)
    return float(np.abs(proj).max(axis=1).min())


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
    # Local ids 1..k for the kept particles, 0 elsewhere: regionprops then visits only them.
    pos = np.searchsorted(keep, labels)
    pos_c = np.minimum(pos, len(keep) - 1)
    hit = (labels != 0) & (keep[pos_c] == labels)
    local = np.where(hit, pos_c + 1, 0).astype(np.int32)
    regions = regionprops(local)
    n = len(regions)
    if n != len(keep):
        raise AssertionError("measure: a kept label has no pixels in the window")
    y0, x0 = origin_px
    cols: dict[str, Any] = {"label": keep.astype(np.uint32)}
    npx = np.empty(n, dtype=np.int64)
    cy = np.empty(n)
    cx = np.empty(n)
    bbox = np.empty((n, 4), dtype=np.int64)
    shape_vals = {c: np.empty(n) for c in SHAPE_COLUMNS if c in wanted}
    fourier = np.empty((n, len(FOURIER_COLUMNS))) if FOURIER_COLUMNS[0] in wanted else None
    for k, r in enumerate(regions):
        npx[k] = r.num_pixels
        cy[k], cx[k] = r.centroid
        bbox[k] = r.bbox
        if shape_vals:
            _shape_row(r, shape_vals, k)
        if fourier is not None and intensity is not None:
            fourier[k] = fourier_features(intensity[r.slice], r.image)
    s = float(spacing)
    cols["num_pixels"] = npx
    cols["area"] = npx * s * s
    cols["equivalent_diameter_area"] = np.sqrt(4.0 * npx / np.pi) * s
    cols["centroid-0"] = origin[0] + (cy + y0) * s
    cols["centroid-1"] = origin[1] + (cx + x0) * s
    gb = bbox + np.array([y0, x0, y0, x0])
    for i in range(4):
        cols[f"bbox-{i}"] = gb[:, i]
    for c, v in shape_vals.items():
        if c in LENGTH_COLUMNS:
            v = v * s
        elif c in AREA_COLUMNS:
            v = v * s * s
        elif c == "boundary_area_ratio":
            v = v / s
        cols[c] = v
    index = np.arange(1, n + 1)
    images = {}
    if intensity is not None and "intensity_mean" in wanted:
        images[""] = intensity
    for name, img in (extras or {}).items():
        images[f"_{name}"] = img
    for suffix, img in images.items():
        img = np.asarray(img, dtype=np.float64)
        cols[f"intensity_mean{suffix}"] = np.asarray(ndi.mean(img, local, index))
        cols[f"intensity_std{suffix}"] = np.sqrt(np.asarray(ndi.variance(img, local, index)))
        cols[f"intensity_min{suffix}"] = np.asarray(ndi.minimum(img, local, index), float)
        cols[f"intensity_max{suffix}"] = np.asarray(ndi.maximum(img, local, index), float)
    if fourier is not None:
        for i, c in enumerate(FOURIER_COLUMNS):
            cols[c] = fourier[:, i]
    h, w = image_shape
    cols["touches_edge"] = (gb[:, 0] == 0) | (gb[:, 1] == 0) | (gb[:, 2] == h) | (gb[:, 3] == w)
    if near_uncovered is not None and near_uncovered.any():
        cols["touches_uncovered"] = np.asarray(
            ndi.maximum(near_uncovered.astype(np.uint8), local, index)
        ).astype(bool)
    else:
        cols["touches_uncovered"] = np.zeros(n, dtype=bool)
    if chunk_starts is not None:
        ys, xs = chunk_starts
        cols["touches_chunk"] = (_chunk_index(ys, gb[:, 0]) != _chunk_index(ys, gb[:, 2] - 1)) | (
            _chunk_index(xs, gb[:, 1]) != _chunk_index(xs, gb[:, 3] - 1)
        )
    else:
        cols["touches_chunk"] = np.zeros(n, dtype=bool)
    table = pd.DataFrame({c: cols[c] for c in columns})
    return table.astype(empty_table(columns).dtypes.to_dict())


def _shape_row(r: Any, out: dict[str, np.ndarray], k: int) -> None:
    """Geometry of one region (pixel units) into row ``k`` of ``out``."""
    area = float(r.area)
    perimeter = float(r.perimeter)
    major = float(r.axis_major_length)
    minor = float(r.axis_minor_length)
    values: dict[str, float] = {
        "perimeter": perimeter,
        "axis_major_length": major,
        "axis_minor_length": minor,
        "orientation": float(r.orientation),
        "eccentricity": float(r.eccentricity),
        # ImageJ: 4 pi A / P^2, capped at 1 (digitised outlines of small discs exceed it).
        "circularity": min(1.0, 4.0 * math.pi * area / perimeter**2) if perimeter > 0 else math.nan,
        "aspect_ratio": major / minor if minor > 0 else math.nan,
        "roundness": 4.0 * area / (math.pi * major**2) if major > 0 else math.nan,
        "boundary_area_ratio": perimeter / area,
    }
    if "solidity" in out or "area_convex" in out:
        values["solidity"] = float(r.solidity)
        values["area_convex"] = float(r.area_convex)
    if "feret_diameter_max" in out:
        values["feret_diameter_max"] = float(r.feret_diameter_max)
    if "feret_diameter_min" in out:
        values["feret_diameter_min"] = feret_diameter_min(r.image_convex)
    if "moments_hu-0" in out:
        hu = r.moments_hu
        for i in range(7):
            values[f"moments_hu-{i}"] = float(hu[i])
    for c in out:
        out[c][k] = values[c]


__all__ = [
    "BASE_COLUMNS",
    "FLAG_COLUMNS",
    "SHAPE_COLUMNS",
    "empty_table",
    "feret_diameter_min",
    "measure",
    "table_columns",
]
