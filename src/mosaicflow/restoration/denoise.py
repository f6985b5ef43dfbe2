"""A denoiser chosen by name with plain keyword parameters, and the dtype the result is stored in.

:func:`denoise` runs one of :data:`METHODS` with that method's own keyword parameters: those of
:func:`~mosaicflow.restoration.gaussian_filter` (``gaussian``),
:func:`~mosaicflow.restoration.median_filter` (``median``) and
:func:`~mosaicflow.restoration.denoise_nl_means` (``nl_means``, with the noise level estimated
over the whole mosaic unless given); ``none`` converts to float32 only. :func:`to_storage_dtype`
rounds the float32 result into the mosaic's integer type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from mosaicflow._shared.arrays import as_dask, check_2d
from mosaicflow._shared.halo import Overlapped
from mosaicflow._shared.validate import check_choice
from mosaicflow.config import DENOISE_METHODS
from mosaicflow.errors import ConfigError
from mosaicflow.restoration.gaussian import gaussian_filter
from mosaicflow.restoration.median import median_filter
from mosaicflow.restoration.nlm import denoise_nl_means
from mosaicflow.restoration.noise import estimate_sigma

_FILTERS: dict[str, Callable[..., Any]] = {
    "gaussian": gaussian_filter,
    "median": median_filter,
    "nl_means": denoise_nl_means,
}
#: The names of the denoising methods :func:`denoise` runs; the configuration, a foundation every
#: layer may import, holds the one list of them (``none`` passes the image through as float32).
METHODS: tuple[str, ...] = DENOISE_METHODS


def denoise_parameters(method: str) -> tuple[str, ...]:
    """The keyword parameters :func:`denoise` accepts for ``method``.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.

    Returns
    -------
    tuple of str
        The parameters of the method's function, in its order (none for ``none``).

    Raises
    ------
    ConfigError
        ``method`` is not one of :data:`METHODS`; the message lists them.
    """
    check_choice(method, "denoise", "method", METHODS)
    if method not in _FILTERS:
        return ()
    return tuple(p for p in inspect.signature(_FILTERS[method]).parameters if p != "image")


def denoise(image: Any, *, method: str = "gaussian", **params: Any) -> tuple[Any, dict[str, Any]]:
    """Denoise ``image`` with the method named ``method`` and its keyword parameters.

    Parameters
    ----------
    image : dask.array.Array, xarray.DataArray or numpy.ndarray
        2-D image; NumPy or CuPy chunks.
    method : {"gaussian", "median", "nl_means", "none"}
        The denoiser (:data:`METHODS`).
    **params
        The method's own keyword parameters, passed unchanged to its function:

        * ``gaussian``: those of :func:`~mosaicflow.restoration.gaussian_filter` (``sigma``,
          ``truncate``, ``mode``, ``max_halo``);
        * ``median``: those of :func:`~mosaicflow.restoration.median_filter` (``size``,
          ``footprint``, ``mode``, ``max_halo``);
        * ``nl_means``: those of :func:`~mosaicflow.restoration.denoise_nl_means`
          (``patch_size``, ``patch_distance``, ``h``, ``fast_mode``, ``sigma``, ``max_halo``),
          except that ``sigma`` omitted or None is the noise level estimated over the whole
          mosaic (:func:`~mosaicflow.restoration.estimate_sigma`, which computes), and ``h``
          omitted or None is ``0.8 * sigma`` (scikit-image's advice for the fast mode; at
          least 1e-6);
        * ``none``: no parameter.

    Returns
    -------
    denoised : same type as ``image`` (a Dask array for NumPy input)
        float32, lazy: exactly what the method's function returns for these parameters.
    info : dict
        What was used, for the run's record: ``{"method": method}``, plus ``noise_sigma`` and
        ``h`` (the values used) for ``nl_means``.

    Raises
    ------
    ConfigError
        An unknown ``method``, or a parameter the method does not take; the message names it
        and the valid ones. The method's own checks raise ConfigError too.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    >>> out, info = denoise(image, method="median", size=3)
    >>> info
    {'method': 'median'}
    >>> out.dtype, out.shape
    (dtype('float32'), (64, 64))
    """
    valid = denoise_parameters(method)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"denoise: method {method!r} takes no parameter {unknown}; its parameters are "
            f"{list(valid)}"
        )
    check_2d(image, "denoise")
    if isinstance(image, Overlapped) and method != "gaussian":
        image = image.core()  # the other methods read their halos their own ways
    if method == "none":
        data = image if isinstance(image, xr.DataArray) else as_dask(image)
        return data.astype(np.float32), {"method": "none"}
    if method == "nl_means":
        noise = params.get("sigma")
        if noise is None:
            noise = estimate_sigma(image)
        h = params.get("h")
        if h is None:
            h = max(0.8 * noise, 1e-6)
        out = denoise_nl_means(image, **{**params, "sigma": noise, "h": h})
        return out, {"method": "nl_means", "noise_sigma": noise, "h": h}
    return _FILTERS[method](image, **params), {"method": method}


def to_storage_dtype(image: Any, dtype: Any) -> Any:
    """``image`` rounded and clipped into the integer ``dtype`` it is to be stored in.

    Parameters
    ----------
    image : dask.array.Array, xarray.DataArray or numpy.ndarray
        A float image (a denoiser's output).
    dtype : numpy dtype or str
        The stored type, usually the mosaic's. A float (or other non-integer) dtype stores
        float32.

    Returns
    -------
    Same type as ``image``
        Values rounded half to even (``numpy.round``) and clipped to the range of ``dtype``,
        then cast; float32 for a non-integer ``dtype``. A DataArray keeps its attrs.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return image.astype(np.float32)
    info = np.iinfo(dtype)
    out = image.round().clip(info.min, info.max).astype(dtype)
    if isinstance(image, xr.DataArray):
        out.attrs.update(image.attrs)
    return out


__all__ = ["METHODS", "denoise", "denoise_parameters", "to_storage_dtype"]
