"""What every denoiser shares: dtype policy, DataArray in and out, laziness, parameter checks,
and the former names (deprecated aliases)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import xarray as xr

from mosaicflow import restoration
from mosaicflow.errors import ConfigError
from mosaicflow.restoration import denoise_nl_means, gaussian_filter, median_filter


def test_integer_input_keeps_its_values(noisy, skimage_nlm):
    """Policy: float32 out, integer values used as they are (scikit-image's preserve_range)."""
    grey = np.clip(np.rint(noisy * 200), 0, 255).astype(np.uint8)
    arr = da.from_array(grey, chunks=(40, 50))
    as_float = grey.astype(np.float32)
    np.testing.assert_allclose(
        gaussian_filter(arr, sigma=1.5).compute(), ndi.gaussian_filter(as_float, 1.5), atol=1e-4
    )
    np.testing.assert_array_equal(median_filter(arr).compute(), ndi.median_filter(as_float, 3))
    out = denoise_nl_means(arr, h=12.0, sigma=10.0).compute()
    assert out.dtype == np.float32
    expected = skimage_nlm(as_float, patch_size=5, patch_distance=6, h=12.0, sigma=10.0)
    # Grey levels up to 255: the tolerance scales with the range (see docs/DENOISING.md).
    np.testing.assert_allclose(out, expected, atol=255 * 1e-5, rtol=0)


def test_dataarray_in_dataarray_out(noisy):
    arr = xr.DataArray(
        da.from_array(noisy, chunks=50),
        dims=("y", "x"),
        coords={"y": np.arange(noisy.shape[0]) * 2.0, "x": np.arange(noisy.shape[1]) * 2.0},
        attrs={"pixel_size_nm": [2.0, 2.0]},
    )
    for out in (median_filter(arr), denoise_nl_means(arr, h=0.1), gaussian_filter(arr, sigma=1.0)):
        assert isinstance(out, xr.DataArray)
        assert isinstance(out.data, da.Array)
        assert out.attrs["pixel_size_nm"] == [2.0, 2.0]
        assert out.attrs["denoise"]["method"] in ("median", "nl_means", "gaussian")
        np.testing.assert_array_equal(out["y"], arr["y"])


def test_building_denoise_graphs_computes_nothing(no_compute, noisy):
    arr = da.from_array(noisy, chunks=40)
    with no_compute():
        median_filter(arr)
        denoise_nl_means(arr, h=0.1)
        gaussian_filter(arr, sigma=2.0)


def test_reach_beyond_the_image_is_exact(skimage_nlm):
    """A search window wider than the image: the axis is taken whole, still exact."""
    image = np.random.default_rng(3).random((12, 40)).astype(np.float32)
    out = denoise_nl_means(da.from_array(image, chunks=(6, 10)), patch_distance=15, h=0.2)
    out = out.compute()
    expected = skimage_nlm(image, patch_size=5, patch_distance=15, h=0.2)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: gaussian_filter(a, sigma=-1.0), "sigma"),
        (lambda a: median_filter(a, size=4), "size must be an odd"),
        (lambda a: median_filter(a, size=(3, 0)), "size must be an odd"),
        (lambda a: median_filter(a, footprint=np.ones((3, 4), bool)), "footprint side"),
        (lambda a: median_filter(a, footprint=np.ones((3, 3))), "boolean"),
        (lambda a: denoise_nl_means(a, h=0.1, patch_size=4), "patch_size must be an odd"),
        (lambda a: denoise_nl_means(a, h=0.1, patch_distance=0), "patch_distance"),
        (lambda a: denoise_nl_means(a, h=0.0), "h must be"),
        (lambda a: denoise_nl_means(a, h=float("nan")), "h must be"),
        (lambda a: denoise_nl_means(a, h=0.1, sigma=-0.1), "sigma must be"),
        (lambda a: denoise_nl_means(a, h=0.1, patch_size=99), "larger than the image"),
        (lambda a: denoise_nl_means(a, h=0.1, patch_distance=300), "halo of 302 px"),
        (lambda a: gaussian_filter(a, sigma=100.0), "max_halo=400"),
    ],
)
def test_invalid_parameters_get_clear_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call(da.zeros((64, 64), chunks=32, dtype=np.float32))


def test_max_halo_can_be_raised_explicitly():
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    out = gaussian_filter(da.from_array(image, chunks=20), sigma=100.0, max_halo=400).compute()
    np.testing.assert_allclose(out, ndi.gaussian_filter(image, 100.0), atol=1e-5)


@pytest.mark.parametrize(
    ("old", "new", "params"),
    [
        ("gaussian", gaussian_filter, {"sigma": 1.5}),
        ("median", median_filter, {"size": 5}),
        ("nl_means", denoise_nl_means, {"h": 0.1, "patch_distance": 3}),
    ],
)
def test_former_names_warn_and_forward(noisy, old, new, params):
    arr = da.from_array(noisy, chunks=50)
    with pytest.warns(
        DeprecationWarning, match=rf"restoration\.{old} is deprecated.*{new.__name__}"
    ):
        out = getattr(restoration, old)(arr, **params)
    np.testing.assert_array_equal(out.compute(), new(arr, **params).compute())
    assert old not in restoration.__all__
