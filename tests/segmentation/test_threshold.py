"""Blockwise stages against their whole-image SciPy / scikit-image oracles, over many chunkings."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.filters

from mosaicflow import synth
from mosaicflow.segmentation import threshold_otsu

CHUNKINGS = [(1000, 1000), (128, 128), (37, 53), (9, 250)]


@pytest.fixture(scope="module")
def field():
    image, labels, particles = synth.synth_field(
        (240, 330), snr=12.0, seed=5, density=150.0, touching_fraction=0.2, agglomerate_fraction=0.1
    )
    assert len(particles) >= 20
    return image, labels, particles


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


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int8"])
@pytest.mark.parametrize("nbins", [256, 100, 7])
def test_one_pass_integer_histogram_equals_the_two_pass_one(dtype, nbins):
    """8- and 16-bit images take one pass of per-value counts; the oracle is NumPy's histogram
    over [min, max] of the whole image (what the float path computes chunk by chunk)."""
    from mosaicflow.segmentation.threshold import histogram

    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    image = rng.integers(max(info.min, -3000), min(info.max, 3000), size=(300, 333), endpoint=True)
    image = image.astype(dtype)
    counts, centers = histogram(da.from_array(image, chunks=(64, 90)), nbins=nbins)
    expected, edges = np.histogram(image, bins=nbins, range=(image.min(), image.max()))
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(centers, (edges[:-1] + edges[1:]) / 2)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("shape", [(0,), (1,), (7, 5), (64, 90), (257, 3)])
@pytest.mark.parametrize("way", ["opencv", "byte pairs"])
def test_value_counts_of_8_bit_blocks_equal_bincount(dtype, shape, way, monkeypatch):
    """8-bit blocks are counted by OpenCV's histogram, or (above 2**24 pixels, here forced)
    two bytes at a time: odd sizes, strided views and both signs against NumPy's bincount of
    the values themselves."""
    from mosaicflow._shared import arrays
    from mosaicflow._shared.arrays import value_counts

    if way == "byte pairs":
        monkeypatch.setattr(arrays, "_EXACT_FLOAT32_COUNT", 0)

    info = np.iinfo(dtype)
    rng = np.random.default_rng(4)
    block = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    for view in (block, block[::2], block.T):
        expected = np.bincount(view.ravel().astype(np.int64) - info.min, minlength=256)
        np.testing.assert_array_equal(value_counts(view, int(info.min), 256), expected)
