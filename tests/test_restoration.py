"""Denoisers: each equals the whole-image SciPy / scikit-image call for any chunking."""

from __future__ import annotations

import inspect

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.morphology
import skimage.restoration
import xarray as xr

from mosaicflow import dispatch, synth
from mosaicflow.errors import ConfigError
from mosaicflow.restoration import (
    _nlm_array,
    estimate_sigma,
    gaussian,
    median,
    nl_means,
    nl_means_halo,
)

# Whole image; ordinary; not aligned; smaller than the NLM halo (8 px) and the 5x5 median halo.
CHUNKINGS = [(1000, 1000), (64, 96), (37, 53), (5, 7)]


@pytest.fixture(scope="module")
def noisy():
    """A particle field at SNR ~7.5 (values about 0..1), the hard case of Zhang et al."""
    image, _labels, _particles = synth.synth_field((150, 210), snr=7.5, seed=11, density=150.0)
    return image


def _skimage_nlm(image, **kw):
    return skimage.restoration.denoise_nl_means(
        image.astype(np.float32), preserve_range=True, channel_axis=None, **kw
    ).astype(np.float32)


class _NoCompute(dask.callbacks.Callback):
    def _start(self, dsk):
        raise AssertionError("a graph was computed while it was being built")


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("size", [3, 5, (3, 7), (5, 1)])
def test_median_equals_scipy(noisy, chunks, size):
    out = median(da.from_array(noisy, chunks=chunks), size=size).compute()
    expected = ndi.median_filter(noisy.astype(np.float32), size=size, mode="reflect")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("chunks", [(64, 96), (5, 7)])
def test_median_footprint_equals_scipy(noisy, chunks):
    disk = skimage.morphology.disk(3).astype(bool)
    out = median(da.from_array(noisy, chunks=chunks), footprint=disk).compute()
    np.testing.assert_array_equal(out, ndi.median_filter(noisy, footprint=disk))


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize(
    "params",
    [
        {"patch_size": 5, "patch_distance": 6, "h": 0.08},
        {"patch_size": 3, "patch_distance": 4, "h": 0.05, "sigma": 0.08},
    ],
)
def test_nl_means_equals_skimage_fast_mode(noisy, chunks, params):
    out = nl_means(da.from_array(noisy, chunks=chunks), **params).compute()
    expected = _skimage_nlm(noisy, fast_mode=True, **params)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    # The comparison is not vacuous: the filter changed the image well beyond the tolerance.
    assert np.abs(out - noisy).max() > 0.05


@pytest.mark.parametrize("chunks", [(64, 96), (5, 7)])
def test_nl_means_slow_mode_equals_skimage(noisy, chunks):
    crop = noisy[:60, :80]
    params = {"patch_size": 3, "patch_distance": 2, "h": 0.08, "fast_mode": False}
    out = nl_means(da.from_array(crop, chunks=chunks), **params).compute()
    np.testing.assert_allclose(out, _skimage_nlm(crop, **params), atol=1e-5, rtol=0)


def test_integer_input_keeps_its_values(noisy):
    """Policy: float32 out, integer values used as they are (scikit-image's preserve_range)."""
    grey = np.clip(np.rint(noisy * 200), 0, 255).astype(np.uint8)
    arr = da.from_array(grey, chunks=(40, 50))
    as_float = grey.astype(np.float32)
    np.testing.assert_allclose(
        gaussian(arr, sigma=1.5).compute(), ndi.gaussian_filter(as_float, 1.5), atol=1e-4
    )
    np.testing.assert_array_equal(median(arr).compute(), ndi.median_filter(as_float, 3))
    out = nl_means(arr, h=12.0, sigma=10.0).compute()
    assert out.dtype == np.float32
    expected = _skimage_nlm(as_float, patch_size=5, patch_distance=6, h=12.0, sigma=10.0)
    # Grey levels up to 255: the tolerance scales with the range (see docs/DENOISING.md).
    np.testing.assert_allclose(out, expected, atol=255 * 1e-5, rtol=0)


def test_dataarray_in_dataarray_out(noisy):
    arr = xr.DataArray(
        da.from_array(noisy, chunks=50),
        dims=("y", "x"),
        coords={"y": np.arange(noisy.shape[0]) * 2.0, "x": np.arange(noisy.shape[1]) * 2.0},
        attrs={"pixel_size_nm": [2.0, 2.0]},
    )
    for out in (median(arr), nl_means(arr, h=0.1), gaussian(arr, sigma=1.0)):
        assert isinstance(out, xr.DataArray)
        assert isinstance(out.data, da.Array)
        assert out.attrs["pixel_size_nm"] == [2.0, 2.0]
        assert out.attrs["denoise"]["method"] in ("median", "nl_means", "gaussian")
        np.testing.assert_array_equal(out["y"], arr["y"])


def test_building_denoise_graphs_computes_nothing(noisy):
    arr = da.from_array(noisy, chunks=40)
    with _NoCompute():
        median(arr)
        nl_means(arr, h=0.1)
        gaussian(arr, sigma=2.0)


def test_reach_beyond_the_image_is_exact():
    """A search window wider than the image: the axis is taken whole, still exact."""
    image = np.random.default_rng(3).random((12, 40)).astype(np.float32)
    out = nl_means(da.from_array(image, chunks=(6, 10)), patch_distance=15, h=0.2).compute()
    expected = _skimage_nlm(image, patch_size=5, patch_distance=15, h=0.2)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.cluster
def test_nl_means_on_the_cluster(client, noisy):
    arr = da.from_array(noisy, chunks=(50, 70))
    out = client.compute(nl_means(arr, h=0.08)).result()
    expected = _skimage_nlm(noisy, patch_size=5, patch_distance=6, h=0.08, fast_mode=True)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


# --- the array-API non-local means (the GPU path), run here on NumPy -------------------------


@pytest.mark.parametrize(
    ("patch_size", "patch_distance", "h", "sigma"),
    [(5, 6, 0.08, 0.0), (3, 2, 0.05, 0.08), (7, 4, 0.2, 0.05), (4, 3, 0.1, 0.0), (5, 30, 0.1, 0)],
)
def test_array_nl_means_equals_skimage(noisy, patch_size, patch_distance, h, sigma):
    crop = noisy[:70, :90]
    out = _nlm_array.denoise_nl_means(
        crop, patch_size, patch_distance, h, True, sigma, preserve_range=True
    )
    expected = skimage.restoration.denoise_nl_means(
        crop,
        patch_size=patch_size,
        patch_distance=patch_distance,
        h=h,
        sigma=sigma,
        fast_mode=True,
        preserve_range=True,
    )
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


def test_fast_exp_is_schraudolphs_approximation():
    y = -np.linspace(0, 5, 1001)
    approx = _nlm_array.fast_exp(y)
    rel = np.abs(approx - np.exp(y)) / np.exp(y)
    # Within its published few-percent error, and not the true exponential.
    assert rel.max() < 0.045
    assert rel.max() > 0.01


def test_gpu_nl_means_entry_is_the_array_implementation():
    """The dispatch table's GPU NLM resolves to mosaicflow's module, with scikit-image's
    signature (so the blockwise kernel calls both the same way)."""
    _cpu, gpu_mod, _attr = dispatch._TABLE["denoise_nl_means"]
    assert gpu_mod == "mosaicflow.restoration._nlm_array"
    ours = inspect.signature(_nlm_array.denoise_nl_means).parameters
    theirs = inspect.signature(skimage.restoration.denoise_nl_means).parameters
    assert set(ours) == set(theirs)


def test_array_nl_means_refuses_what_it_does_not_do():
    with pytest.raises(ConfigError, match="fast_mode=False"):
        _nlm_array.denoise_nl_means(np.zeros((8, 8)), fast_mode=False)
    with pytest.raises(ConfigError, match="preserve_range"):
        _nlm_array.denoise_nl_means(np.zeros((8, 8), dtype=np.uint8))


# --- noise estimate over the whole mosaic -------------------------------------------------


def test_estimate_sigma_of_pure_noise():
    noise = np.random.default_rng(1).normal(0.5, 0.05, (700, 900)).astype(np.float32)
    est = estimate_sigma(da.from_array(noise, chunks=256))
    assert est == pytest.approx(0.05, rel=0.02)


def test_estimate_sigma_matches_skimage_on_a_particle_field():
    image, _, _ = synth.synth_field((768, 768), snr=10.0, seed=1)
    whole = skimage.restoration.estimate_sigma(image)
    est = estimate_sigma(da.from_array(image, chunks=200), n_samples=16, sample_size=128)
    assert est == pytest.approx(whole, rel=0.03)
    # Reproducible for a seed.
    assert est == estimate_sigma(da.from_array(image, chunks=50), n_samples=16, sample_size=128)


def test_estimate_sigma_samples_the_whole_mosaic():
    """Left half quiet, right half noisy: the estimate lies between, unlike either chunk's."""
    rng = np.random.default_rng(2)
    image = np.concatenate(
        [rng.normal(0, 0.02, (512, 512)), rng.normal(0, 0.06, (512, 512))], axis=1
    ).astype(np.float32)
    est = estimate_sigma(da.from_array(image, chunks=512), n_samples=16, sample_size=128)
    assert 0.025 < est < 0.055


def test_estimate_sigma_ignores_uncovered_area():
    rng = np.random.default_rng(4)
    image = rng.normal(0.5, 0.04, (512, 512)).astype(np.float32)
    image[:256] = 0.0  # a missing tile's uncovered area
    est = estimate_sigma(da.from_array(image, chunks=128), n_samples=64, sample_size=64)
    assert est == pytest.approx(0.04, rel=0.03)


def test_estimate_sigma_rejects_constant_image():
    with pytest.raises(ConfigError, match="constant"):
        estimate_sigma(da.zeros((64, 64), chunks=32))


# --- invalid parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: gaussian(a, sigma=-1.0), "sigma"),
        (lambda a: median(a, size=4), "size must be an odd"),
        (lambda a: median(a, size=(3, 0)), "size must be an odd"),
        (lambda a: median(a, footprint=np.ones((3, 4), bool)), "footprint side"),
        (lambda a: median(a, footprint=np.ones((3, 3))), "boolean"),
        (lambda a: nl_means(a, h=0.1, patch_size=4), "patch_size must be an odd"),
        (lambda a: nl_means(a, h=0.1, patch_distance=0), "patch_distance"),
        (lambda a: nl_means(a, h=0.0), "h must be"),
        (lambda a: nl_means(a, h=float("nan")), "h must be"),
        (lambda a: nl_means(a, h=0.1, sigma=-0.1), "sigma must be"),
        (lambda a: nl_means(a, h=0.1, patch_size=99), "larger than the image"),
        (lambda a: nl_means(a, h=0.1, patch_distance=300), "halo of 302 px"),
        (lambda a: gaussian(a, sigma=100.0), "max_halo=400"),
    ],
)
def test_invalid_parameters_get_clear_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call(da.zeros((64, 64), chunks=32, dtype=np.float32))


def test_max_halo_can_be_raised_explicitly():
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    out = gaussian(da.from_array(image, chunks=20), sigma=100.0, max_halo=400).compute()
    np.testing.assert_allclose(out, ndi.gaussian_filter(image, 100.0), atol=1e-5)


def test_nl_means_halo():
    assert nl_means_halo(5, 6) == 8
