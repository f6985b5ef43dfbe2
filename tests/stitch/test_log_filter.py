"""The registration pre-filter (OpenCV's separable filter, or FFTs) against its oracle, SciPy's
``gaussian_laplace``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mosaicflow._shared import opencv
from mosaicflow.stitch import log_filter


@pytest.fixture(params=["opencv", "fft"])
def way(request, monkeypatch):
    """Each test through both implementations (the FFTs are what runs without OpenCV)."""
    if request.param == "fft":
        monkeypatch.setattr(opencv, "module", lambda: None)
    elif opencv.module() is None:
        pytest.skip("OpenCV is not installed")
    return request.param


@pytest.mark.parametrize("shape", [(908, 328), (278, 1400), (37, 51), (5, 9), (1, 12)])
@pytest.mark.parametrize("sigma", [1.0, 0.6, 2.5])
def test_equals_scipy_everywhere_including_the_edges(shape, sigma, way):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 4096, size=shape).astype(np.uint16)
    expected = ndimage.gaussian_laplace(image.astype(np.float32), sigma)
    found = log_filter.gaussian_laplace(image, sigma)
    assert found.shape == image.shape and found.dtype == np.float32
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(found, expected, rtol=0, atol=2e-6 * scale)


def test_a_shifted_kernel_is_caught(way):
    """The comparison above resolves a one-pixel error in the filter's placement."""
    rng = np.random.default_rng(8)
    image = rng.normal(size=(64, 80)).astype(np.float32)
    expected = ndimage.gaussian_laplace(image, 1.0)
    found = np.roll(log_filter.gaussian_laplace(image, 1.0), 1, axis=1)
    assert np.abs(found - expected).max() > 1e-2 * np.abs(expected).max()


def test_radius_is_scipys(way):
    assert [log_filter.radius(s) for s in (0.1, 1.0, 1.5, 2.5)] == [0, 4, 6, 10]
    tiny = np.arange(12, dtype=np.float32).reshape(3, 4)  # radius 0: SciPy's own filter
    np.testing.assert_array_equal(
        log_filter.gaussian_laplace(tiny, 0.1), ndimage.gaussian_laplace(tiny, 0.1)
    )


def test_release_forgets_the_transfer_functions(monkeypatch):
    monkeypatch.setattr(opencv, "module", lambda: None)  # the FFTs' transfer functions
    image = np.ones((40, 30), dtype=np.float32)
    log_filter.gaussian_laplace(image, 1.0)
    assert log_filter._transfer.cache_info().currsize >= 1
    log_filter.release()
    assert log_filter._transfer.cache_info().currsize == 0
    np.testing.assert_allclose(
        log_filter.gaussian_laplace(image, 1.0), ndimage.gaussian_laplace(image, 1.0), atol=1e-5
    )
