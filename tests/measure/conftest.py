"""The particle field that the labelling and table tests share."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from mosaicflow import synth


@pytest.fixture(scope="module")
def field():
    """A synthetic particle field (touching pairs, agglomerates) plus one giant, irregular
    particle of more than 64 x 64 px, larger than every chunk of the tests but the whole image:
    ``(image, labels)``, labels numbered as ``scipy.ndimage.label`` numbers them."""
    image, labels, _ = synth.synth_field(
        (240, 330), snr=12.0, seed=5, density=150.0, touching_fraction=0.2, agglomerate_fraction=0.1
    )
    rng = np.random.default_rng(0)
    blob = ndi.gaussian_filter(rng.standard_normal((110, 140)), 4) > -0.01
    mask = labels > 0
    mask[100:210, 150:290] |= blob
    lab, n = ndi.label(mask)
    assert n >= 20 and np.bincount(lab.ravel())[1:].max() > 64 * 64
    return image.astype(np.float64), lab.astype(np.uint32)
