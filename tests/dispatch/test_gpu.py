"""GPU paths (CuPy chunks through the dispatch layer) against the CPU paths.

Run with ``python -m pytest -m gpu`` on a machine with an NVIDIA GPU and CuPy (the ``[gpu]``
extra); skipped elsewhere.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.restoration

from mosaicflow import dispatch, synth
from mosaicflow.restoration import denoise_nl_means, gaussian_filter, median_filter

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not dispatch.gpu_available(), reason="needs CuPy and a CUDA device"),
]


@pytest.fixture(scope="module")
def field():
    image, _, _ = synth.synth_field((300, 420), snr=7.5, seed=11, density=150.0)
    return image


def _on_gpu(image, chunks):
    import cupy

    return da.from_array(image, chunks=chunks).map_blocks(cupy.asarray)


@pytest.mark.parametrize("chunks", [(300, 420), (64, 96), (37, 53)])
def test_gpu_denoisers_equal_cpu(field, chunks):
    import cupy

    arr = _on_gpu(field, chunks)
    cases = [
        (gaussian_filter(arr, sigma=2.0), ndi.gaussian_filter(field, 2.0)),
        (median_filter(arr, size=3), ndi.median_filter(field, 3)),
        (
            denoise_nl_means(arr, h=0.08, sigma=0.05),
            skimage.restoration.denoise_nl_means(
                field, patch_size=5, patch_distance=6, h=0.08, sigma=0.05, preserve_range=True
            ),
        ),
    ]
    for out, expected in cases:
        assert isinstance(out._meta, cupy.ndarray)
        got = out.compute()
        assert isinstance(got, cupy.ndarray) and got.dtype == np.float32
        np.testing.assert_allclose(cupy.asnumpy(got), expected, atol=1e-5, rtol=0)
