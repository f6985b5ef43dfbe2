"""Tests for the SEM/HAADF particle catalogues and fields (mosaicflow.synth.sem and
mosaicflow.synth.sem_particles)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mosaicflow import synth


@settings(max_examples=25)
@given(
    y0=st.integers(-50, 400),
    x0=st.integers(-50, 400),
    height=st.integers(2, 160),
    width=st.integers(2, 160),
    data=st.data(),
)
def test_render_window_is_piecewise_consistent(
    y0: int, x0: int, height: int, width: int, data: st.DataObject
) -> None:
    particles = _catalogue()
    whole_img, whole_lab = synth.render_window(particles, y0, x0, height, width, seed=5)
    cut = data.draw(st.integers(1, height - 1))
    top = synth.render_window(particles, y0, x0, cut, width, seed=5)
    bottom = synth.render_window(particles, y0 + cut, x0, height - cut, width, seed=5)
    np.testing.assert_array_equal(whole_img, np.vstack([top[0], bottom[0]]))
    np.testing.assert_array_equal(whole_lab, np.vstack([top[1], bottom[1]]))
    cut = data.draw(st.integers(1, width - 1))
    left = synth.render_window(particles, y0, x0, height, cut, seed=5)
    right = synth.render_window(particles, y0, x0 + cut, height, width - cut, seed=5)
    np.testing.assert_array_equal(whole_img, np.hstack([left[0], right[0]]))
    np.testing.assert_array_equal(whole_lab, np.hstack([left[1], right[1]]))


_CATALOGUE: list[pd.DataFrame] = []


def _catalogue() -> pd.DataFrame:
    if not _CATALOGUE:
        _CATALOGUE.append(synth.make_particles((500, 500), seed=4, density=40.0))
    return _CATALOGUE[0]


def test_index_and_dataframe_render_the_same() -> None:
    particles = _catalogue()
    index = synth.index_particles(particles, cell_px=64)
    a = synth.render_window(particles, 37, 11, 300, 280, seed=1)
    b = synth.render_window(index, 37, 11, 300, 280, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(np.unique(a[1])) > 10


def test_catalogue_defaults() -> None:
    shape = (3000, 3000)
    particles = synth.make_particles(shape, seed=0)
    # about one particle per 150 x 150 px at 2 nm
    assert len(particles) == pytest.approx(shape[0] * shape[1] / 150**2, rel=0.1)
    np.testing.assert_array_equal(particles["label"], np.arange(1, len(particles) + 1))
    assert set(particles["shape"]) == {"sphere", "rod", "cube"}
    extent_px = 2 * particles["a_px"]
    assert extent_px.min() >= 10 and extent_px.max() <= 130
    assert 12 <= particles["diameter_nm"].median() / 2.0 <= 40
    rods = particles[particles["shape"] == "rod"]
    np.testing.assert_array_less(1.999, rods["a_px"] / rods["b_px"])
    np.testing.assert_array_less(rods["a_px"] / rods["b_px"], 4.001)
    assert particles["intensity"].between(0.8, 1.2).all()


def test_snr_matches_request() -> None:
    shape, seed = (768, 768), 11
    image, labels, particles = synth.synth_field(shape, snr=10.0, seed=seed, density=30.0)
    clean, clean_labels = synth.render_window(particles, 0, 0, *shape, seed=seed)
    np.testing.assert_array_equal(labels, clean_labels)
    substrate = synth.render_substrate(0, 0, *shape, seed=seed)
    mask = labels > 0
    signal = float((clean - substrate)[mask].mean())
    noise = float((image - clean).std())
    assert signal / noise == pytest.approx(10.0, rel=0.10)
    # noise-free fields are the clean rendering
    image0, _, _ = synth.synth_field(shape, snr=None, seed=seed, density=30.0)
    np.testing.assert_allclose(image0, clean, atol=1e-6)


def test_isolated_particles_never_touch() -> None:
    shape = (1500, 1500)
    particles = synth.make_particles(
        shape, seed=9, density=40.0, touching_fraction=0.0, agglomerate_fraction=0.0
    )
    assert (particles["group"] == 0).all()
    _, labels = synth.render_window(particles, 0, 0, *shape)
    _, n = ndimage.label(labels > 0, structure=np.ones((3, 3)))
    assert n == len(particles) > 100


def test_groups_touch() -> None:
    shape = (1500, 1500)
    particles = synth.make_particles(shape, seed=9, touching_fraction=0.3, agglomerate_fraction=0.3)
    sizes = particles.groupby("group").size()
    assert (sizes.drop(0) >= 2).all() and (sizes.drop(0) >= 3).any()
    assert sizes.drop(0).max() <= 6
    _, labels = synth.render_window(particles, 0, 0, *shape)
    _, n = ndimage.label(labels > 0, structure=np.ones((3, 3)))
    assert n == int(sizes[0]) + len(sizes) - 1  # one blob per isolated particle or group
    assert len(np.unique(labels)) - 1 == len(particles)  # no particle is hidden


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shape"):
        synth.make_particles((100, 100), shapes=("sphere", "star"))
    with pytest.raises(ValueError, match="snr"):
        synth.synth_field((64, 64), snr=-1.0)


def test_shape_subsets() -> None:
    rods = synth.make_particles((600, 600), seed=2, shapes=("rod",))
    assert set(rods["shape"]) == {"rod"}
    mixed = synth.make_particles((2000, 2000), seed=2, shapes=("cube", "sphere"))
    assert set(mixed["shape"]) == {"cube", "sphere"}
    with pytest.raises(ValueError, match="shape_weights"):
        synth.make_particles((100, 100), shapes=("cube",), shape_weights=(1.0, 2.0))
