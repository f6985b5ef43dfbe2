"""The chunked Gaussian filter against ``scipy.ndimage.gaussian_filter`` on the whole image."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import xarray as xr

from mosaicflow.errors import ConfigError
from mosaicflow.restoration import gaussian_filter

# Whole image; 2x2 chunks; not aligned; thin strips (9 px, less than the 10 px halo of sigma 2.5).
CHUNKINGS = [(1000, 1000), (128, 128), (37, 53), (9, 250)]


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("sigma", [0.7, 2.5])
def test_gaussian_equals_scipy(noisy, chunks, sigma):
    image = noisy
    out = gaussian_filter(da.from_array(image, chunks=chunks), sigma=sigma).compute()
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
    out = gaussian_filter(arr, sigma=1.0)
    assert isinstance(out, xr.DataArray) and out.attrs["pixel_size_nm"] == [2.0, 2.0]
    np.testing.assert_array_equal(out["x"], arr["x"])


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan")])
def test_gaussian_rejects_bad_sigma(sigma):
    with pytest.raises(ConfigError, match="sigma"):
        gaussian_filter(da.zeros((8, 8), chunks=4), sigma=sigma)


@pytest.mark.parametrize(("chunks", "depth"), [((128, 128), 3), ((37, 53), 8), ((40, 250), 5)])
@pytest.mark.parametrize("sigma", [0.7, 2.0])
def test_gaussian_of_overlapped_blocks_equals_the_other_ways(noisy, chunks, depth, sigma):
    """Blocks that hold each chunk's halo already are filtered as they are when the halo is
    wide enough (no edge tasks), and through their chunks otherwise: either way the result
    equals the filter of the same chunks read plainly, and SciPy's on the whole image."""
    from mosaicflow._shared.halo import Overlapped

    image = noisy.astype(np.float32)
    grid = da.core.normalize_chunks(chunks, image.shape)
    ys, xs = (np.cumsum((0, *c)) for c in grid)
    blocks = [
        [
            image[
                max(0, a - depth) : min(ys[-1], b + depth),
                max(0, c - depth) : min(xs[-1], d + depth),
            ]
            for c, d in itertools.pairwise(xs)
        ]
        for a, b in itertools.pairwise(ys)
    ]
    extended = Overlapped.extended(grid, (depth, depth))
    stacked = da.block([[da.from_array(b, chunks=b.shape) for b in row] for row in blocks])
    overlapped = Overlapped(stacked.rechunk(extended), grid, (depth, depth))
    got = gaussian_filter(overlapped, sigma=sigma).compute()
    plain = gaussian_filter(da.from_array(image, chunks=grid), sigma=sigma).compute()
    np.testing.assert_array_equal(got, plain)
    np.testing.assert_allclose(got, ndi.gaussian_filter(image, sigma=sigma), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(overlapped.core().compute(), image)
