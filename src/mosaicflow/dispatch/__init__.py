"""The single place where CPU or GPU implementations are chosen, by the type of a chunk.

NumPy chunks get SciPy / scikit-image; CuPy chunks get cupyx.scipy / cuCIM. The GPU modules are
registered lazily: they are imported only when a CuPy array is actually dispatched, so the CPU
install needs neither CuPy nor cuCIM, and nothing else in mosaicflow imports them.

Usage::

    gaussian_filter = dispatch.get("gaussian_filter", chunk)   # returns the function
    out = gaussian_filter(chunk, sigma=2.0)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from dask.utils import Dispatch

# name -> (CPU module path, GPU module path, attribute). One table instead of one hand-written
# registration per function.
_TABLE: dict[str, tuple[str, str, str]] = {
    # SciPy's result, computed with OpenCV where it can be (see the module); SciPy otherwise.
    "gaussian_filter": (
        "mosaicflow.restoration._gaussian_rows",
        "cupyx.scipy.ndimage",
        "gaussian_filter",
    ),
    "median_filter": ("scipy.ndimage", "cupyx.scipy.ndimage", "median_filter"),
    "uniform_filter": ("scipy.ndimage", "cupyx.scipy.ndimage", "uniform_filter"),
    "label": ("scipy.ndimage", "cupyx.scipy.ndimage", "label"),
    "generate_binary_structure": (
        "scipy.ndimage",
        "cupyx.scipy.ndimage",
        "generate_binary_structure",
    ),
    "gaussian_laplace": ("scipy.ndimage", "cupyx.scipy.ndimage", "gaussian_laplace"),
    "fft": ("scipy.fft", "cupyx.scipy.fft", "fft"),
    "rfft": ("scipy.fft", "cupyx.scipy.fft", "rfft"),
    "rfftn": ("scipy.fft", "cupyx.scipy.fft", "rfftn"),
    "irfftn": ("scipy.fft", "cupyx.scipy.fft", "irfftn"),
    "phase_cross_correlation": (
        "skimage.registration",
        "cucim.skimage.registration",
        "phase_cross_correlation",
    ),
    # cuCIM has no non-local means: the GPU entry is mosaicflow's own array-API implementation.
    "denoise_nl_means": (
        "skimage.restoration",
        "mosaicflow.restoration._nlm_array",
        "denoise_nl_means",
    ),
}

_dispatchers: dict[str, Dispatch] = {}


def _module_attr(module: str, attr: str) -> Callable[..., Any]:
    return getattr(importlib.import_module(module), attr)


def _make(name: str) -> Dispatch:
    cpu_module, gpu_module, attr = _TABLE[name]
    disp = Dispatch(name)
    disp.register(np.ndarray, lambda _x: _module_attr(cpu_module, attr))

    @disp.register_lazy("cupy")
    def _register_cupy() -> None:
        import cupy

        disp.register(cupy.ndarray, lambda _x: _module_attr(gpu_module, attr))

    return disp


def get(name: str, like: Any) -> Callable[..., Any]:
    """Return the implementation of ``name`` for arrays of the type of ``like``.

    Parameters
    ----------
    name : str
        A function name from the dispatch table (``gaussian_filter``, ``label``, ...).
    like : array
        A NumPy or CuPy array, or a Dask array (its ``_meta`` decides).

    Raises
    ------
    KeyError
        ``name`` is not in the dispatch table (the message lists the known names).
    TypeError
        No implementation is registered for the array type.
    """
    if name not in _TABLE:
        raise KeyError(f"no dispatched function {name!r}; known: {sorted(_TABLE)}")
    if name not in _dispatchers:
        _dispatchers[name] = _make(name)
    meta = getattr(like, "_meta", like)
    return _dispatchers[name](meta)


def array_module(like: Any) -> ModuleType:
    """Return ``numpy`` or ``cupy`` to match the type of ``like`` (a chunk or Dask array)."""
    meta = getattr(like, "_meta", like)
    if type(meta).__module__.split(".")[0] == "cupy":
        return importlib.import_module("cupy")
    return np


def to_host(x: Any) -> np.ndarray:
    """Copy a NumPy or CuPy array to host memory (an explicit device-to-host boundary)."""
    if hasattr(x, "get") and type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        cupy = importlib.import_module("cupy")
        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False
