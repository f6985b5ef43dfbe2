"""The array-API non-local means (the GPU path), run on NumPy against scikit-image."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import skimage.restoration

from mosaicflow import dispatch
from mosaicflow.errors import ConfigError
from mosaicflow.restoration import _nlm_array


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
