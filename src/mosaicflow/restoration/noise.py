"""Noise level of a whole mosaic, estimated from windows sampled across it."""

from __future__ import annotations

import math
from typing import Any

import dask
import numpy as np

from mosaicflow import dispatch
from mosaicflow._shared.arrays import as_dask, check_2d
from mosaicflow.errors import ConfigError

# Daubechies-2 high-pass decomposition filter, from its closed form.
_SQRT3 = math.sqrt(3.0)
_DB2_HIGH = np.array([-(1 + _SQRT3), 3 + _SQRT3, -(3 - _SQRT3), 1 - _SQRT3]) / (4 * math.sqrt(2))
# Median absolute deviation of a standard normal variable.
_MAD_NORMAL = 0.6744897501960817


def _diagonal_detail(window: np.ndarray) -> np.ndarray:
    """Finest diagonal (high-high) db2 wavelet coefficients of the window's interior."""
    x = window.astype(np.float64)
    taps = len(_DB2_HIGH)
    rows = sum(_DB2_HIGH[k] * x[k : x.shape[0] - taps + 1 + k] for k in range(taps))[1::2]
    both = sum(_DB2_HIGH[k] * rows[:, k : rows.shape[1] - taps + 1 + k] for k in range(taps))
    return np.asarray(both[:, 1::2]).ravel()


def _window_detail(window: Any) -> np.ndarray:
    host = dispatch.to_host(window)
    if host.size == 0 or not np.isfinite(host).all() or host.min() == host.max():
        # Flat windows (uncovered mosaic area) or windows with NaN say nothing about the noise.
        return np.empty(0)
    return np.abs(_diagonal_detail(host))


def sample_windows(
    shape: tuple[int, int], *, n_samples: int, size: int, seed: int
) -> list[tuple[slice, slice]]:
    """Up to ``n_samples`` distinct ``size``-px windows on a grid covering the whole image."""
    height, width = (int(v) for v in shape)
    sy, sx = min(size, height), min(size, width)
    ys = np.arange(0, height - sy + 1, sy)
    xs = np.arange(0, width - sx + 1, sx)
    cells = [(int(y), int(x)) for y in ys for x in xs]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(cells), size=min(n_samples, len(cells)), replace=False)
    return [
        (slice(cells[i][0], cells[i][0] + sy), slice(cells[i][1], cells[i][1] + sx))
        for i in sorted(chosen)
    ]


def estimate_sigma(
    image: Any, *, n_samples: int = 64, sample_size: int = 256, seed: int = 0
) -> float:
    """Standard deviation of Gaussian noise, estimated over the whole mosaic (computes).

    The estimator is scikit-image's ``estimate_sigma`` (Donoho & Johnstone's wavelet MAD: the
    median absolute finest-scale diagonal db2 coefficient over 0.6745), pooled over
    ``n_samples`` windows of ``sample_size`` px drawn at random from a grid tiling the whole
    mosaic, so one chunk or one corner does not decide it. Flat windows (uncovered area of missing
    tiles) are skipped.

    Parameters
    ----------
    image : dask.array.Array or xarray.DataArray
        2-D image.
    n_samples : int
        Windows to sample (all of them if the grid has fewer).
    sample_size : int
        Side of each window in pixels (at least 16).
    seed : int
        Seeds the choice of windows: the estimate is reproducible.

    Returns
    -------
    float
        Noise standard deviation in the image's intensity units.

    Raises
    ------
    ConfigError
        Bad parameters, or no window with any variation (a constant image).
    """
    check_2d(image, "estimate_sigma")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"estimate_sigma: n_samples must be an integer >= 1, got {n_samples!r}")
    if not isinstance(sample_size, int) or sample_size < 16:
        raise ConfigError(
            f"estimate_sigma: sample_size must be an integer >= 16, got {sample_size!r}"
        )
    data = as_dask(image)
    if min(data.shape) < 8:
        raise ConfigError(f"estimate_sigma: image {tuple(data.shape)} is too small (< 8 px)")
    windows = sample_windows(data.shape, n_samples=n_samples, size=sample_size, seed=seed)
    parts = [dask.delayed(_window_detail)(data[w]) for w in windows]
    details = dask.compute(*parts)
    pooled = np.concatenate(details)
    if pooled.size == 0:
        raise ConfigError(
            "estimate_sigma: every sampled window is constant or holds NaN; "
            "the image carries no measurable noise"
        )
    return float(np.median(pooled) / _MAD_NORMAL)
