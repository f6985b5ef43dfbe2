"""The chunked median filter against ``scipy.ndimage.median_filter`` on the whole image."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.morphology

from mosaicflow.restoration import median_filter

# Whole image; ordinary; not aligned; smaller than the 5x5 median halo.
CHUNKINGS = [(1000, 1000), (64, 96), (37, 53), (5, 7)]


def _field(noisy, chunks):
    """The field, or for chunks smaller than the halo a corner of it (9 x 9 chunks, the last
    ones partial): the same cases in a graph of 81 chunks instead of 900."""
    return noisy[:41, :58] if max(chunks) < 10 else noisy


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("size", [3, 5, (3, 7), (5, 1)])
def test_median_equals_scipy(noisy, chunks, size):
    noisy = _field(noisy, chunks)
    out = median_filter(da.from_array(noisy, chunks=chunks), size=size).compute()
    expected = ndi.median_filter(noisy.astype(np.float32), size=size, mode="reflect")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("chunks", [(64, 96), (5, 7)])
def test_median_footprint_equals_scipy(noisy, chunks):
    noisy = _field(noisy, chunks)
    disk = skimage.morphology.disk(3).astype(bool)
    out = median_filter(da.from_array(noisy, chunks=chunks), footprint=disk).compute()
    np.testing.assert_array_equal(out, ndi.median_filter(noisy, footprint=disk))
