"""Tests for particles on a catalyst's grainy support (mosaicflow.synth.supported)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from mosaicflow.errors import ConfigError
from mosaicflow.synth.supported import supported_field


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_labels_are_the_particles_whole_and_apart(seed):
    image, labels = supported_field((256, 224), seed=seed, snr=None, blur_px=(0.0, 0.0))
    assert image.shape == labels.shape == (256, 224)
    assert image.dtype == np.float32 and labels.dtype == np.uint32
    n = int(labels.max())
    assert n >= 5
    ids = np.unique(labels[labels > 0])
    assert np.array_equal(ids, np.arange(1, n + 1))  # 1..n, none lost
    # each particle is one 4-connected piece (an ellipse's pixel centres)
    pieces = ndi.label(labels > 0)[0]
    for i in ids[:40]:
        assert len(np.unique(pieces[labels == i])) == 1
    # not the support: most of the image's bright structure is unlabelled
    support = image > np.percentile(image, 5) + 1e-6
    assert (support & (labels == 0)).sum() > 0
    # a particle is brighter than the unlabelled pixels right around it (no noise, no blur)
    brighter = 0
    for i in ids:
        own = labels == i
        ring = ndi.binary_dilation(own, iterations=2) & ~own & (labels == 0)
        if ring.any():
            brighter += image[own].mean() > image[ring].mean()
    assert brighter >= 0.9 * n


def test_particle_sizes_follow_the_range():
    sizes = []
    for seed in range(6):
        _, labels = supported_field((200, 200), seed=seed, diameter_px=(4.0, 6.0))
        sizes += list(np.bincount(labels.ravel())[1:])
    ecd = 2 * np.sqrt(np.asarray(sizes) / math.pi)
    assert 3.0 < np.median(ecd) < 7.5


def test_deterministic_and_noisy():
    a = supported_field((128, 128), seed=7, snr=5.0)
    b = supported_field((128, 128), seed=7, snr=5.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    clean = supported_field((128, 128), seed=7, snr=None)
    np.testing.assert_array_equal(a[1], clean[1])  # noise never moves a particle
    assert not np.array_equal(a[0], clean[0])


def test_bad_options():
    with pytest.raises(ConfigError, match="shape"):
        supported_field((0, 10))
    with pytest.raises(ConfigError, match="diameter_px"):
        supported_field((64, 64), diameter_px=(1.0, 5.0))
    with pytest.raises(ConfigError, match="diameter_px"):
        supported_field((64, 64), diameter_px=(10.0, 5.0))
