"""The noisy field and the scikit-image NLM oracle that the denoiser tests share."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.restoration

from mosaicflow import synth


@pytest.fixture(scope="module")
def noisy():
    """A particle field at SNR ~7.5 (values about 0..1), the hard case of Zhang et al."""
    image, _labels, _particles = synth.synth_field((150, 210), snr=7.5, seed=11, density=150.0)
    return image


def _skimage_nlm(image, **kw):
    return skimage.restoration.denoise_nl_means(
        image.astype(np.float32), preserve_range=True, channel_axis=None, **kw
    ).astype(np.float32)


@pytest.fixture
def skimage_nlm():
    """``skimage.restoration.denoise_nl_means`` as mosaicflow calls it on every chunk (float32
    in and out, values kept): the oracle of the chunked NLM."""
    return _skimage_nlm
