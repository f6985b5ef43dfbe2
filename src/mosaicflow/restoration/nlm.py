"""Non-local means of a chunked mosaic, equal to scikit-image's ``denoise_nl_means``."""

from __future__ import annotations

from typing import Any

from mosaicflow import dispatch
from mosaicflow._shared.arrays import as_dask, check_2d, like_input
from mosaicflow._shared.halo import MAX_HALO_PX, blockwise_exact
from mosaicflow._shared.validate import odd_int, positive_number
from mosaicflow.errors import ConfigError


def _nl_means_kernel(
    block: Any, *, patch_size: int, patch_distance: int, h: float, fast_mode: bool, sigma: float
) -> Any:
    nlm = dispatch.get("denoise_nl_means", block)
    xp = dispatch.array_module(block)
    out = nlm(
        block.astype(xp.float32, copy=False),
        patch_size=patch_size,
        patch_distance=patch_distance,
        h=h,
        fast_mode=fast_mode,
        sigma=sigma,
        preserve_range=True,
        channel_axis=None,
    )
    return xp.asarray(out).astype(xp.float32, copy=False)


def nl_means_halo(patch_size: int, patch_distance: int) -> int:
    """Pixels per side that one output pixel of non-local means depends on."""
    return int(patch_distance) + int(patch_size) // 2


def denoise_nl_means(
    image: Any,
    *,
    patch_size: int = 5,
    patch_distance: int = 6,
    h: float,
    fast_mode: bool = True,
    sigma: float = 0.0,
    max_halo: int = MAX_HALO_PX,
) -> Any:
    """Non-local means, equal to ``skimage.restoration.denoise_nl_means`` on the whole image.

    Parameters
    ----------
    image : dask.array.Array, xarray.DataArray or numpy.ndarray
        2-D image; NumPy chunks run scikit-image's Cython kernel, CuPy chunks mosaicflow's
        array-API implementation of the same fast mode (:mod:`._nlm_array`).
    patch_size : int
        Odd side of the patches compared, in pixels.
    patch_distance : int
        Largest shift (pixels) between compared patches: the search window is
        ``(2 patch_distance + 1)^2``.
    h : float
        Cut-off distance in the image's intensity units (required: it depends on the data). With
        ``sigma`` given, scikit-image suggests ``h = 0.8 * sigma`` in fast mode.
    fast_mode : bool
        scikit-image's fast (integral-image) mode, the default; ``False`` runs the slower
        Gaussian-weighted patch distance (CPU only).
    sigma : float
        Noise standard deviation, in intensity units, subtracted from patch distances (0: none).
        :func:`mosaicflow.restoration.estimate_sigma` measures it over the whole mosaic.
    max_halo : int
        Guard on the halo ``patch_distance + patch_size // 2`` per side.

    Returns
    -------
    Same type as ``image`` (a Dask array for NumPy input)
        float32, lazy. Integer inputs keep their values (scikit-image's ``preserve_range=True``),
        so ``h`` and ``sigma`` are in grey levels. A DataArray gets ``attrs["denoise"]``: the
        method (``"nl_means"``) and the parameters used.

    Notes
    -----
    Each output pixel depends on pixels up to ``patch_distance + patch_size // 2`` away: that is
    the halo. The cost is ``(2 patch_distance + 1)^2 / 2`` shifted patch comparisons per pixel.
    """
    check_2d(image, "denoise_nl_means")
    patch_size = odd_int(patch_size, "denoise_nl_means", "patch_size")
    if (
        not isinstance(patch_distance, int)
        or isinstance(patch_distance, bool)
        or (patch_distance < 1)
    ):
        raise ConfigError(
            f"denoise_nl_means: patch_distance must be an integer >= 1, got {patch_distance!r}"
        )
    h = positive_number(h, "denoise_nl_means", "h")
    sigma = positive_number(sigma, "denoise_nl_means", "sigma", allow_zero=True)
    if not isinstance(fast_mode, bool):
        raise ConfigError(f"denoise_nl_means: fast_mode must be True or False, got {fast_mode!r}")
    data = as_dask(image)
    if patch_size > min(data.shape):
        raise ConfigError(
            f"denoise_nl_means: patch_size {patch_size} is larger than the image "
            f"{tuple(data.shape)}"
        )
    halo = nl_means_halo(patch_size, patch_distance)
    params = {
        "patch_size": patch_size,
        "patch_distance": patch_distance,
        "h": h,
        "sigma": sigma,
        "fast_mode": fast_mode,
    }
    out = blockwise_exact(
        data, _nl_means_kernel, (halo, halo), what="denoise_nl_means", max_halo=max_halo, **params
    )
    return like_input(image, out, name="denoised", denoise={"method": "nl_means", **params})
