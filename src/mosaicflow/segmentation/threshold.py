"""Global thresholds from a histogram reduced over every chunk of the mosaic."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import skimage.filters

from mosaicflow._shared.arrays import as_dask, value_counts
from mosaicflow.errors import ConfigError
from mosaicflow.runner import Runner


def _summed(parts: list[Any]) -> Any:
    """The sum of many delayed arrays as a tree of sums of at most 16 (no task holds them all)."""
    import dask

    while len(parts) > 1:
        parts = [dask.delayed(np.sum)(parts[i : i + 16], axis=0) for i in range(0, len(parts), 16)]
    return parts[0]


def _value_range(dtype: Any) -> tuple[int, int]:
    """``(offset, span)``: the smallest value of an integer type and how many values it has."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max) - int(info.min) + 1


def histogram_of_values(
    per_value: np.ndarray, dtype: Any, *, nbins: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, bin_centers)`` as :func:`histogram` gives them, from the pixel counts per
    value (entry ``v - dtype.min`` counting value ``v``) of an image of type ``dtype``: the
    range and the bins follow from the counts exactly."""
    offset, _ = _value_range(dtype)
    per_value = np.asarray(per_value)
    present = np.flatnonzero(per_value)
    values = (present + offset).astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=nbins, range=(lo, hi), weights=per_value[present])
    return counts.astype(np.int64), (edges[:-1] + edges[1:]) / 2


def histogram(
    image: Any, *, nbins: int = 256, runner: Runner | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the whole image with scikit-image's binning (``nbins`` over [min, max]).

    An image of 8- or 16-bit integers takes one pass: each chunk counts its pixels per value,
    and the range and the bins follow from the summed counts exactly (each value falls in the
    bin NumPy puts it in). Other types take two: the range, then the histogram.

    Returns
    -------
    counts, bin_centers : numpy.ndarray
        As ``skimage.exposure.histogram(image, nbins, source_range="image")`` on the whole image.
    """
    runner = runner or Runner()
    data = as_dask(image)
    if data.dtype.kind in "ui" and data.dtype.itemsize <= 2:
        import dask

        offset, span = _value_range(data.dtype)
        blocks = [dask.delayed(value_counts)(b, offset, span) for b in data.to_delayed().ravel()]
        per_value = np.asarray(runner.compute(_summed(blocks), "histogram"))
        return histogram_of_values(per_value, data.dtype, nbins=nbins)
    lo, hi = runner.compute(da.stack([data.min(), data.max()]), "range")
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError("histogram: the image contains NaN or infinite values")
    counts, edges = da.histogram(data, bins=nbins, range=(lo, hi))
    counts = np.asarray(runner.compute(counts, "histogram"))
    centers = (edges[:-1] + edges[1:]) / 2
    return counts, centers


def threshold_otsu(
    image: Any = None,
    *,
    nbins: int = 256,
    runner: Runner | None = None,
    hist: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """Otsu's threshold of the whole chunked image, from a distributed histogram.

    Equals ``skimage.filters.threshold_otsu(image, nbins=nbins)`` on the in-memory image.

    Parameters
    ----------
    image : dask.array.Array or xarray.DataArray, optional
        The image; not needed when ``hist`` is given.
    nbins : int
        Histogram bins over ``[min, max]``.
    runner : Runner, optional
        Where the histogram is computed.
    hist : (counts, bin_centers), optional
        A histogram from :func:`histogram`, so that one pass serves several uses.

    Raises
    ------
    ConfigError
        The image is constant (no threshold separates anything) or holds NaN.
    """
    if nbins < 2:
        raise ConfigError(f"threshold_otsu: nbins must be >= 2, got {nbins}")
    if hist is None:
        if image is None:
            raise ConfigError("threshold_otsu: give an image or a histogram")
        hist = histogram(image, nbins=nbins, runner=runner)
    counts, centers = hist
    if np.count_nonzero(counts) < 2:
        raise ConfigError("threshold_otsu: the image is constant, no threshold can be found")
    return float(skimage.filters.threshold_otsu(hist=(counts, centers)))


def minority_polarity(counts: np.ndarray, centers: np.ndarray, threshold: float) -> str:
    """``"bright"`` when fewer pixels lie above ``threshold`` than below it, else ``"dark"``.

    Particles cover less of a micrograph than their support, so the smaller side of a global
    threshold is the particles': bright on a dark support (SEM backscatter, HAADF), dark on a
    bright one (bright-field TEM).
    """
    above = int(np.asarray(counts)[np.asarray(centers) > threshold].sum())
    return "bright" if above < int(np.asarray(counts).sum()) - above else "dark"
