"""Gaussian smoothing of a chunked mosaic with an exact halo."""

from __future__ import annotations

import math
from typing import Any

from mosaicflow import dispatch
from mosaicflow._shared.arrays import as_dask, check_2d, like_input
from mosaicflow._shared.halo import MAX_HALO_PX, Overlapped, blockwise_exact
from mosaicflow._shared.validate import positive_number


def _gaussian_kernel(block: Any, *, sigma: float, truncate: float, mode: str) -> Any:
    gaussian_filter = dispatch.get("gaussian_filter", block)
    xp = dispatch.array_module(block)
    return gaussian_filter(
        block.astype(xp.float32, copy=False), sigma=sigma, truncate=truncate, mode=mode
    )


def gaussian_halo(sigma: float, truncate: float = 4.0) -> int:
    """The halo (pixels per side) :func:`gaussian_filter` reads around each chunk: SciPy's
    kernel radius ``ceil(truncate * sigma)``."""
    return math.ceil(truncate * sigma)


def gaussian_record(sigma: float) -> dict[str, Any]:
    """What :func:`gaussian_filter` records in a DataArray's ``attrs["denoise"]``."""
    return {"method": "gaussian", "sigma": float(sigma)}


def gaussian_filter(
    image: Any,
    *,
    sigma: float = 1.0,
    truncate: float = 4.0,
    mode: str = "reflect",
    max_halo: int = MAX_HALO_PX,
) -> Any:
    """Gaussian filter, equal to ``scipy.ndimage.gaussian_filter`` on the whole image.

    Parameters
    ----------
    image : dask.array.Array, xarray.DataArray, numpy.ndarray or Overlapped
        2-D image; NumPy or CuPy chunks. Blocks that already hold each chunk's halo
        (:class:`~mosaicflow._shared.halo.Overlapped`, from
        :func:`mosaicflow.stitch.fuse_overlapped`) are filtered as they are, with the same
        result.
    sigma : float
        Standard deviation in pixels (> 0).
    truncate : float
        The kernel reaches ``truncate * sigma`` pixels, as in SciPy.
    mode : str
        Edge handling at the image border (SciPy's ``mode``); chunk borders use a halo of real
        neighbouring pixels instead.
    max_halo : int
        Guard on the halo ``ceil(truncate * sigma)`` per side.

    Returns
    -------
    Same type as ``image`` (a Dask array for NumPy input)
        float32, lazy; a DataArray gets ``attrs["denoise"] = {"method": "gaussian", "sigma":
        sigma}``.

    Notes
    -----
    The halo is ``ceil(truncate * sigma)`` pixels per side; memory per task is about
    ``(chunk + 2 * halo)^2 * 4`` bytes. Chunks smaller than the halo are merged by Dask.
    Integer inputs keep their values (no rescaling).
    """
    check_2d(image, "gaussian_filter")
    sigma = positive_number(sigma, "gaussian_filter", "sigma")
    truncate = positive_number(truncate, "gaussian_filter", "truncate")
    depth = gaussian_halo(sigma, truncate)
    out = blockwise_exact(
        image if isinstance(image, Overlapped) else as_dask(image),
        _gaussian_kernel,
        (depth, depth),
        what="gaussian_filter",
        max_halo=max_halo,
        sigma=sigma,
        truncate=truncate,
        mode=mode,
    )
    return like_input(image, out, name="denoised", denoise=gaussian_record(sigma))
