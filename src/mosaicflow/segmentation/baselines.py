"""Classical segmentation baselines that a trained model is scored against: a Fourier band-pass
filter, a global Otsu threshold and connected components (after Groschner, Choi and Scott).

NumPy, SciPy and scikit-image only; deterministic; one whole in-memory image at a time.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from mosaicflow.errors import ConfigError

POLARITIES = ("auto", "bright", "dark")


def band_pass(image: np.ndarray, *, low_cut: float = 0.02, high_cut: float = 0.25) -> np.ndarray:
    """``image`` filtered in Fourier space by a smooth (Gaussian) band-pass.

    Parameters
    ----------
    image : ndarray
        2-D grey image, any real dtype.
    low_cut, high_cut : float
        Half-amplitude frequencies of the high-pass and the low-pass edge, as fractions of the
        Nyquist frequency (1.0 = a period of 2 px; a period of ``P`` px is ``2 / P``).

    Returns
    -------
    ndarray of float64
        The filtered image, same shape; its mean is 0.

    Notes
    -----
    The response is ``(1 - exp(-ln2 (f / low_cut)^2)) * exp(-ln2 (f / high_cut)^2)`` at the
    radial frequency ``f``: Gaussian edges do not ring around sharp particle borders as an ideal
    (box) band-pass does. Before the transform the image is extended on each side by about
    three widths of the high-pass's equivalent Gaussian blur (at most its own size) by odd
    reflection, so the FFT's wrap-around does not pair opposite borders and a background
    gradient does not leave a step at the image's edge.
    """
    img = np.asarray(image, dtype=np.float64)
    _check_cuts(low_cut, high_cut)
    # the high-pass equals subtracting a Gaussian blur of this sigma (in px)
    sigma_px = math.sqrt(math.log(2) / 2) / (math.pi * low_cut / 2)
    pad = [min(n - 1, math.ceil(3 * sigma_px)) for n in img.shape]
    # odd reflection continues a linear trend across the border, so a ramp is removed exactly
    padded = np.pad(img - img.mean(), [(p, p) for p in pad], mode="reflect", reflect_type="odd")
    shape = [sfft.next_fast_len(n, real=True) for n in padded.shape]
    spectrum = sfft.rfft2(padded, s=shape)
    fy = sfft.fftfreq(shape[0])[:, None] * 2.0  # in units of Nyquist
    fx = sfft.rfftfreq(shape[1])[None, :] * 2.0
    f2 = fy**2 + fx**2
    response = (1.0 - np.exp(-math.log(2) * f2 / low_cut**2)) * np.exp(
        -math.log(2) * f2 / high_cut**2
    )
    out = sfft.irfft2(spectrum * response, s=shape)
    return out[pad[0] : pad[0] + img.shape[0], pad[1] : pad[1] + img.shape[1]]


def fourier_instances(
    image: np.ndarray,
    *,
    low_cut: float = 0.02,
    high_cut: float = 0.25,
    polarity: str = "auto",
    min_size_px: int = 16,
) -> np.ndarray:
    """Particles of a micrograph by a Fourier band-pass, an Otsu threshold and connected
    components: the classical baseline of Groschner, Choi and Scott.

    Parameters
    ----------
    image : ndarray
        2-D grey image, any real dtype.
    low_cut : float
        Half-amplitude frequency of the high-pass, a fraction of the Nyquist frequency: slower
        variation (uneven illumination, support thickness, charging) is removed. The default
        0.02 (a period of 100 px; the same as subtracting a Gaussian blur of sigma 19 px) suits
        particles up to about 100 px across: keep it below about ``2 / D`` for particles of
        ``D`` px, and raise it towards that for a background that varies faster.
    high_cut : float
        Half-amplitude frequency of the low-pass, a fraction of the Nyquist frequency: faster
        variation (lattice fringes, shot noise) is removed. The default 0.25 (a period of 8 px)
        smooths over about 1.5 px; lower it for noisier images or coarser fringes.
    polarity : {"auto", "bright", "dark"}
        Whether particles are brighter or darker than their support; ``"auto"``: the minority
        side of the threshold, as particles cover less of a micrograph than their support.
    min_size_px : int
        Smaller components (in pixels) are dropped as noise.

    Returns
    -------
    ndarray of uint32
        Instance labels, 0 = background, ids 1..n in raster order of each particle's first
        pixel.

    Raises
    ------
    ConfigError
        ``image`` not 2-D or not finite, a cut outside ``0 < low_cut < high_cut <= 1``, an
        unknown ``polarity``, a negative ``min_size_px``.

    Notes
    -----
    Holes are filled after thresholding, because the high-pass lowers the middle of a particle
    about as wide as its cut. Touching particles stay one component: the baseline does no
    splitting.

    Examples
    --------
    >>> from mosaicflow.synth.sem import synth_field
    >>> image, truth, _ = synth_field((256, 256), snr=None, seed=1)
    >>> labels = fourier_instances(image)
    >>> labels.dtype, labels.shape
    (dtype('uint32'), (256, 256))
    """
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    img = np.asarray(image)
    if img.ndim != 2:
        raise ConfigError(f"fourier_instances: image must be 2-D, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise ConfigError(f"fourier_instances: image must be real numbers, got {img.dtype}")
    if not np.isfinite(img).all():
        raise ConfigError("fourier_instances: image has NaN or infinite pixels")
    if polarity not in POLARITIES:
        raise ConfigError(
            f"fourier_instances: polarity must be one of {POLARITIES}, got {polarity!r}"
        )
    if isinstance(min_size_px, bool) or not isinstance(min_size_px, int | np.integer):
        raise ConfigError(f"fourier_instances: min_size_px must be an integer, got {min_size_px!r}")
    if min_size_px < 0:
        raise ConfigError(f"fourier_instances: min_size_px must be >= 0, got {min_size_px}")
    filtered = band_pass(img, low_cut=low_cut, high_cut=high_cut)
    if np.ptp(filtered) <= 1e-12 * max(1.0, float(np.abs(img).max())):
        return np.zeros(img.shape, np.uint32)  # nothing but a flat field
    t = threshold_otsu(filtered)
    above = filtered > t
    if polarity == "auto":
        # the minority side, as segmentation.threshold.minority_polarity decides it
        polarity = "bright" if np.count_nonzero(above) < above.size / 2 else "dark"
    mask = above if polarity == "bright" else ~above
    mask = ndi.binary_fill_holes(mask)
    labels = label(mask, connectivity=1)
    if min_size_px > 1 and labels.max():
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size_px
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
            labels = label(labels > 0, connectivity=1)
    return labels.astype(np.uint32)


def _check_cuts(low_cut: float, high_cut: float) -> None:
    for name, v in (("low_cut", low_cut), ("high_cut", high_cut)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number (fraction of Nyquist), got {v!r}")
    if not 0.0 < low_cut < high_cut <= 1.0:
        raise ConfigError(
            f"low_cut and high_cut must satisfy 0 < low_cut < high_cut <= 1 (fractions of the "
            f"Nyquist frequency), got low_cut={low_cut}, high_cut={high_cut}"
        )


__all__ = ["POLARITIES", "band_pass", "fourier_instances"]
