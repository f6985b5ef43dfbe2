"""The chunked non-local means against scikit-image's ``denoise_nl_means`` on the whole image."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from mosaicflow.restoration import denoise_nl_means, nl_means_halo

# Whole image; ordinary; not aligned; smaller than the NLM halo (8 px).
CHUNKINGS = [(1000, 1000), (64, 96), (37, 53), (5, 7)]


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize(
    "params",
    [
        {"patch_size": 5, "patch_distance": 6, "h": 0.08},
        {"patch_size": 3, "patch_distance": 4, "h": 0.05, "sigma": 0.08},
    ],
)
def test_nl_means_equals_skimage_fast_mode(noisy, skimage_nlm, chunks, params):
    if max(chunks) < 10:  # chunks smaller than the halo: a corner, 9 x 9 chunks, not 900
        noisy = noisy[:41, :58]
    out = denoise_nl_means(da.from_array(noisy, chunks=chunks), **params).compute()
    expected = skimage_nlm(noisy, fast_mode=True, **params)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    # The comparison is not vacuous: the filter changed the image well beyond the tolerance.
    assert np.abs(out - noisy).max() > 0.05


@pytest.mark.parametrize("chunks", [(64, 96), (5, 7)])
def test_nl_means_slow_mode_equals_skimage(noisy, skimage_nlm, chunks):
    crop = noisy[:60, :80]
    params = {"patch_size": 3, "patch_distance": 2, "h": 0.08, "fast_mode": False}
    out = denoise_nl_means(da.from_array(crop, chunks=chunks), **params).compute()
    np.testing.assert_allclose(out, skimage_nlm(crop, **params), atol=1e-5, rtol=0)


@pytest.mark.cluster
def test_nl_means_on_the_cluster(client, noisy, skimage_nlm):
    arr = da.from_array(noisy, chunks=(50, 70))
    out = client.compute(denoise_nl_means(arr, h=0.08)).result()
    expected = skimage_nlm(noisy, patch_size=5, patch_distance=6, h=0.08, fast_mode=True)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


def test_nl_means_halo():
    assert nl_means_halo(5, 6) == 8
