"""Instance, pixel and box scores against brute-force IoU matrices, and their invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import linear_sum_assignment
from skimage.measure import regionprops

from mosaicflow import synth
from mosaicflow.segmentation.metrics import (
    Tally,
    box_iou,
    box_tally,
    label_boxes,
    match_instances,
    tally,
)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute force: the IoU of every (true id, predicted id) pair, one mask at a time."""
    t_ids = np.unique(true[true > 0])
    p_ids = np.unique(pred[pred > 0])
    m = np.zeros((len(t_ids), len(p_ids)))
    for i, a in enumerate(t_ids):
        for j, b in enumerate(p_ids):
            ta, pb = true == a, pred == b
            m[i, j] = (ta & pb).sum() / (ta | pb).sum()
    return t_ids, p_ids, m


def _label_map(shape_side: int) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.int32, (shape_side, shape_side), elements=st.integers(0, 4))


@st.composite
def pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A truth and a prediction that keeps part of it (ids permuted) and redraws the rest, so
    that IoUs above and below 0.5 both occur."""
    side = draw(st.integers(1, 8))
    true = draw(_label_map(side))
    other = draw(_label_map(side))
    keep = draw(hnp.arrays(np.bool_, (side, side)))
    perm = np.asarray(draw(st.permutations([0, 1, 2, 3, 4, 5, 6])))
    perm[0] = 0
    pred = np.where(keep, perm[true], other + 5 * (other > 0))
    return true, pred


@settings(max_examples=150)
@given(pair=pairs(), iou=st.sampled_from([0.5, 0.75]))
def test_matching_against_brute_force(pair, iou):
    true, pred = pair
    t_ids, p_ids, m = iou_matrix(true, pred)
    matches = match_instances(true, pred, iou)
    # one to one, each pair's IoU as the brute force computes it, at the threshold or above
    assert len({a for a, _, _ in matches}) == len({b for _, b, _ in matches}) == len(matches)
    for a, b, v in matches:
        expected = m[np.searchsorted(t_ids, a), np.searchsorted(p_ids, b)]
        assert v == pytest.approx(expected) and v >= iou
    # every pair above 0.5 is the only candidate of both its particles: it must be matched
    strict = {(int(t_ids[i]), int(p_ids[j])) for i, j in zip(*np.nonzero(m > iou), strict=True)}
    assert strict <= {(a, b) for a, b, _ in matches}
    # as many matches as a maximum matching over the pairs at the threshold
    if m.size:
        rows, cols = linear_sum_assignment(m >= iou, maximize=True)
        assert len(matches) == int((m[rows, cols] >= iou).sum())
    else:
        assert matches == []
    # the tally's counts from the same matrix
    t = tally(true, pred, iou)
    assert (t.tp, t.fp, t.fn) == (
        len(matches),
        len(p_ids) - len(matches),
        len(t_ids) - len(matches),
    )
    tf, pf = true > 0, pred > 0
    assert (t.tp_px, t.fp_px, t.fn_px) == ((tf & pf).sum(), (~tf & pf).sum(), (tf & ~pf).sum())
    assert t.images == 1 and sorted(t.matched_iou) == sorted(v for _, _, v in matches)


def test_iou_at_exactly_the_threshold_matches_once():
    true = np.array([[1, 1, 1, 1]])
    pred = np.array([[2, 2, 3, 3]])  # both halves have IoU 0.5 with particle 1
    matches = match_instances(true, pred)
    assert len(matches) == 1 and matches[0][0] == 1 and matches[0][2] == 0.5
    t = tally(true, pred)
    assert (t.tp, t.fp, t.fn) == (1, 1, 0)


@pytest.fixture(scope="module")
def field():
    _, labels, particles = synth.synth_field(
        (128, 128), snr=None, seed=3, pixel_size_nm=4.0, density=60.0, touching_fraction=0.3
    )
    assert len(particles) >= 8
    return labels


def test_identical_maps_score_one(field):
    scores = tally(field, field).scores()
    n = len(np.unique(field[field > 0]))
    assert scores["matched"] == scores["true_particles"] == scores["predicted_particles"] == n
    for key in ("f1", "precision", "recall", "pixel_dice", "pixel_iou", "mean_matched_iou"):
        assert scores[key] == 1.0, key
    assert scores["median_ecd_ratio"] == 1.0 and scores["size_distance"] == 0.0


def test_renumbering_the_prediction_changes_nothing(field):
    rng = np.random.default_rng(0)
    ids = np.unique(field)
    lut = np.zeros(int(ids.max()) + 1, np.int64)
    lut[ids[1:]] = rng.permutation(np.arange(100, 100 + len(ids) - 1))
    pred = np.roll(field, 2, axis=1)  # imperfect, so that IoUs are not all 1
    renamed = lut[pred]
    a, b = tally(field, pred).scores(), tally(field, renamed).scores()
    assert a == pytest.approx(b, nan_ok=True)
    assert [m[2] for m in match_instances(field, pred)] == pytest.approx(
        [m[2] for m in match_instances(field, renamed)]
    )
    # renumbering the truth changes nothing either
    assert tally(lut[field], pred).scores() == pytest.approx(a, nan_ok=True)


def test_sums_are_micro_averages(field):
    """Two images summed score as one image holding both side by side (ids kept apart)."""
    pred1 = np.roll(field, 3, axis=0)
    true2, pred2 = field[::-1], np.roll(field[::-1], -4, axis=1)
    gap = np.zeros((field.shape[0], 1), field.dtype)
    off = int(field.max()) + 1
    shift = np.where(true2 > 0, true2 + off, 0)
    shift_p = np.where(pred2 > 0, pred2 + off, 0)
    joined = tally(np.hstack([field, gap, shift]), np.hstack([pred1, gap, shift_p]))
    summed = tally(field, pred1) + tally(true2, pred2)
    assert summed.images == 2
    a, b = summed.scores(), joined.scores()
    a.pop("images"), b.pop("images")
    assert a == pytest.approx(b)
    assert (Tally() + summed).scores() == pytest.approx(summed.scores())


def test_empty_maps_give_nan_ratios_not_errors():
    z = np.zeros((4, 4), np.uint8)
    s = tally(z, z).scores()
    assert s["true_particles"] == s["predicted_particles"] == 0
    assert math.isnan(s["f1"]) and math.isnan(s["pixel_dice"]) and math.isnan(s["size_distance"])
    one = z.copy()
    one[1:3, 1:3] = 1
    s = tally(one, z).scores()
    assert s["recall"] == 0.0 and s["f1"] == 0.0 and math.isnan(s["precision"])
    assert match_instances(one, z) == []


def test_shapes_must_agree():
    with pytest.raises(ValueError, match=r"shapes differ.*\(4, 4\).*\(4, 5\)"):
        tally(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))


def test_ecd_ratio_and_size_distance():
    true = np.zeros((20, 20), np.int32)
    true[2:6, 2:6] = 1  # 16 px
    pred = np.zeros_like(true)
    pred[2:6, 2:7] = 4  # 20 px, IoU 0.8
    t = tally(true, pred)
    assert t.ecd_ratio == pytest.approx([math.sqrt(20 / 16)])
    assert t.true_ecd == pytest.approx([math.sqrt(4 * 16 / math.pi)])
    ecd_t, ecd_p = math.sqrt(4 * 16 / math.pi), math.sqrt(4 * 20 / math.pi)
    assert t.scores()["size_distance"] == pytest.approx((ecd_p - ecd_t) / ecd_t)


@settings(max_examples=60)
@given(
    a=hnp.arrays(np.int64, st.tuples(st.integers(0, 5), st.just(4)), elements=st.integers(0, 20)),
    b=hnp.arrays(np.int64, st.tuples(st.integers(0, 5), st.just(4)), elements=st.integers(0, 20)),
)
def test_box_iou_against_a_loop(a, b):
    # boxes (y0, x0, y1, x1) with y0 <= y1, x0 <= x1
    a = np.concatenate([np.minimum(a[:, :2], a[:, 2:]), np.maximum(a[:, :2], a[:, 2:])], axis=1)
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
    m = box_iou(a, b)
    assert m.shape == (len(a), len(b))
    for i, (ay0, ax0, ay1, ax1) in enumerate(a):
        for j, (by0, bx0, by1, bx1) in enumerate(b):
            inter = max(0, min(ay1, by1) - max(ay0, by0)) * max(0, min(ax1, bx1) - max(ax0, bx0))
            union = (ay1 - ay0) * (ax1 - ax0) + (by1 - by0) * (bx1 - bx0) - inter
            assert m[i, j] == pytest.approx(inter / union if union > 0 else 0.0)


def test_label_boxes_equal_regionprops(field):
    boxes = label_boxes(field)
    expected = [r.bbox for r in sorted(regionprops(field.astype(np.int64)), key=lambda r: r.label)]
    np.testing.assert_array_equal(boxes, np.asarray(expected, np.float64))
    assert label_boxes(np.zeros((3, 3), np.int32)).shape == (0, 4)


def test_box_tally():
    true = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    pred = np.array(
        [
            [0, 0, 10, 5],  # IoU 0.5 with true 0: a match
            [0, 0, 10, 10],  # IoU 1 with true 0: the better match, taken first
            [20, 20, 30, 24],  # IoU 0.4 with true 1: no match
            [60, 60, 70, 70],  # nothing
        ]
    )
    t = box_tally(true, pred)
    assert (t.tp, t.fp, t.fn, t.images) == (1, 3, 2, 1)
    assert t.matched_iou == [1.0]
    assert (t.tp_px, t.fp_px, t.fn_px) == (0, 0, 0)
    assert box_tally(true, pred, iou=0.4).tp == 2
    # the boxes of identical label maps all match
    _, labels, _ = synth.synth_field((64, 64), snr=None, seed=0, pixel_size_nm=4.0, density=80.0)
    boxes = label_boxes(labels)
    t = box_tally(boxes, boxes)
    assert t.tp == len(boxes) > 0 and t.fp == t.fn == 0
    empty = box_tally(np.zeros((0, 4)), boxes)
    assert (empty.tp, empty.fp, empty.fn) == (0, len(boxes), 0)
