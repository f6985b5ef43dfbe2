"""Median filter of a chunked mosaic (3x3 by default, any odd footprint) with an exact halo."""

from __future__ import annotations

from typing import Any

import numpy as np

from mosaicflow import dispatch
from mosaicflow._shared.arrays import as_dask, check_2d, like_input
from mosaicflow._shared.halo import MAX_HALO_PX, blockwise_exact
from mosaicflow._shared.validate import odd_int
from mosaicflow.errors import ConfigError


def _median_kernel(block: Any, *, size: Any, footprint: Any, mode: str) -> Any:
    median_filter = dispatch.get("median_filter", block)
    xp = dispatch.array_module(block)
    if footprint is not None:
        footprint = xp.asarray(footprint)
    return median_filter(
        block.astype(xp.float32, copy=False), size=size, footprint=footprint, mode=mode
    )


def median_filter(
    image: Any,
    *,
    size: int | tuple[int, int] = 3,
    footprint: Any = None,
    mode: str = "reflect",
    max_halo: int = MAX_HALO_PX,
) -> Any:
    """Median filter, equal to ``scipy.ndimage.median_filter`` on the whole image.

    Parameters
    ----------
    image : dask.array.Array, xarray.DataArray or numpy.ndarray
        2-D image; NumPy or CuPy chunks.
    size : int or (int, int)
        Odd side(s) of the rectangular window, in pixels (3: the 3x3 median used to pre-filter
        HRTEM). Ignored when ``footprint`` is given.
    footprint : array of bool, optional
        Any footprint with odd sides (a disk, a cross, ...).
    mode : str
        Edge handling at the mosaic border (SciPy's ``mode``); chunk borders use real pixels.
    max_halo : int
        Guard on the halo (half the footprint) per side.

    Returns
    -------
    Same type as ``image`` (a Dask array for NumPy input)
        float32, lazy; a DataArray gets ``attrs["denoise"]``: the method (``"median"``) and the
        window's sides. Integer inputs keep their values (no rescaling).
    """
    check_2d(image, "median_filter")
    if footprint is not None:
        fp = np.asarray(footprint)
        if fp.ndim != 2 or fp.dtype != bool or not fp.any():
            raise ConfigError(
                "median_filter: footprint must be a 2-D boolean array with at least one True, got "
                f"shape {fp.shape} dtype {fp.dtype}"
            )
        sides = tuple(int(n) for n in fp.shape)
        for side in sides:
            odd_int(side, "median_filter", "each footprint side")
        size_arg: Any = None
        footprint_arg: Any = fp
    else:
        sides_in = (size, size) if not isinstance(size, tuple | list) else tuple(size)
        if len(sides_in) != 2:
            raise ConfigError(f"median_filter: size must be an int or a pair of ints, got {size!r}")
        sides = tuple(odd_int(s, "median_filter", "size") for s in sides_in)
        size_arg, footprint_arg = sides, None
    data = as_dask(image)
    out = blockwise_exact(
        data,
        _median_kernel,
        (sides[0] // 2, sides[1] // 2),
        what="median_filter",
        max_halo=max_halo,
        size=size_arg,
        footprint=footprint_arg,
        mode=mode,
    )
    return like_input(image, out, name="denoised", denoise={"method": "median", "size": sides})
