"""Per-particle Fourier features (Groschner et al. 2021), the kernel the particle table calls.

A particle crop is the intensity image over the particle's bounding box. Its pixels outside the
particle are set to the particle's mean intensity, so the mask outline adds little to the
spectrum; the crop is zero-mean, zero-padded to a square of side ``n`` and transformed. The
radially integrated amplitude spectrum ``P(k)`` (one value per integer radius ``k = 0 .. n//2``,
mean of ``|F|`` over the ring, summed with ``np.bincount``) gives three features:

* ``fft_mean``, ``fft_std``: mean and standard deviation of ``P`` over ``k = 1 .. n//2``,
  divided by the number of particle pixels (so that they do not grow with the crop);
* ``fft_com``: centre of mass of ``P`` over ``k = 1 .. n//2``, as a spatial frequency in cycles
  per pixel (``k / n``); lattice fringes pull it towards the fringe frequency.

and the real-space pair ``real_mean``, ``real_std`` (mean and standard deviation of the
intensity over the particle's pixels). Radial integration forgets direction, so these features
cannot tell a particle from its mirror image; the table's ``moments_hu-6`` (Hu's seventh
invariant, which changes sign under reflection) is the mirror-sensitive feature.

The particle table stores the three Fourier columns (:data:`FOURIER_COLUMNS`) only: the
real-space pair is the table's ``intensity_mean`` / ``intensity_std`` of the same image, and
the classifier derives ``real_mean`` / ``real_std`` from those
(``mosaicflow.classify.model.DERIVED_FEATURES``).

Units: ``fft_mean`` and ``fft_std`` are grey levels (a DFT amplitude sums grey levels over the
crop's pixels; it is divided by the number of particle pixels), ``fft_com`` is cycles per pixel
whatever the pixel size.
"""

from __future__ import annotations

import numpy as np

from mosaicflow.errors import ConfigError

#: The Fourier features the particle table stores.
FOURIER_COLUMNS: tuple[str, ...] = ("fft_mean", "fft_std", "fft_com")
#: Groschner et al.'s real-space pair: the table's ``intensity_mean`` / ``intensity_std``.
REAL_SPACE_FEATURES: tuple[str, ...] = ("real_mean", "real_std")
#: Groschner et al.'s five features, as :func:`fourier_features` returns them.
GROSCHNER_FEATURES: tuple[str, ...] = (*FOURIER_COLUMNS, *REAL_SPACE_FEATURES)


def radial_profile(image: np.ndarray) -> np.ndarray:
    """Mean of ``image`` over rings of integer radius around ``(h // 2, w // 2)``.

    ``np.bincount`` over the rounded radius of every pixel: one pass, no Python loop.
    Returns ``profile[k]`` for ``k = 0 .. max radius``.
    """
    h, w = image.shape
    yy, xx = np.indices((h, w))
    r = np.rint(np.hypot(yy - h // 2, xx - w // 2)).astype(np.intp).ravel()
    total = np.bincount(r, weights=image.ravel().astype(np.float64))
    count = np.bincount(r)
    return total / np.maximum(count, 1)


def fourier_features(
    crop: np.ndarray, mask: np.ndarray
) -> tuple[float, float, float, float, float]:
    """Groschner et al.'s five features of one particle: see the module docstring.

    Parameters
    ----------
    crop : ndarray, 2-D
        Intensities over the particle's bounding box.
    mask : ndarray of bool, same shape
        The particle's pixels.

    Returns
    -------
    tuple of float
        ``(fft_mean, fft_std, fft_com, real_mean, real_std)`` (:data:`GROSCHNER_FEATURES`);
        all NaN for an empty mask.

    Raises
    ------
    ConfigError
        ``crop`` is not 2-D or differs in shape from ``mask``.
    """
    crop = np.asarray(crop, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if crop.shape != mask.shape or crop.ndim != 2:
        raise ConfigError(f"fourier_features: crop {crop.shape} and mask {mask.shape} differ")
    n_px = int(mask.sum())
    if n_px == 0:
        nan = float("nan")
        return (nan, nan, nan, nan, nan)
    values = crop[mask]
    mean = float(values.mean())
    std = float(values.std())
    centred = np.where(mask, crop - mean, 0.0)
    side = max(crop.shape)
    padded = np.zeros((side, side))
    padded[: crop.shape[0], : crop.shape[1]] = centred
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(padded)))
    profile = radial_profile(amplitude)[1 : side // 2 + 1]
    if profile.size == 0:
        return (0.0, 0.0, 0.0, mean, std)
    freq = np.arange(1, profile.size + 1) / side
    total = float(profile.sum())
    com = float((freq * profile).sum() / total) if total > 0 else 0.0
    return (
        float(profile.mean()) / n_px,
        float(profile.std()) / n_px,
        com,
        mean,
        std,
    )


__all__ = [
    "FOURIER_COLUMNS",
    "GROSCHNER_FEATURES",
    "REAL_SPACE_FEATURES",
    "fourier_features",
    "radial_profile",
]
