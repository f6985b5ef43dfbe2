"""The Laplacian-of-Gaussian that registration compares, computed with OpenCV's separable
filter (or, without OpenCV, with one pair of real FFTs).

SciPy's ``gaussian_laplace`` runs four separable float32 passes with float64 sums (the second
derivative along each axis, the Gaussian along the other); on a registration strip of about
0.3 Mpx they cost about 7 ms. OpenCV's ``sepFilter2D`` runs each pair of passes in float32 with
SIMD: about 0.7 ms for a 908 x 240 strip (2.6 ms through FFTs), and closer to SciPy's result
than the FFTs (largest difference 3e-7 of the response's range against 4e-7; tested to 2e-6).
It is used where the kernel is shorter than the image (OpenCV's ``BORDER_REFLECT`` is then
SciPy's ``reflect``).

Through FFTs, the strip's spectrum is multiplied by the filter's transfer function, the image
first padded by the kernels' radius with SciPy's ``reflect`` rule (numpy's ``symmetric``), so
every output pixel sees exactly the neighbours SciPy's filter sees, and the FFT's wrap-around
touches only the padding.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft

from mosaicflow._shared import opencv

#: SciPy's default: the kernels reach ``truncate * sigma`` pixels.
TRUNCATE = 4.0


def radius(sigma: float, truncate: float = TRUNCATE) -> int:
    """Radius (px) of SciPy's Gaussian kernels at ``sigma``."""
    return int(truncate * float(sigma) + 0.5)


def _kernels(sigma: float, r: int) -> tuple[np.ndarray, np.ndarray]:
    """SciPy's 1-D Gaussian kernel and its second derivative at ``sigma``, taps ``-r..r``
    (both symmetric, so correlation and convolution agree)."""
    x = np.arange(-r, r + 1, dtype=np.float64)
    phi = np.exp(-0.5 * x * x / (sigma * sigma))
    phi /= phi.sum()
    return phi, phi * (x * x / sigma**4 - 1.0 / sigma**2)


def _response(kernel: np.ndarray, length: int, n_freq: int) -> np.ndarray:
    """Real DFT of a symmetric kernel centred on index 0 of a circle of ``length`` samples, at
    the first ``n_freq`` frequencies (real, since the kernel is even)."""
    r = len(kernel) // 2
    u = np.arange(n_freq, dtype=np.float64)[:, None]
    j = np.arange(1, r + 1, dtype=np.float64)[None, :]
    return kernel[r] + 2.0 * (np.cos(2.0 * np.pi * u * j / length) @ kernel[r + 1 :])


@functools.lru_cache(maxsize=4)
def _transfer(shape: tuple[int, int], sigma: float, r: int) -> np.ndarray:
    """The LoG's transfer function on an ``rfftn`` grid of ``shape`` (float32): the sum over
    the two axes of the second derivative along one and the Gaussian along the other."""
    g0, g2 = _kernels(sigma, r)
    n_x = shape[1] // 2 + 1
    a0, a2 = (_response(k, shape[0], shape[0]) for k in (g0, g2))
    b0, b2 = (_response(k, shape[1], n_x) for k in (g0, g2))
    return (np.outer(a2, b0) + np.outer(a0, b2)).astype(np.float32)


def release() -> None:
    """Forget the cached transfer functions (about 1.7 MB each for a registration strip): the
    tasks that register a batch of pairs call it when done, so a worker holds none of them in
    the stages after registration."""
    _transfer.cache_clear()


def gaussian_laplace(image: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_laplace(image, sigma)`` (mode ``reflect``, ``truncate=4``) of a
    2-D image, in float32: OpenCV's separable filter, or FFTs (module docstring)."""
    r = radius(sigma)
    if r < 1 or image.ndim != 2:
        from scipy import ndimage

        return ndimage.gaussian_laplace(image.astype(np.float32), sigma)
    cv2 = opencv.module()
    if cv2 is not None and min(image.shape) > r:
        g0, g2 = (k.astype(np.float32) for k in _kernels(float(sigma), r))
        pixels = np.ascontiguousarray(image, dtype=np.float32)
        out = cv2.sepFilter2D(pixels, cv2.CV_32F, g0, g2, borderType=cv2.BORDER_REFLECT)
        out += cv2.sepFilter2D(pixels, cv2.CV_32F, g2, g0, borderType=cv2.BORDER_REFLECT)
        return out
    padded = np.pad(image.astype(np.float32, copy=False), r, mode="symmetric")
    shape = tuple(sfft.next_fast_len(int(n), real=True) for n in padded.shape)
    spectrum = sfft.rfftn(padded, shape)
    spectrum *= _transfer(shape, float(sigma), r)
    out = sfft.irfftn(spectrum, shape)
    return out[r : r + image.shape[0], r : r + image.shape[1]]
