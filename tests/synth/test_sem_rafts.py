"""Tests for dense monolayers of touching spheres (mosaicflow.synth.sem_rafts)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from mosaicflow.errors import ConfigError
from mosaicflow.synth.sem import synth_field
from mosaicflow.synth.sem_particles import PARTICLE_COLUMNS
from mosaicflow.synth.sem_rafts import make_raft


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_raft_is_hexagonally_packed_inside_the_field(seed):
    shape = (300, 260)
    cat = make_raft(shape, seed=seed)
    assert list(cat.columns) == PARTICLE_COLUMNS
    assert len(cat) >= 20
    assert np.array_equal(cat["label"].to_numpy(), np.arange(1, len(cat) + 1))
    r = cat["a_px"].to_numpy()
    y, x = cat["y_px"].to_numpy(), cat["x_px"].to_numpy()
    assert (y - r >= 2).all() and (y + r <= shape[0] - 3).all()
    assert (x - r >= 2).all() and (x + r <= shape[1] - 3).all()
    # nearest neighbours sit about one diameter apart: a packed film, not scattered particles
    dist, idx = cKDTree(np.c_[y, x]).query(np.c_[y, x], k=2)
    gap = dist[:, 1] / (r + r[idx[:, 1]])
    assert 0.8 < np.median(gap) < 1.25
    # most particles have at least four neighbours within 1.3 diameters (hexagonal: six)
    counts = cKDTree(np.c_[y, x]).query_ball_point(np.c_[y, x], r=1.3 * 2 * np.median(r))
    assert np.median([len(c) - 1 for c in counts]) >= 4


def test_a_raft_renders_with_exact_labels_and_is_deterministic():
    cat = make_raft((200, 200), seed=5, diameter_px=(10.0, 14.0))
    img, lab, out = synth_field((200, 200), snr=15.0, seed=5, particles=cat)
    assert out is cat
    again_cat = make_raft((200, 200), seed=5, diameter_px=(10.0, 14.0))
    again = synth_field((200, 200), snr=15.0, seed=5, particles=again_cat)
    np.testing.assert_array_equal(img, again[0])
    np.testing.assert_array_equal(lab, again[1])
    # every particle keeps pixels of its own, and the film is one connected foreground
    present = np.unique(lab[lab > 0])
    assert len(present) >= 0.95 * len(cat)
    _, n = ndi.label(lab > 0, ndi.generate_binary_structure(2, 2))
    assert n < len(present) / 4


def test_bad_raft_options():
    with pytest.raises(ConfigError, match="field_shape"):
        make_raft((0, 10))
    with pytest.raises(ConfigError, match="diameter_px"):
        make_raft((100, 100), diameter_px=(20.0, 10.0))
    with pytest.raises(ConfigError, match="particles="):
        synth_field((64, 64), particles=make_raft((64, 64)), density=3.0)
