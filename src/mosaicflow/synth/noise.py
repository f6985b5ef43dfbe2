"""Detector noise of every synthetic mode: Gaussian read noise plus Poisson shot noise, at a
level set by a signal-to-noise ratio."""

from __future__ import annotations

import math

import numpy as np

from mosaicflow.errors import ConfigError

__all__ = ["add_noise", "noise_sigma", "noisy_field"]


def add_noise(
    image: np.ndarray,
    *,
    sigma: float,
    rng: np.random.Generator,
    shot_fraction: float = 0.5,
    mean_level: float | None = None,
) -> np.ndarray:
    """Add Gaussian read noise plus Poisson shot noise of total standard deviation ``sigma``.

    The shot part has variance ``alpha * image`` with ``alpha = shot_fraction * sigma**2 /
    mean_level`` and the Gaussian part variance ``(1 - shot_fraction) * sigma**2``, so the noise
    std over an image whose mean is ``mean_level`` is ``sigma``.

    Parameters
    ----------
    image : ndarray
        Clean, non-negative image.
    sigma : float
        Target total noise standard deviation (0 returns a float64 copy).
    rng : numpy.random.Generator
        Source of randomness.
    shot_fraction : float
        Share of the noise variance that is shot noise, in [0, 1].
    mean_level : float, optional
        Level at which the variances are balanced; the image mean by default.

    Returns
    -------
    ndarray of float64
    """
    out = np.asarray(image, dtype=np.float64)
    if not 0.0 <= shot_fraction <= 1.0:
        raise ConfigError(f"shot_fraction must be in [0, 1], got {shot_fraction}")
    if sigma <= 0:
        return out.copy()
    level = float(out.mean()) if mean_level is None else float(mean_level)
    noisy = out.copy()
    if shot_fraction > 0 and level > 0:
        alpha = shot_fraction * sigma * sigma / level
        noisy = alpha * rng.poisson(np.maximum(out, 0.0) / alpha).astype(np.float64)
    gauss_sd = math.sqrt((1.0 - shot_fraction) * sigma * sigma)
    if gauss_sd > 0:
        noisy += rng.normal(0.0, gauss_sd, size=out.shape)
    return noisy


def noise_sigma(snr: float | None, mean_signal: float) -> float:
    """Noise standard deviation that gives ``mean_signal / sigma == snr``.

    Parameters
    ----------
    snr : float or None
        Requested signal-to-noise ratio; ``None`` or ``inf``: no noise.
    mean_signal : float
        Mean particle signal the ratio refers to.

    Returns
    -------
    float
        ``mean_signal / snr``, or 0 without noise.

    Raises
    ------
    ConfigError
        ``snr`` is not positive.
    """
    if snr is None or math.isinf(snr):
        return 0.0
    if not snr > 0:
        raise ConfigError(f"snr must be positive, None or inf, got {snr}")
    return mean_signal / snr


def noisy_field(
    clean: np.ndarray,
    *,
    snr: float | None,
    mean_signal: float,
    rng: np.random.Generator,
    shot_fraction: float,
) -> np.ndarray:
    """A clean field plus noise at a signal-to-noise ratio, as float32.

    Parameters
    ----------
    clean : ndarray
        Clean, non-negative image.
    snr, mean_signal : float
        The noise level, as in :func:`noise_sigma`.
    rng : numpy.random.Generator
        Source of the noise.
    shot_fraction : float
        Share of the noise variance that is shot noise (see :func:`add_noise`).

    Returns
    -------
    ndarray of float32
    """
    sigma = noise_sigma(snr, mean_signal)
    return add_noise(clean, sigma=sigma, rng=rng, shot_fraction=shot_fraction).astype(np.float32)
