"""Blockwise stages against their whole-image SciPy / scikit-image oracles, over many chunkings."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.filters
import xarray as xr

from mosaicflow import synth
from mosaicflow.errors import ConfigError
from mosaicflow.measure import label, regionprops_table
from mosaicflow.restoration import gaussian
from mosaicflow.segmentation import threshold_otsu

CHUNKINGS = [(1000, 1000), (128, 128), (37, 53), (9, 250)]


@pytest.fixture(scope="module")
def field():
    image, labels, particles = synth.synth_field(
        (240, 330), snr=12.0, seed=5, density=150.0, touching_fraction=0.2, agglomerate_fraction=0.1
    )
    assert len(particles) >= 20
    return image, labels, particles


class _NoCompute(dask.callbacks.Callback):
    def _start(self, dsk):
        raise AssertionError("a graph was computed while it was being built")


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("sigma", [0.7, 2.5])
def test_gaussian_equals_scipy(field, chunks, sigma):
    image = field[0]
    out = gaussian(da.from_array(image, chunks=chunks), sigma=sigma).compute()
    expected = ndi.gaussian_filter(image.astype(np.float32), sigma=sigma)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


def test_gaussian_keeps_dataarray():
    arr = xr.DataArray(
        da.ones((20, 30), chunks=10),
        dims=("y", "x"),
        coords={"y": np.arange(20) * 2.0, "x": np.arange(30) * 2.0},
        attrs={"pixel_size_nm": [2.0, 2.0]},
    )
    out = gaussian(arr, sigma=1.0)
    assert isinstance(out, xr.DataArray) and out.attrs["pixel_size_nm"] == [2.0, 2.0]
    np.testing.assert_array_equal(out["x"], arr["x"])


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan")])
def test_gaussian_rejects_bad_sigma(sigma):
    with pytest.raises(ConfigError, match="sigma"):
        gaussian(da.zeros((8, 8), chunks=4), sigma=sigma)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_otsu_from_distributed_histogram_equals_skimage(field, chunks):
    image = ndi.gaussian_filter(field[0], 1.0)
    # scikit-image keeps float32 bin centres for a float32 image; we keep float64
    assert threshold_otsu(da.from_array(image, chunks=chunks)) == pytest.approx(
        skimage.filters.threshold_otsu(image, nbins=256), abs=0, rel=1e-6
    )
    image64 = image.astype(np.float64)
    assert threshold_otsu(da.from_array(image64, chunks=chunks)) == pytest.approx(
        skimage.filters.threshold_otsu(image64, nbins=256), abs=0, rel=1e-12
    )


def test_otsu_rejects_constant_and_nan():
    with pytest.raises(ValueError, match="constant"):
        threshold_otsu(da.ones((10, 10), chunks=5))
    image = np.ones((10, 10))
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        threshold_otsu(da.from_array(image, chunks=5))


def test_building_graphs_computes_nothing(small_grid):
    from mosaicflow.io import read_tileset
    from mosaicflow.stitch import fuse

    tiles = read_tileset(small_grid.folder)
    with _NoCompute():
        mosaic = fuse(tiles, chunks=128)
        den = gaussian(mosaic, sigma=1.5)
        labels = label(den > 100)
        regionprops_table(labels, den)
