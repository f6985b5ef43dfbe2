"""The noise level sampled over the whole mosaic against scikit-image's ``estimate_sigma``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import skimage.restoration

from mosaicflow import synth
from mosaicflow.errors import ConfigError
from mosaicflow.restoration import estimate_sigma


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
