"""SciPy's ``gaussian_filter`` on a 2-D NumPy image, computed with OpenCV's separable filter
over strips of rows: the CPU entry of the dispatch table's ``gaussian_filter``.

``scipy.ndimage.gaussian_filter`` filters along axis 0, stores that pass in the output's dtype,
then filters along axis 1, each pass summing in float64 (a symmetric kernel's taps paired).
OpenCV's ``sepFilter2D`` with a float64 destination does the same arithmetic with SIMD, so two
such passes, the first rounded to the image's dtype in between, give SciPy's result bit for bit
here (at most one unit in the last place wherever the summation order differs; tested). Run over
strips of :data:`STRIP_ROWS` rows (each read with the kernel's radius of rows around it), the
float64 intermediates stay in the CPU's cache: about 7 ms per Mpx against SciPy's 18 ms here.

Anything outside that (another dtype, a derivative ``order``, ``output``, an unsupported mode,
an image smaller than the kernel, or no OpenCV) goes to SciPy unchanged.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy import ndimage

from mosaicflow._shared import opencv

#: Rows per strip: the two float64 passes of a 2 kpx wide strip stay within a core's L2 cache.
STRIP_ROWS = 64

# SciPy's boundary modes that OpenCV's borders reproduce exactly (``constant`` with cval 0 only).
_BORDERS = {
    "reflect": "BORDER_REFLECT",
    "nearest": "BORDER_REPLICATE",
    "mirror": "BORDER_REFLECT_101",
    "constant": "BORDER_CONSTANT",
}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def kernel_1d(sigma: float, radius: int) -> np.ndarray:
    """SciPy's normalised 1-D Gaussian (``scipy.ndimage._filters._gaussian_kernel1d`` at order
    0), computed with the same operations so the weights are the same floats."""
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def _sigmas(sigma: Any) -> tuple[float, float] | None:
    values = np.ravel(np.asarray(sigma, dtype=np.float64))
    if values.size == 1:
        return float(values[0]), float(values[0])
    return (float(values[0]), float(values[1])) if values.size == 2 else None


def gaussian_filter(
    input: Any,
    sigma: Any,
    order: Any = 0,
    output: Any = None,
    mode: Any = "reflect",
    cval: float = 0.0,
    truncate: float = 4.0,
    **kwargs: Any,
) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter`` with SciPy's signature and result; see the module."""
    image = input
    sigmas = _sigmas(sigma)
    cv2 = opencv.module()
    fast = (
        cv2 is not None
        and isinstance(image, np.ndarray)
        and image.ndim == 2
        and image.dtype in _FLOATS
        and output is None
        and not kwargs
        and isinstance(order, numbers.Integral)
        and order == 0
        and isinstance(mode, str)
        and mode in _BORDERS
        and (cval == 0 or mode != "constant")
        and sigmas is not None
        and min(sigmas) > 0
    )
    if fast:
        assert sigmas is not None
        radii = [int(truncate * s + 0.5) for s in sigmas]
        # OpenCV's borders equal SciPy's modes where the kernel is shorter than the axis.
        fast = all(0 < r < n for r, n in zip(radii, image.shape, strict=True))
    if not fast:
        return ndimage.gaussian_filter(
            image,
            sigma,
            order=order,
            output=output,
            mode=mode,
            cval=cval,
            truncate=truncate,
            **kwargs,
        )
    assert sigmas is not None
    return _filter(cv2, np.ascontiguousarray(image), sigmas, radii, getattr(cv2, _BORDERS[mode]))


def _filter(
    cv2: Any, image: np.ndarray, sigmas: tuple[float, float], radii: list[int], border: int
) -> np.ndarray:
    ky, kx = (kernel_1d(s, r) for s, r in zip(sigmas, radii, strict=True))
    one = np.ones(1)
    h = image.shape[0]
    ry = radii[0]
    out = np.empty(image.shape, dtype=image.dtype)
    for y0 in range(0, h, STRIP_ROWS):
        y1 = min(h, y0 + STRIP_ROWS)
        s0, s1 = max(0, y0 - ry), min(h, y1 + ry)
        # Rows within the radius of a cut are computed from OpenCV's border and dropped: every
        # row kept sees its true neighbours, or the image's own border.
        down = cv2.sepFilter2D(image[s0:s1], cv2.CV_64F, one, ky, borderType=border)
        rows = down[y0 - s0 : y1 - s0].astype(image.dtype)
        out[y0:y1] = cv2.sepFilter2D(rows, cv2.CV_64F, kx, one, borderType=border)
    return out
