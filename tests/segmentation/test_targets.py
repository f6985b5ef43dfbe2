"""Instance targets (background / interior / contact) against a brute-force oracle, and instances
grown back from perfect probabilities against the truth and against scikit-image's watershed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.segmentation import watershed

from mosaicflow import synth
from mosaicflow.segmentation.metrics import tally
from mosaicflow.segmentation.targets import (
    BACKGROUND,
    CLASS_NAMES,
    CONTACT,
    CONTACT_PX,
    INTERIOR,
    instance_classes,
    instances_from_probability,
    probabilities_u8,
    to_u8,
    u8_threshold,
)


def brute_force_classes(labels: np.ndarray, contact_px: int) -> np.ndarray:
    """The definition, pixel by pixel: a particle pixel is contact when a pixel of another
    particle lies within Chebyshev distance ``contact_px`` (the window clipped to the image)."""
    h, w = labels.shape
    out = np.zeros((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            own = labels[y, x]
            if own == 0:
                continue
            window = labels[
                max(0, y - contact_px) : y + contact_px + 1,
                max(0, x - contact_px) : x + contact_px + 1,
            ]
            out[y, x] = CONTACT if ((window != 0) & (window != own)).any() else INTERIOR
    return out


@pytest.fixture(scope="module")
def field():
    """A 96 x 96 field at 4 nm/px, half of its particles in touching pairs."""
    _, labels, particles = synth.synth_field(
        (96, 96), snr=None, seed=1, pixel_size_nm=4.0, density=80.0, touching_fraction=0.5
    )
    assert len(particles) >= 8
    return labels


def test_class_names_are_the_channel_order():
    assert CLASS_NAMES[BACKGROUND] == "background"
    assert CLASS_NAMES[INTERIOR] == "interior"
    assert CLASS_NAMES[CONTACT] == "contact"


@pytest.mark.parametrize("contact_px", [1, CONTACT_PX, 3])
def test_instance_classes_equal_the_brute_force_definition(field, contact_px):
    out = instance_classes(field, contact_px=contact_px)
    assert out.dtype == np.uint8 and out.shape == field.shape
    np.testing.assert_array_equal(out, brute_force_classes(field, contact_px))


def test_isolated_particles_have_no_contact_and_touching_ones_do(field):
    classes = instance_classes(field)
    ids = np.unique(field[field > 0])
    # A particle is isolated when no other particle lies within CONTACT_PX of it.
    isolated, touching = [], []
    for i in ids:
        near = ndi.binary_dilation(field == i, np.ones((2 * CONTACT_PX + 1,) * 2, bool))
        others = np.unique(field[near & (field > 0) & (field != i)])
        (touching if len(others) else isolated).append(i)
    assert isolated and touching  # the field has both kinds
    for i in isolated:
        assert (classes[field == i] == INTERIOR).all(), f"isolated particle {i} has contact pixels"
    for i in touching:
        assert (classes[field == i] == CONTACT).any(), f"touching particle {i} has no contact band"
    assert (classes[field == 0] == BACKGROUND).all()


def test_contact_band_lies_on_both_sides_of_a_contact():
    labels = np.zeros((12, 20), np.uint32)
    labels[2:10, 2:10] = 7  # touches 3 along x = 10
    labels[2:10, 10:18] = 3
    classes = instance_classes(labels, contact_px=2)
    np.testing.assert_array_equal(np.unique(classes[2:10, 8:12]), [CONTACT])
    np.testing.assert_array_equal(np.unique(classes[2:10, 2:8]), [INTERIOR])
    np.testing.assert_array_equal(np.unique(classes[2:10, 12:18]), [INTERIOR])
    assert (classes[labels == 0] == BACKGROUND).all()
    # A particle alone on the image, touching its border, has no contact at all.
    alone = np.zeros((6, 6), np.int32)
    alone[:3, :3] = 1
    assert (instance_classes(alone)[:3, :3] == INTERIOR).all()


@settings(max_examples=40)
@given(
    labels=hnp.arrays(
        np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12), elements=st.integers(0, 4)
    ),
    contact_px=st.integers(0, 3),
)
def test_instance_classes_on_random_maps(labels, contact_px):
    np.testing.assert_array_equal(
        instance_classes(labels, contact_px=contact_px), brute_force_classes(labels, contact_px)
    )


def brute_force_rim_classes(labels: np.ndarray, rim: float, max_rim_px: float) -> np.ndarray:
    """The rim, pixel by pixel: the distance from a particle pixel to the nearest pixel that is
    background or an edge pixel (a 4-neighbour inside the image differs), 0 on edge pixels;
    rim where it is below ``rim`` times the particle's largest, at most ``max_rim_px``."""
    h, w = labels.shape
    edge = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and labels[yy, xx] != labels[y, x]:
                    edge[y, x] = True
    outside = np.argwhere(edge | (labels == 0))
    dist = np.zeros((h, w))
    for y, x in np.argwhere(labels > 0):
        if not edge[y, x] and len(outside):
            dist[y, x] = np.sqrt(((outside - (y, x)) ** 2).sum(axis=1)).min()
    out = brute_force_classes(labels, CONTACT_PX)
    for i in np.unique(labels[labels > 0]):
        own = labels == i
        width = min(rim * dist[own].max(), max_rim_px)
        out[own & (dist < width)] = CONTACT
    return out


@settings(max_examples=60)
@given(
    labels=hnp.arrays(
        np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=14), elements=st.integers(0, 3)
    ),
    rim=st.sampled_from([0.2, 0.5, 0.9]),
    max_rim_px=st.sampled_from([1.0, 8.0]),
)
def test_rim_classes_on_random_maps(labels, rim, max_rim_px):
    np.testing.assert_array_equal(
        instance_classes(labels, rim=rim, max_rim_px=max_rim_px),
        brute_force_rim_classes(labels, rim, max_rim_px),
    )


def test_rim_widens_the_gap_between_the_interiors_of_packed_round_particles():
    # A row of discs of radius 9 whose edges touch. The contact band alone leaves their
    # interiors 4 px apart, beside each point of contact; a rim of 0.3 makes it 7 px.
    from skimage.draw import disk

    labels = np.zeros((30, 120), np.int32)
    for k in range(6):
        rr, cc = disk((15, 10 + 18 * k), 9.5, shape=labels.shape)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = k + 1
    gaps = []
    for rim in (0.0, 0.3):
        interior = instance_classes(labels, rim=rim) == INTERIOR
        first = ndi.distance_transform_edt(~(interior & (labels == 1)))
        gaps.append(first[interior & (labels == 2)].min())
        # one interior per particle, holding its centre
        assert ndi.label(interior, np.ones((3, 3), bool))[1] == 6
        assert interior[15, 10 + 18 * np.arange(6)].all()
    assert gaps == [4.0, 7.0]


def test_rim_leaves_tiny_particles_interior_and_is_capped():
    labels = np.zeros((60, 60), np.int32)
    labels[2:4, 2:4] = 1  # 2 x 2 px: every pixel on its edge, no depth, all interior
    labels[10:50, 10:50] = 2  # 40 px square: a rim of 0.5 x 19 px, capped at 3 px
    classes = instance_classes(labels, rim=0.5, max_rim_px=3)
    assert (classes[2:4, 2:4] == INTERIOR).all()
    np.testing.assert_array_equal(np.unique(classes[10:13, 10:50]), [CONTACT])
    np.testing.assert_array_equal(np.unique(classes[13:47, 13:47]), [INTERIOR])
    with pytest.raises(ValueError, match="rim"):
        instance_classes(labels, rim=1.0)
    # One particle filling the image has no edge: no rim (found by the random maps above).
    full = np.ones((1, 2), np.uint16)
    assert (instance_classes(full, rim=0.9) == INTERIOR).all()


def test_instance_classes_refuse_a_3d_map():
    with pytest.raises(ValueError, match="2-D"):
        instance_classes(np.zeros((2, 4, 4), np.uint32))


def test_u8_scale():
    np.testing.assert_array_equal(
        to_u8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255]
    )
    assert to_u8(np.zeros(3)).dtype == np.uint8
    assert u8_threshold(0.5) == 128 and u8_threshold(1.0) == 255
    assert u8_threshold(0.0) == 1  # 0 is never foreground
    softmax = np.stack([np.full((2, 2), 0.2), np.full((2, 2), 0.7), np.full((2, 2), 0.1)])
    fg, interior = probabilities_u8(softmax)
    np.testing.assert_array_equal(fg, to_u8(np.full((2, 2), 0.8)))
    np.testing.assert_array_equal(interior, to_u8(np.full((2, 2), 0.7)))


def _perfect(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = instance_classes(labels)
    return (
        np.where(labels > 0, 255, 0).astype(np.uint8),
        np.where(classes == INTERIOR, 255, 0).astype(np.uint8),
    )


def test_perfect_probabilities_give_back_the_instances(field):
    fg, interior = _perfect(field)
    seeds, _ = ndi.label(interior > 0, np.ones((3, 3), bool))
    ids = np.unique(field[field > 0])
    # the precondition: every particle holds exactly one seed (its interior is one piece)
    for i in ids:
        assert len(np.unique(seeds[field == i])) - (0 in seeds[field == i]) == 1
    pred = instances_from_probability(fg, interior)
    assert pred.dtype == np.uint32
    scores = tally(field, pred).scores()
    assert scores["f1"] == 1.0
    assert scores["pixel_dice"] == 1.0
    assert scores["matched"] == len(ids)


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize(("fg_t", "seed_t"), [(0.5, 0.5), (0.3, 0.7)])
def test_instances_equal_skimage_watershed(field, connectivity, fg_t, seed_t):
    """The oracle spelled out with SciPy and scikit-image: seeds numbered by ``ndi.label`` (raster
    order of their first pixel), grown over ``255 - interior`` within the foreground."""
    rng = np.random.default_rng(0)
    fg, interior = _perfect(field)
    # blurred, noisy probabilities: thresholds and ties matter
    fg = to_u8(ndi.gaussian_filter(fg / 255.0, 1.0) + rng.normal(0, 0.05, fg.shape))
    interior = to_u8(ndi.gaussian_filter(interior / 255.0, 1.0) + rng.normal(0, 0.05, fg.shape))
    structure = ndi.generate_binary_structure(2, connectivity)
    markers, n = ndi.label(interior >= round(seed_t * 255), structure)
    assert n > 3
    mask = (fg >= round(fg_t * 255)) | (markers > 0)
    expected = watershed(255 - interior, markers=markers, mask=mask, connectivity=connectivity)
    pred = instances_from_probability(
        fg, interior, foreground_threshold=fg_t, seed_threshold=seed_t, connectivity=connectivity
    )
    np.testing.assert_array_equal(pred, expected)
    # seed numbering: raster order, as scipy.ndimage.label numbers them
    np.testing.assert_array_equal(pred[markers > 0], markers[markers > 0])


def test_thresholds_are_inclusive_and_unreached_foreground_stays_background():
    fg = np.zeros((5, 12), np.uint8)
    interior = np.zeros((5, 12), np.uint8)
    fg[1:4, 1:5] = 128  # exactly at 0.5: foreground
    interior[2, 2] = 128  # exactly at 0.5: a seed
    fg[1:4, 7:11] = 255  # foreground without a seed: no instance
    interior[2, 9] = 127  # just under the seed threshold
    pred = instances_from_probability(fg, interior)
    expected = np.zeros((5, 12), np.uint32)
    expected[1:4, 1:5] = 1
    np.testing.assert_array_equal(pred, expected)
    # a seed below the foreground threshold still counts as foreground
    only_seed = instances_from_probability(
        np.zeros((3, 3), np.uint8), np.full((3, 3), 200, np.uint8)
    )
    np.testing.assert_array_equal(only_seed, np.ones((3, 3), np.uint32))
    # no seed at all
    none = instances_from_probability(np.full((4, 4), 255, np.uint8), np.zeros((4, 4), np.uint8))
    assert none.dtype == np.uint32 and not none.any()


def test_connectivity_decides_whether_diagonal_seeds_are_one():
    fg = np.full((4, 4), 255, np.uint8)
    interior = np.zeros((4, 4), np.uint8)
    interior[1, 1] = interior[2, 2] = 255
    assert instances_from_probability(fg, interior, connectivity=2).max() == 1
    assert instances_from_probability(fg, interior, connectivity=1).max() == 2
