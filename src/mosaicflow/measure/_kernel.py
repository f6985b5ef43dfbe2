"""Measurement kernel: one table row per particle of an in-memory label array (no Dask here).

Every column is computed for all particles at once from their own pixels (``np.bincount`` by
particle): moments, scikit-image's 4-connected perimeter and the intensity statistics; only the
convex hull (solidity, convex area, Feret diameters), the Hu invariants and the Fourier features
are computed particle by particle. The values equal scikit-image's whole-image table; they are
computed in pixels and scaled by an isotropic pixel size as :data:`LENGTH_COLUMNS`,
:data:`AREA_COLUMNS` and :data:`PER_LENGTH_COLUMNS` say. The table's column names, groups and
units live in :mod:`mosaicflow.measure.columns` (re-exported here).

Positions: ``centroid-0/1`` are ``origin + px * spacing``. For a label image in a coordinate
frame (a DataArray, ``frame=True``) ``bbox-0..3`` are the box's pixel *edges* in that frame,
``origin + (index - 0.5) * spacing`` (coordinates are pixel centres, so the edges of pixel
``k`` lie half a pixel either side of its coordinate), and the pixel values are kept as
:data:`PIXEL_POSITION_COLUMNS`; otherwise ``bbox-0..3`` are scikit-image's pixel indices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from skimage.measure import moments_hu

from mosaicflow.measure.columns import (
    AREA_COLUMNS,
    BASE_COLUMNS,
    FLAG_COLUMNS,
    GROUP_COLUMNS,
    INTENSITY_COLUMNS,
    LENGTH_COLUMNS,
    PER_LENGTH_COLUMNS,
    PIXEL_POSITION_COLUMNS,
    PROPERTY_GROUPS,
    SHAPE_COLUMNS,
    SKIMAGE_PROPERTIES,
    empty_table,
    extra_intensity_columns,
    property_columns,
)
from mosaicflow.measure.features import FOURIER_COLUMNS, fourier_table
from mosaicflow.measure.hull import shapes

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


def foreground(labels: np.ndarray) -> np.ndarray:
    """Flat indices of the non-zero pixels of ``labels``, ascending (as ``np.flatnonzero``;
    on a boolean mask NumPy finds them several times faster than on integer labels)."""
    return np.flatnonzero(labels.ravel() != 0)


def boxes(flat: np.ndarray, idx: np.ndarray, n: int, width: int) -> np.ndarray:
    """``(y0, x0, y1, x1)`` of regions ``0..n-1`` from their pixels: flat indices ``flat`` into
    an image ``width`` pixels wide, region ``idx`` of each (what ``ndi.find_objects`` gives,
    from the pixels alone rather than a pass over the whole image). A region without pixels
    gets ``y1 <= y0``."""
    ys, xs = np.divmod(flat, width)
    out = np.empty((n, 4), dtype=np.int64)
    big = np.iinfo(np.int64).max
    out[:, :2] = big
    out[:, 2:] = -1
    np.minimum.at(out[:, 0], idx, ys)
    np.minimum.at(out[:, 1], idx, xs)
    np.maximum.at(out[:, 2], idx, ys + 1)
    np.maximum.at(out[:, 3], idx, xs + 1)
    return out


def perimeters(local: np.ndarray, k: int) -> np.ndarray:
    """scikit-image's ``perimeter`` (4-connectivity) of regions ``1..k`` of ``local`` at once.

    A region pixel is on its border when a 4-neighbour is not the region; each border pixel
    gets the code ``1 + sum of weights of its 8 neighbours that are border pixels of the same
    region``, and a region's perimeter is its code histogram times scikit-image's weights, the
    same sum in the same order as ``skimage.measure.perimeter`` on the region's own image.
    Only the regions' own pixels are visited (flat indices into a copy padded with zeros).
    """
    flat = foreground(local)
    return _perimeters_of(local.shape, flat, local.ravel()[flat], k)


#: Elements of the zero-padded band :func:`_perimeters_of` builds at a time (int32): about
#: 4 MiB, so that its scattered reads stay in cache (the whole padded block of 4096 px measuring
#: blocks is 70 MiB).
PERIMETER_BAND_PX = 1 << 20


def _perimeters_of(
    shape: tuple[int, ...], flat: np.ndarray, value: np.ndarray, k: int
) -> np.ndarray:
    """:func:`perimeters` of an image of ``shape`` given by its region pixels alone: flat
    indices ``flat`` (ascending) and region ``value`` (1..k) of each.

    Band by band of rows: a band's zero-padded image holds its pixels and those of the two
    rows on either side (a pixel is on the border by its 4-neighbours, and its code counts the
    8-neighbours that are on the border), so each band counts the codes of its own border
    pixels exactly as one pass over the whole padded image would."""
    h, w = shape
    width = w + 2
    rows = max(1, PERIMETER_BAND_PX // width - 6)
    hist = np.zeros(k * 50, dtype=np.int64)
    for r0 in range(0, h, rows):
        r1 = min(r0 + rows, h)
        base = r0 - 3  # image row of the band's padded row 0
        lo, hi = np.searchsorted(flat, [max(r0 - 2, 0) * w, min(r1 + 2, h) * w])
        if lo == hi:
            continue
        ys, xs = np.divmod(flat[lo:hi], w)
        at = (ys - base) * width + xs + 1
        val = value[lo:hi]
        padded = np.zeros((r1 - r0 + 6) * width, dtype=np.int32)
        padded[at] = val
        # border pixels of rows r0-1 .. r1 (the band's and its neighbours')
        m0, m1 = np.searchsorted(at, [2 * width, (r1 - r0 + 4) * width])
        at, val = at[m0:m1], val[m0:m1]
        inner = np.ones(len(at), dtype=bool)
        for step in (-width, width, -1, 1):
            inner &= padded[at + step] == val
        at, val = at[~inner], val[~inner]
        border = np.zeros(padded.size, dtype=bool)
        border[at] = True
        b0, b1 = np.searchsorted(at, [3 * width, (r1 - r0 + 3) * width])  # the band's own
        at, val = at[b0:b1], val[b0:b1]
        code = np.ones(len(at), dtype=np.int64)
        for (dy, dx), weight in _PERIMETER_CODES:
            near = at + dy * width + dx
            code += weight * (border[near] & (padded[near] == val))
        hist += np.bincount((val.astype(np.int64) - 1) * 50 + code, minlength=k * 50)[: k * 50]
    return hist.reshape(k, 50) @ _PERIMETER_WEIGHTS


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
    frame: bool = False,
    intensity: np.ndarray | None = None,
    extras: Mapping[str, np.ndarray] | None = None,
    near_uncovered: np.ndarray | None = None,
    chunk_starts: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Rows for the particles ``keep`` (label values), each wholly inside ``labels``.

    Only what the ``columns`` need is computed (see the module docstring for how).

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
        The columns wanted, in order: any of :data:`GROUP_COLUMNS`' columns, the
        :data:`PIXEL_POSITION_COLUMNS` and, for each ``extras`` image, its
        :func:`extra_intensity_columns`.
    frame : bool
        ``origin`` and ``spacing`` place the image in a coordinate frame (a DataArray):
        ``bbox-*`` are then the box's pixel edges in it, ``origin + (index - 0.5) * spacing``;
        otherwise pixel indices, as scikit-image's.
    intensity, extras : ndarray, optional
        Intensity windows aligned with ``labels``.
    near_uncovered : ndarray of bool, optional
        True where a pixel is, or 8-touches, a pixel outside the acquired area.
    chunk_starts : (ndarray, ndarray), optional
        First row / column of every chunk of the image (for ``touches_chunk``).
    """
    wanted = set(columns)
    if len(keep) == 0:
        return empty_table(columns, frame=frame)
    keep = np.asarray(keep)
    n = len(keep)
    # Local ids 1..n for the kept particles, 0 elsewhere.
    # Only the foreground is looked up among the kept labels.
    fg = foreground(labels)
    values = labels.ravel()[fg]
    pos = np.minimum(np.searchsorted(keep, values), n - 1)
    hit = keep[pos] == values
    flat = fg[hit]
    idx = pos[hit]
    npx = np.bincount(idx, minlength=n)
    if not npx.all():
        raise AssertionError("measure: a kept label has no pixels in the window")
    box = boxes(flat, idx, n, labels.shape[1])
    ys, xs = np.divmod(flat, labels.shape[1])
    # Coordinates within each particle's bounding box keep the moment sums small and exact.
    iy = ys - box[idx, 0]
    ix = xs - box[idx, 1]
    ly = iy.astype(np.float64)
    lx = ix.astype(np.float64)
    cy_l = np.bincount(idx, ly, minlength=n) / npx
    cx_l = np.bincount(idx, lx, minlength=n) / npx
    y0, x0 = origin_px
    s = float(spacing)
    # Values in pixel units; _physical scales them at the end.
    cols: dict[str, Any] = {"label": keep.astype(np.uint32), "num_pixels": npx.astype(np.int64)}
    cols["area"] = npx
    cols["equivalent_diameter_area"] = np.sqrt(4.0 * npx / np.pi)
    cy_px = cy_l + box[:, 0] + y0
    cx_px = cx_l + box[:, 1] + x0
    cols["centroid-0"] = origin[0] + cy_px * s
    cols["centroid-1"] = origin[1] + cx_px * s
    cols["centroid_px-0"] = cy_px
    cols["centroid_px-1"] = cx_px
    gb = box + np.array([y0, x0, y0, x0])
    for i in range(4):
        cols[f"bbox_px-{i}"] = gb[:, i]
        # In a frame: the outer edge of the first pixel and of the last pixel (index - 1).
        cols[f"bbox-{i}"] = origin[i % 2] + (gb[:, i] - 0.5) * s if frame else gb[:, i]
    if wanted.intersection(SHAPE_COLUMNS):
        cols.update(
            _shape_columns(
                labels.shape,
                flat,
                idx,
                (iy, ix),
                box[:, 2] - box[:, 0],
                ly - cy_l[idx],
                lx - cx_l[idx],
                npx,
                wanted,
            )
        )
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def pixels_of(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The particles' pixel values of ``img`` and each particle's mean (taken once)."""
        if id(img) not in seen:
            vals = np.asarray(img).ravel()[flat].astype(np.float64)
            seen[id(img)] = vals, np.bincount(idx, vals, minlength=n) / npx
        return seen[id(img)]

    if intensity is not None and wanted.intersection(FOURIER_COLUMNS):
        # The real-space pair fourier_features also returns is intensity_mean/std: left out.
        side = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
        vals, mean = pixels_of(intensity)
        fourier = fourier_table(idx, iy, ix, vals, side, mean)
        for i, c in enumerate(FOURIER_COLUMNS):
            cols[c] = fourier[:, i]
    images = {}
    if intensity is not None and wanted.intersection(INTENSITY_COLUMNS):
        images[INTENSITY_COLUMNS] = intensity
    for name, img in (extras or {}).items():
        names = tuple(extra_intensity_columns(name))
        if wanted.intersection(names):
            images[names] = img
    if images:
        # Statistics over the particles' own pixels only, grouped once by particle.
        order = np.argsort(idx, kind="stable")
        starts = np.concatenate(([0], np.cumsum(npx)[:-1]))
        for (c_mean, c_std, c_min, c_max), img in images.items():
            vals, mean = pixels_of(img)
            dev = vals - mean[idx]
            sorted_vals = vals[order]
            cols[c_mean] = mean
            cols[c_std] = np.sqrt(np.bincount(idx, dev * dev, minlength=n) / npx)
            cols[c_min] = np.minimum.reduceat(sorted_vals, starts)
            cols[c_max] = np.maximum.reduceat(sorted_vals, starts)
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
    dtypes = empty_table(columns, frame=frame).dtypes
    return pd.DataFrame({c: np.asarray(_physical(c, cols[c], s), dtype=dtypes[c]) for c in columns})


def _physical(column: str, values: np.ndarray, s: float) -> np.ndarray:
    """``values`` of ``column``, in pixel units, in the units of a pixel of size ``s``."""
    if column in LENGTH_COLUMNS:
        return values * s
    if column in AREA_COLUMNS:
        return values * s * s
    if column in PER_LENGTH_COLUMNS:
        return values / s
    return values


def _shape_columns(
    shape: tuple[int, ...],
    flat: np.ndarray,
    idx: np.ndarray,
    pixels: tuple[np.ndarray, np.ndarray],
    height: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    npx: np.ndarray,
    wanted: set[str],
) -> dict[str, np.ndarray]:
    """The shape columns of every particle, in pixel units, from central moments, perimeters
    and convex hulls; perimeters, hulls and Hu invariants only where ``wanted`` needs them."""
    n = len(npx)

    py = {0: None, 1: dy, 2: dy * dy}
    py[3] = py[2] * dy
    px = {0: None, 1: dx, 2: dx * dx}
    px[3] = px[2] * dx

    def mu(p: int, q: int) -> np.ndarray:
        w = py[p] if q == 0 else px[q] if p == 0 else py[p] * px[q]
        return np.bincount(idx, w, minlength=n)

    m = {(p, q): mu(p, q) for p in range(4) for q in range(4) if 2 <= p + q <= 3}
    area = npx.astype(np.float64)
    # scikit-image's inertia tensor: [[mu02, -mu11], [-mu11, mu20]] / mu00.
    a = m[(0, 2)] / area
    b = -m[(1, 1)] / area
    c = m[(2, 0)] / area
    tensor = np.stack([np.stack([a, b], -1), np.stack([b, c], -1)], -2)
    eig = np.clip(np.linalg.eigvalsh(tensor), 0, None)  # ascending per particle
    l1, l2 = eig[:, 1], eig[:, 0]
    major = 4 * np.sqrt(l1)
    minor = 4 * np.sqrt(l2)
    out: dict[str, np.ndarray] = {"axis_major_length": major, "axis_minor_length": minor}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["eccentricity"] = np.where(l1 == 0, 0.0, np.sqrt(1 - l2 / l1))
        out["orientation"] = np.where(
            a - c == 0, np.where(b < 0, np.pi / 4, -np.pi / 4), 0.5 * np.arctan2(-2 * b, c - a)
        )
        out["aspect_ratio"] = np.where(minor > 0, major / minor, np.nan)
        out["roundness"] = np.where(major > 0, 4 * area / (np.pi * major**2), np.nan)
        if wanted & {"perimeter", "circularity", "boundary_area_ratio"}:
            perimeter = _perimeters_of(shape, flat, idx + 1, n)
            out["perimeter"] = perimeter
            # ImageJ: 4 pi A / P^2, capped at 1 (digitised outlines of small discs exceed it).
            out["circularity"] = np.where(
                perimeter > 0, np.minimum(1.0, 4 * np.pi * area / perimeter**2), np.nan
            )
            out["boundary_area_ratio"] = perimeter / area
    need_feret = bool(wanted & {"feret_diameter_max", "feret_diameter_min"})
    if need_feret or wanted & {"solidity", "area_convex"}:
        hull_area, fmax, fmin = shapes(idx, *pixels, height, need_feret)
        out.update(
            solidity=area / hull_area,
            area_convex=hull_area,
            feret_diameter_max=fmax,
            feret_diameter_min=fmin,
        )
    if any(col.startswith("moments_hu-") for col in wanted):
        nu = np.full((n, 4, 4), np.nan)
        for (p, q), v in m.items():
            nu[:, p, q] = v / area ** ((p + q) / 2 + 1)
        hu = np.array([moments_hu(nu[k]) for k in range(n)]).reshape(n, 7)
        for i in range(7):
            out[f"moments_hu-{i}"] = hu[:, i]
    return out


__all__ = [  # the column vocabulary is re-exported for the modules that import it from here
    "AREA_COLUMNS",
    "BASE_COLUMNS",
    "FLAG_COLUMNS",
    "GROUP_COLUMNS",
    "INTENSITY_COLUMNS",
    "LENGTH_COLUMNS",
    "PER_LENGTH_COLUMNS",
    "PIXEL_POSITION_COLUMNS",
    "PROPERTY_GROUPS",
    "SHAPE_COLUMNS",
    "SKIMAGE_PROPERTIES",
    "empty_table",
    "extra_intensity_columns",
    "measure",
    "perimeters",
    "property_columns",
]
