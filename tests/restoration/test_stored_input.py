"""A denoiser's input read from a Zarr store: each task reads its chunk and halo in one read (no
edge tasks), and the result is the in-memory chunked result and the whole-image oracle's."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

from mosaicflow.restoration import denoise_nl_means, gaussian_filter, median_filter

# 3x4 chunks (the last ones short); 3x3; the whole image. (Chunks thinner than the halo go
# through dask.array.map_overlap, stored or not.)
CHUNKINGS = [(64, 64), (50, 70), (150, 210)]


def _stored(tmp_path, image: np.ndarray, chunks: tuple[int, int]) -> da.Array:
    z = zarr.create_array(
        store=str(tmp_path / "image.zarr"), shape=image.shape, chunks=chunks, dtype=image.dtype
    )
    z[...] = image
    return da.from_zarr(z)


def _edge_layers(out: da.Array) -> list[str]:
    """The edge tasks of the two-task halo driver in ``out``'s graph."""
    keys = dict(out.__dask_graph__())
    return [k for k in keys if isinstance(k, tuple) and str(k[0]).startswith("halo-edges")]


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_gaussian_of_a_stored_image(tmp_path, noisy, chunks):
    image = noisy.astype(np.float32)
    stored = gaussian_filter(_stored(tmp_path, image, chunks), sigma=2.5)
    # a computed input (not a plain read) goes through the edge tasks
    in_memory = gaussian_filter(da.from_array(image, chunks=chunks) * 1, sigma=2.5)
    assert _edge_layers(stored) == []
    assert len(_edge_layers(in_memory)) == in_memory.npartitions
    out = stored.compute()
    np.testing.assert_array_equal(out, in_memory.compute())
    np.testing.assert_allclose(out, ndi.gaussian_filter(image, sigma=2.5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_median_of_a_stored_integer_image(tmp_path, noisy, chunks):
    image = np.round(noisy * 1000).clip(0, 65535).astype(np.uint16)
    stored = median_filter(_stored(tmp_path, image, chunks), size=5)
    assert _edge_layers(stored) == []
    expected = ndi.median_filter(image, size=5, mode="reflect").astype(np.float32)
    np.testing.assert_array_equal(stored.compute(), expected)


def test_nl_means_of_a_stored_image(tmp_path, noisy, skimage_nlm):
    image = noisy.astype(np.float32)
    params = {"patch_size": 5, "patch_distance": 4, "h": 0.08}
    stored = denoise_nl_means(_stored(tmp_path, image, (64, 64)), **params)
    assert _edge_layers(stored) == []
    np.testing.assert_allclose(stored.compute(), skimage_nlm(image, **params), atol=1e-5, rtol=0)
