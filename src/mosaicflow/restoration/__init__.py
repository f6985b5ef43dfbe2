"""Denoising of mosaics, blockwise and equal to the whole-image SciPy/scikit-image call.

All functions accept a Dask array or an ``xarray.DataArray`` (NumPy or CuPy chunks) and return
the same kind, lazily, as float32 (integer inputs keep their values, no rescaling).
"""

from __future__ import annotations

from mosaicflow.restoration._halo import MAX_HALO_PX
from mosaicflow.restoration.gaussian import gaussian
from mosaicflow.restoration.median import median
from mosaicflow.restoration.nlm import nl_means, nl_means_halo
from mosaicflow.restoration.noise import estimate_sigma

__all__ = ["MAX_HALO_PX", "estimate_sigma", "gaussian", "median", "nl_means", "nl_means_halo"]
