"""The CPU Gaussian of the dispatch table against ``scipy.ndimage.gaussian_filter`` itself."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.ndimage import _filters as scipy_filters

from mosaicflow import dispatch
from mosaicflow.restoration import _gaussian_rows as rows

pytest.importorskip("cv2", reason="OpenCV is a dependency; without it SciPy answers")


def _image(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    return (rng.random(shape) * 255).astype(dtype)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7, (1.0, 2.5), 6.0])
@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror", "constant"])
@pytest.mark.parametrize("shape", [(300, 257), (64, 500), (65, 31), (150, 210)])
def test_equals_scipy(sigma, mode, shape):
    """Strip edges (64-row strips, a 65-row image), kernels wider than a strip's margin and
    per-axis sigmas: SciPy's float32 result, to at most one unit in the last place."""
    image = _image(shape, np.float32, seed=len(shape) + shape[0])
    got = rows.gaussian_filter(image, sigma, mode=mode)
    expected = ndi.gaussian_filter(image, sigma, mode=mode)
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_array_max_ulp(got, expected, maxulp=1)
    # one ulp only where the summation order differs: almost every pixel is the same float
    assert np.mean(got == expected) > 0.999


def test_equals_scipy_on_a_denoised_field(noisy):
    """The field the denoiser tests use, float64 as it comes and float32 as the pipeline
    filters it, and the 8-bit mosaic case (cast to float32 first, as the chunk kernel does)."""
    for image in (noisy, noisy.astype(np.float32), (noisy * 200).astype(np.uint8)):
        image = image.astype(np.float32) if image.dtype == np.uint8 else image
        got = rows.gaussian_filter(image, 1.0)
        np.testing.assert_array_max_ulp(got, ndi.gaussian_filter(image, 1.0), maxulp=1)


def test_kernel_is_scipys():
    for sigma, radius in ((1.0, 4), (0.7, 3), (2.5, 10)):
        np.testing.assert_array_equal(
            rows.kernel_1d(sigma, radius), scipy_filters._gaussian_kernel1d(sigma, 0, radius)
        )


@pytest.mark.parametrize(
    ("image", "kwargs"),
    [
        (_image((40, 50), np.uint8), {}),  # integer output: SciPy rounds each pass
        (_image((40, 50), np.float32), {"order": 1}),
        (_image((40, 50), np.float32), {"mode": "wrap"}),
        (_image((40, 50), np.float32), {"mode": "constant", "cval": 3.0}),
        (_image((6, 50), np.float32), {}),  # shorter than the kernel's radius
        (_image((4, 5, 6), np.float32), {}),
        (_image((40, 50), np.float32), {"output": np.float64}),
    ],
)
def test_other_cases_are_scipys_own(image, kwargs):
    sigma = 2.0
    got = rows.gaussian_filter(image, sigma, **kwargs)
    np.testing.assert_array_equal(got, ndi.gaussian_filter(image, sigma, **kwargs))


def test_non_contiguous_input():
    image = _image((200, 300), np.float32)
    view = image[::2, 10:250]
    np.testing.assert_array_max_ulp(
        rows.gaussian_filter(view, 1.5), ndi.gaussian_filter(view, 1.5), maxulp=1
    )
    fortran = np.asfortranarray(image)
    np.testing.assert_array_max_ulp(
        rows.gaussian_filter(fortran, 1.5), ndi.gaussian_filter(image, 1.5), maxulp=1
    )


def test_without_opencv_scipy_answers(monkeypatch):
    from mosaicflow._shared import opencv

    monkeypatch.setattr(opencv, "module", lambda: None)
    image = _image((70, 90), np.float32)
    np.testing.assert_array_equal(rows.gaussian_filter(image, 1.3), ndi.gaussian_filter(image, 1.3))


def test_dispatch_gives_it_for_numpy():
    assert dispatch.get("gaussian_filter", np.zeros((2, 2))) is rows.gaussian_filter
