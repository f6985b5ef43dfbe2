"""Accepting a Dask array or an xarray.DataArray and returning the same kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr


def as_dask(image: Any) -> da.Array:
    """The Dask array behind ``image`` (a Dask array, a DataArray, or an in-memory array)."""
    data = image.data if isinstance(image, xr.DataArray) else image
    if isinstance(data, da.Array):
        return data
    return da.from_array(np.asarray(data), chunks=1024)


def like_input(image: Any, result: da.Array, *, name: str, **attrs: Any) -> Any:
    """Wrap ``result`` like ``image``: a DataArray keeps dims, coords and attrs (plus ``attrs``)."""
    if isinstance(image, xr.DataArray):
        return xr.DataArray(
            result, dims=image.dims, coords=image.coords, name=name, attrs={**image.attrs, **attrs}
        )
    return result


def check_2d(image: Any, what: str) -> None:
    if getattr(image, "ndim", None) != 2:
        raise ValueError(f"{what}: expected a 2-D image, got shape {getattr(image, 'shape', None)}")


Kernel = Callable[..., Any]
