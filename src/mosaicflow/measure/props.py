"""Per-particle tables from per-chunk partial sums reduced by label.

Each chunk returns, for every label it holds, pixel count, coordinate and intensity sums and
extremes; summing (or taking min/max of) these over chunks gives exact whole-image values for
area, centroid, bounding box and mean intensity, whatever the chunking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
from dask.delayed import Delayed

from mosaicflow import dispatch
from mosaicflow._arrays import as_dask, check_2d

_PARTIALS = {
    "count": "sum",
    "sum_y": "sum",
    "sum_x": "sum",
    "sum_i": "sum",
    "min_y": "min",
    "max_y": "max",
    "min_x": "min",
    "max_x": "max",
    "min_i": "min",
    "max_i": "max",
}


def _empty_partials() -> pd.DataFrame:
    cols: dict[str, Any] = {"label": np.empty(0, dtype=np.uint32)}
    for name in _PARTIALS:
        integer = name in ("count", "min_y", "max_y", "min_x", "max_x")
        cols[name] = np.empty(0, dtype=np.int64 if integer else np.float64)
    return pd.DataFrame(cols)


def chunk_partials(labels: Any, intensity: Any, y0: int, x0: int) -> pd.DataFrame:
    """Partial sums per label of one chunk (kernel: NumPy or CuPy chunk in, pandas out)."""
    labels = dispatch.to_host(labels)
    intensity = None if intensity is None else dispatch.to_host(intensity)
    fg = labels > 0
    if not fg.any():
        return _empty_partials()
    ys, xs = np.nonzero(fg)
    lab = labels[ys, xs]
    ids, idx = np.unique(lab, return_inverse=True)
    order = np.argsort(idx, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(idx[order]) != 0])
    ys_o, xs_o = ys[order], xs[order]
    vals = np.zeros(len(lab)) if intensity is None else intensity[ys, xs].astype(np.float64)
    vals_o = vals[order]
    out = pd.DataFrame(
        {
            "label": ids.astype(np.uint32),
            "count": np.bincount(idx).astype(np.int64),
            "sum_y": np.bincount(idx, ys + y0).astype(np.float64),
            "sum_x": np.bincount(idx, xs + x0).astype(np.float64),
            "sum_i": np.bincount(idx, vals),
            "min_y": np.minimum.reduceat(ys_o, starts).astype(np.int64) + y0,
            "max_y": np.maximum.reduceat(ys_o, starts).astype(np.int64) + y0,
            "min_x": np.minimum.reduceat(xs_o, starts).astype(np.int64) + x0,
            "max_x": np.maximum.reduceat(xs_o, starts).astype(np.int64) + x0,
            "min_i": np.minimum.reduceat(vals_o, starts),
            "max_i": np.maximum.reduceat(vals_o, starts),
        }
    )
    return out


def _finish(
    parts: pd.DataFrame, spacing: Sequence[float], origin: Sequence[float], has_intensity: bool
) -> pd.DataFrame:
    agg = parts.groupby("label", sort=True).agg(_PARTIALS)
    dy, dx = (float(s) for s in spacing)
    n = agg["count"].to_numpy()
    table = pd.DataFrame({"label": agg.index.to_numpy(dtype=np.uint32)})
    table["num_pixels"] = n.astype(np.int64)
    table["area"] = n * dy * dx
    table["equivalent_diameter_area"] = np.sqrt(4 * table["area"] / np.pi)
    table["centroid-0"] = origin[0] + agg["sum_y"].to_numpy() / n * dy
    table["centroid-1"] = origin[1] + agg["sum_x"].to_numpy() / n * dx
    table["bbox-0"] = agg["min_y"].to_numpy()
    table["bbox-1"] = agg["min_x"].to_numpy()
    table["bbox-2"] = agg["max_y"].to_numpy() + 1
    table["bbox-3"] = agg["max_x"].to_numpy() + 1
    if has_intensity:
        table["intensity_mean"] = agg["sum_i"].to_numpy() / n
        table["intensity_min"] = agg["min_i"].to_numpy()
        table["intensity_max"] = agg["max_i"].to_numpy()
    return table


def regionprops_table(
    label_image: Any,
    intensity_image: Any = None,
    *,
    spacing: Sequence[float] | None = None,
) -> Delayed:
    """Per-particle table of a chunked label image (lazy; compute it to get a DataFrame).

    Parameters
    ----------
    label_image : dask.array.Array or xarray.DataArray
        Integer labels, 0 = background.
    intensity_image : same shape, optional
        Intensities for ``intensity_mean/min/max``.
    spacing : (float, float), optional
        Pixel size ``(dy, dx)``. Defaults to the DataArray's ``pixel_size_nm`` attribute (units
        nm) or 1 (units px) for plain arrays, as scikit-image.

    Returns
    -------
    dask.delayed.Delayed
        Computes to a pandas DataFrame with scikit-image's column names: ``label``,
        ``num_pixels``, ``area``, ``equivalent_diameter_area``, ``centroid-0``, ``centroid-1``
        (physical units, in the image's coordinate frame for DataArrays), ``bbox-0..3``
        (pixels) and, with an intensity image, ``intensity_mean``, ``intensity_min``,
        ``intensity_max``. One row per label, sorted by label.
    """
    check_2d(label_image, "regionprops_table")
    labels = as_dask(label_image)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"regionprops_table: label_image must have an integer dtype, got {labels.dtype}"
        )
    origin = (0.0, 0.0)
    if isinstance(label_image, xr.DataArray):
        if spacing is None and "pixel_size_nm" in label_image.attrs:
            spacing = tuple(label_image.attrs["pixel_size_nm"])
        if label_image.sizes["y"] and label_image.sizes["x"]:
            origin = (float(label_image["y"][0]), float(label_image["x"][0]))
    spacing = (1.0, 1.0) if spacing is None else tuple(spacing)
    intensity = None if intensity_image is None else as_dask(intensity_image)
    if intensity is not None:
        if intensity.shape != labels.shape:
            raise ValueError(
                f"regionprops_table: intensity_image shape {intensity.shape} != label_image "
                f"shape {labels.shape}"
            )
        intensity = intensity.rechunk(labels.chunks)
    ystarts = np.cumsum((0, *labels.chunks[0]))
    xstarts = np.cumsum((0, *labels.chunks[1]))
    lab_blocks = labels.to_delayed()
    int_blocks = None if intensity is None else intensity.to_delayed()
    parts = [
        dask.delayed(chunk_partials, pure=True)(
            lab_blocks[i, j],
            None if int_blocks is None else int_blocks[i, j],
            int(ystarts[i]),
            int(xstarts[j]),
        )
        for i in range(lab_blocks.shape[0])
        for j in range(lab_blocks.shape[1])
    ]
    combined = dask.delayed(pd.concat)(parts, ignore_index=True)
    return dask.delayed(_finish, pure=True)(combined, spacing, origin, intensity is not None)


__all__ = ["chunk_partials", "regionprops_table"]
