"""Denoising of mosaics, blockwise and equal to the whole-image SciPy / scikit-image call.

The filters keep SciPy's and scikit-image's names: :func:`gaussian_filter`,
:func:`median_filter`, :func:`denoise_nl_means`. Each takes a Dask array, an
``xarray.DataArray`` (NumPy or CuPy chunks) or a NumPy array and returns the same kind lazily (a
Dask array for NumPy input), as float32; integer inputs keep their values (no rescaling).
:func:`denoise` runs one of them by its :data:`METHODS` name with plain keyword parameters,
:func:`estimate_sigma` measures the noise level over the whole mosaic, and
:func:`to_storage_dtype` rounds a result into the mosaic's integer type.

``gaussian``, ``median`` and ``nl_means`` are the filters' former names, kept for one release:
they warn (``DeprecationWarning``) and call the new ones.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from mosaicflow._shared.halo import MAX_HALO_PX
from mosaicflow.restoration.denoise import METHODS, denoise, denoise_parameters, to_storage_dtype
from mosaicflow.restoration.gaussian import gaussian_filter, gaussian_halo, gaussian_record
from mosaicflow.restoration.median import median_filter
from mosaicflow.restoration.nlm import denoise_nl_means, nl_means_halo
from mosaicflow.restoration.noise import estimate_sigma


def _deprecated_alias(func: Callable[..., Any], old: str) -> Callable[..., Any]:
    """``func`` under its former name ``old``, warning at each call."""

    @functools.wraps(func)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"mosaicflow.restoration.{old} is deprecated and will be removed in the next "
            f"release; use mosaicflow.restoration.{func.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return func(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{func.__name__}`, removed in the next release."
    return alias


# Bound after the submodules are imported: ``gaussian`` and ``median`` are also module names.
gaussian = _deprecated_alias(gaussian_filter, "gaussian")
median = _deprecated_alias(median_filter, "median")
nl_means = _deprecated_alias(denoise_nl_means, "nl_means")

__all__ = [
    "MAX_HALO_PX",
    "METHODS",
    "denoise",
    "denoise_nl_means",
    "denoise_parameters",
    "estimate_sigma",
    "gaussian_filter",
    "gaussian_halo",
    "gaussian_record",
    "median_filter",
    "nl_means_halo",
    "to_storage_dtype",
]
