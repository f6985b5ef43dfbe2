"""Gaussian smoothing of a chunked mosaic with an exact halo."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mosaicflow import dispatch
from mosaicflow._arrays import as_dask, check_2d, like_input
from mosaicflow.errors import ConfigError


def _gaussian_kernel(block: Any, *, sigma: float, truncate: float, mode: str) -> Any:
    gaussian_filter = dispatch.get("gaussian_filter", block)
    xp = dispatch.array_module(block)
    return gaussian_filter(block.astype(xp.float32), sigma=sigma, truncate=truncate, mode=mode)


def gaussian(
    image: Any, *, sigma: float = 1.0, truncate: float = 4.0, mode: str = "reflect"
) -> Any:
    """Gaussian filter of a chunked image, equal to ``scipy.ndimage.gaussian_filter`` on the whole.

    Parameters
    ----------
    image : dask.array.Array or xarray.DataArray
        2-D image; NumPy or CuPy chunks.
    sigma : float
        Standard deviation in pixels (> 0).
    truncate : float
        The kernel reaches ``truncate * sigma`` pixels, as in SciPy.
    mode : str
        Edge handling at the image border (SciPy's ``mode``); chunk borders use a halo of real
        neighbouring pixels instead.

    Returns
    -------
    Same type as ``image``
        float32, lazy.

    Notes
    -----
    The halo is ``ceil(truncate * sigma)`` pixels per side; memory per task is about
    ``(chunk + 2 * halo)^2 * 4`` bytes. Chunks smaller than the halo are merged by Dask.
    """
    check_2d(image, "gaussian")
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"gaussian: sigma must be a positive number of pixels, got {sigma!r}")
    if truncate <= 0:
        raise ConfigError(f"gaussian: truncate must be positive, got {truncate!r}")
    data = as_dask(image)
    depth = math.ceil(truncate * sigma)
    meta = dispatch.array_module(data).empty((0, 0), dtype=np.float32)
    out = data.map_overlap(
        _gaussian_kernel,
        depth=depth,
        boundary="none",
        dtype=np.float32,
        meta=meta,
        sigma=sigma,
        truncate=truncate,
        mode=mode,
    )
    return like_input(image, out, name="denoised", denoise={"method": "gaussian", "sigma": sigma})
