"""``denoise``: a method by name with plain keyword parameters, equal to the direct call; and
``to_storage_dtype`` against NumPy's rounding and clipping."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from mosaicflow.errors import ConfigError
from mosaicflow.restoration import (
    METHODS,
    denoise,
    denoise_nl_means,
    estimate_sigma,
    gaussian_filter,
    median_filter,
    to_storage_dtype,
)


@pytest.fixture
def mosaic(noisy):
    return xr.DataArray(
        da.from_array(noisy, chunks=(64, 96)),
        dims=("y", "x"),
        coords={"y": np.arange(noisy.shape[0]) * 2.0, "x": np.arange(noisy.shape[1]) * 2.0},
        attrs={"pixel_size_nm": [2.0, 2.0]},
    )


def test_every_configurable_method_runs(noisy):
    from mosaicflow.config import DENOISE_METHODS

    assert METHODS == DENOISE_METHODS
    image = da.from_array(noisy.astype(np.float32), chunks=64)
    for method in METHODS:
        out, info = denoise(image, method=method)
        assert info["method"] == method and out.dtype == np.float32


@pytest.mark.parametrize(
    ("method", "function", "params"),
    [
        ("gaussian", gaussian_filter, {}),
        ("gaussian", gaussian_filter, {"sigma": 2.0, "truncate": 3.0, "mode": "nearest"}),
        ("median", median_filter, {}),
        ("median", median_filter, {"size": (3, 5)}),
        ("nl_means", denoise_nl_means, {"h": 0.08, "sigma": 0.05, "patch_distance": 4}),
    ],
)
def test_each_method_equals_the_direct_call(mosaic, method, function, params):
    out, info = denoise(mosaic, method=method, **params)
    direct = function(mosaic, **params)
    assert info["method"] == method
    # The same graph (same keys): the same computation, not only the same values.
    assert out.data.name == direct.data.name
    np.testing.assert_array_equal(out.values, direct.values)
    assert out.attrs == direct.attrs


def test_default_method_is_gaussian_sigma_1(mosaic):
    out, info = denoise(mosaic)
    assert info == {"method": "gaussian"}
    assert out.data.name == gaussian_filter(mosaic, sigma=1.0).data.name


def test_nl_means_estimates_the_noise_and_h_when_not_given(mosaic):
    out, info = denoise(mosaic, method="nl_means", patch_size=3, h=None)
    noise = estimate_sigma(mosaic)
    assert info == {"method": "nl_means", "noise_sigma": noise, "h": 0.8 * noise}
    direct = denoise_nl_means(mosaic, patch_size=3, sigma=noise, h=0.8 * noise)
    np.testing.assert_array_equal(out.values, direct.values)
    _, info = denoise(mosaic, method="nl_means", sigma=0.0)
    assert info == {"method": "nl_means", "noise_sigma": 0.0, "h": 1e-6}


def test_none_converts_to_float32_only(mosaic, noisy):
    out, info = denoise(mosaic, method="none")
    assert info == {"method": "none"}
    assert isinstance(out, xr.DataArray) and out.dtype == np.float32
    assert out.attrs == mosaic.attrs
    np.testing.assert_array_equal(out.values, noisy.astype(np.float32))
    out, _ = denoise(noisy, method="none")  # NumPy in: lazy, like the filters
    assert isinstance(out, da.Array)


def test_numpy_input_gives_a_dask_array(noisy):
    out, _ = denoise(noisy, method="median")
    assert isinstance(out, da.Array)
    np.testing.assert_array_equal(out.compute(), median_filter(noisy).compute())


@pytest.mark.parametrize(
    ("method", "params", "match"),
    [
        ("bilateral", {}, r"method must be one of \['gaussian', 'median', 'nl_means', 'none'\]"),
        ("gaussian", {"size": 3}, r"'gaussian' takes no parameter \['size'\].*\['sigma', "),
        ("median", {"sigma": 1.0, "radius": 2}, r"\['radius', 'sigma'\].*'footprint'"),
        ("nl_means", {"noise_sigma": 0.1}, r"\['noise_sigma'\].*'patch_distance'"),
        ("none", {"sigma": 1.0}, r"'none' takes no parameter \['sigma'\]; its parameters are \[\]"),
    ],
)
def test_unknown_methods_and_parameters_name_the_valid_ones(mosaic, method, params, match):
    with pytest.raises(ConfigError, match=match):
        denoise(mosaic, method=method, **params)


def test_the_methods_own_checks_still_apply(mosaic):
    with pytest.raises(ConfigError, match="gaussian_filter: sigma"):
        denoise(mosaic, method="gaussian", sigma=-1.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize("kind", ["numpy", "dask", "dataarray"])
def test_to_storage_dtype_rounds_and_clips_like_numpy(dtype, kind):
    values = np.array(
        [[-40000.2, -3.7, -0.5, 0.5, 1.5, 2.5], [3.49, 254.5, 255.5, 300.2, 65535.5, 70000.0]],
        dtype=np.float32,
    )
    info = np.iinfo(dtype)
    expected = np.clip(np.round(values), info.min, info.max).astype(dtype)
    image = {
        "numpy": values,
        "dask": da.from_array(values, chunks=(1, 3)),
        "dataarray": xr.DataArray(da.from_array(values), dims=("y", "x"), attrs={"a": 1}),
    }[kind]
    out = to_storage_dtype(image, dtype)
    assert type(out) is type(image) and out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out), expected)
    if kind == "dataarray":
        assert out.attrs == {"a": 1}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float16"])
def test_to_storage_dtype_keeps_float_images_float32(dtype):
    values = np.array([[0.25, -1.75], [2.5, 1e6]])
    out = to_storage_dtype(values, dtype)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, values.astype(np.float32))
