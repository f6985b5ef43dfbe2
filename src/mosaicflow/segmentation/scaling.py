"""An image's intensity percentiles, the same whether it is in memory or chunked: how an
instance model's input is scaled (``(image - p_low) / (p_high - p_low)``, as in training).

Images of 8- or 16-bit integers are counted per value, so the percentiles equal
``numpy.percentile`` (linear interpolation) on the whole image exactly. Other types are counted
in 65,536 equal bins over ``[min, max]`` and interpolated within a bin: the same figure for any
chunking, within ``(max - min) / 65536`` of NumPy's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from mosaicflow._shared.arrays import as_dask
from mosaicflow.errors import ConfigError
from mosaicflow.runner import Runner

FLOAT_BINS = 65536


def _int_counts(block: np.ndarray, mask: np.ndarray | None, offset: int, span: int) -> np.ndarray:
    values = np.asarray(block).astype(np.int64) - offset
    if mask is not None:
        values = values[np.asarray(mask, bool)]
    return np.bincount(values.ravel(), minlength=span)


def _float_counts(block: np.ndarray, mask: np.ndarray | None, lo: float, hi: float) -> np.ndarray:
    values = np.asarray(block, np.float64)
    if mask is not None:
        values = values[np.asarray(mask, bool)]
    counts, _ = np.histogram(values, bins=FLOAT_BINS, range=(lo, hi))
    return counts


def _tree_sum(parts: list[Any]) -> Any:
    while len(parts) > 1:
        parts = [dask.delayed(np.sum)(parts[i : i + 16], axis=0) for i in range(0, len(parts), 16)]
    return parts[0]


def _from_counts(counts: np.ndarray, values: np.ndarray, q: Sequence[float]) -> list[float]:
    """Linear-interpolation percentiles of a sample given as ``counts`` of sorted ``values``."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    out = []
    for p in q:
        pos = float(p) / 100.0 * (n - 1)
        k = int(np.floor(pos))
        frac = pos - k
        a = values[np.searchsorted(cum, k, side="right")]
        b = values[np.searchsorted(cum, min(k + 1, n - 1), side="right")]
        out.append(float(a + frac * (b - a)))
    return out


def percentiles(
    image: Any,
    q: Sequence[float],
    *,
    mask: Any = None,
    runner: Runner | None = None,
) -> list[float]:
    """Percentiles ``q`` (0-100) of an image's pixels, or of those where ``mask`` is true.

    Parameters
    ----------
    image : numpy.ndarray, dask.array.Array or xarray.DataArray
    q : sequence of float
    mask : array of bool, optional
        Same shape; pixels outside it (e.g. no tile there) are not counted.
    runner : Runner, optional
        Where a chunked image's counts are computed.

    Returns
    -------
    list of float

    Raises
    ------
    ConfigError
        No pixel to count, or NaN/infinite values.
    """
    runner = runner or Runner()
    data = as_dask(image)
    chunks = data.chunks
    m = None if mask is None else as_dask(mask).rechunk(chunks)
    blocks = data.to_delayed().ravel()
    masks = [None] * len(blocks) if m is None else list(m.to_delayed().ravel())
    if data.dtype.kind in "ui" and data.dtype.itemsize <= 2:
        offset = int(np.iinfo(data.dtype).min)
        span = int(np.iinfo(data.dtype).max) - offset + 1
        parts = [
            dask.delayed(_int_counts)(b, k, offset, span)
            for b, k in zip(blocks, masks, strict=True)
        ]
        counts = np.asarray(runner.compute(_tree_sum(parts), "percentiles"))
        values = np.arange(span, dtype=np.float64) + offset
    else:
        sel = data if m is None else da.where(m, data, np.nan)
        lo, hi = runner.compute(da.stack([da.nanmin(sel), da.nanmax(sel)]), "range")
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ConfigError("percentiles: no pixel to count, or NaN/infinite values")
        if hi <= lo:
            return [lo for _ in q]
        parts = [
            dask.delayed(_float_counts)(b, k, lo, hi) for b, k in zip(blocks, masks, strict=True)
        ]
        counts = np.asarray(runner.compute(_tree_sum(parts), "percentiles"))
        edges = np.linspace(lo, hi, FLOAT_BINS + 1)
        values = (edges[:-1] + edges[1:]) / 2
    if counts.sum() == 0:
        raise ConfigError("percentiles: no pixel to count (the mask is empty)")
    keep = counts > 0
    return _from_counts(counts[keep], values[keep], q)
