"""One-to-one ground truth: the contingency/IoU kernel against hand counts and brute force, the
chunked driver against the kernel, and the truth's frame against the fusion itself."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk

from mosaicflow import synth
from mosaicflow.io.tiles import TileSet, read_tileset
from mosaicflow.report import matching
from mosaicflow.stitch import fuse


# -- oracles ---------------------------------------------------------------------------------
def _brute_force(found: np.ndarray, true: np.ndarray, threshold: float = 0.5):
    """Per-pair IoU from the masks, and a greedy one-to-one matching by decreasing IoU."""
    f_ids = [int(v) for v in np.unique(found) if v]
    t_ids = [int(v) for v in np.unique(true) if v]
    pairs = []
    for a, b in itertools.product(f_ids, t_ids):
        fm, tm = found == a, true == b
        inter = int((fm & tm).sum())
        if inter:
            iou = inter / int((fm | tm).sum())
            if iou >= threshold:
                pairs.append((-iou, a, b))
    used_f: set[int] = set()
    used_t: set[int] = set()
    matched = {}
    for neg, a, b in sorted(pairs):
        if a not in used_f and b not in used_t:
            used_f.add(a)
            used_t.add(b)
            matched[(a, b)] = -neg
    return len(f_ids), len(t_ids), matched


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Five true discs; found: A the same, B one pixel larger, C removed, D split into a 70 %
    and a 30 % piece, E shifted by more than its radius; plus one false blob F."""
    shape = (120, 160)
    true = np.zeros(shape, dtype=np.uint32)
    centres = {1: (20, 20), 2: (20, 70), 3: (20, 120), 4: (75, 40), 5: (80, 110)}
    for lab, c in centres.items():
        true[disk(c, 10, shape=shape)] = lab
    found = np.zeros(shape, dtype=np.uint32)
    found[true == 1] = 11  # A: identical
    found[disk(centres[2], 11, shape=shape)] = 12  # B: one pixel larger in radius
    # C (label 3) is missed
    d = true == 4
    cols = np.nonzero(d.any(axis=0))[0]
    cut = cols[0] + int(0.62 * cols.size)  # about 70 % of the disc's area left of the cut
    yy, xx = np.nonzero(d)
    found[yy[xx < cut], xx[xx < cut]] = 14
    found[yy[xx > cut], xx[xx > cut]] = 15  # a one-pixel gap at the cut
    found[disk((centres[5][0], centres[5][1] + 13), 10, shape=shape)] = 16  # E shifted 13 px
    found[disk((100, 150), 5, shape=shape)] = 17  # F: a false particle
    return found, true


# -- kernel ----------------------------------------------------------------------------------
def test_hand_counted_scene() -> None:
    found, true = _scene()
    result = matching.match_labels(found, true)
    # found: A, B, D-big, D-small, E-shifted, F = 6; true: A..E = 5; matched: A, B, D-big.
    assert (result.n_found, result.n_true, result.n_matched) == (6, 5, 3)
    assert list(zip(result.found, result.true, strict=True)) == [(11, 1), (12, 2), (14, 4)]
    assert result.precision == pytest.approx(3 / 6)
    assert result.recall == pytest.approx(3 / 5)
    assert result.f1 == pytest.approx(2 * 3 / (6 + 5))
    summary = result.summary()
    assert summary["precision_percent"] == pytest.approx(50.0)
    assert summary["recall_percent"] == pytest.approx(60.0)
    assert summary["f1_percent"] == pytest.approx(100 * 6 / 11)
    assert summary["false_positive_count"] == 3 and summary["false_negative_count"] == 2
    # size error of matched pairs: from the areas, sqrt(A_found / A_true) - 1
    areas_f = np.array([(found == v).sum() for v in (11, 12, 14)])
    areas_t = np.array([(true == v).sum() for v in (1, 2, 4)])
    err = np.sqrt(areas_f / areas_t) - 1
    np.testing.assert_allclose(result.ecd_relative_error, err)
    assert summary["median_ecd_error_percent"] == pytest.approx(100 * np.median(err))
    assert summary["mean_ecd_error_percent"] == pytest.approx(100 * np.mean(err))
    assert err[0] == 0 and err[1] > 0 and err[2] < -0.1  # A exact, B larger, D's piece smaller


def test_kernel_equals_brute_force_on_random_scenes() -> None:
    for seed in range(6):
        rng = np.random.default_rng(seed)
        shape = (90, 110)
        true = np.zeros(shape, dtype=np.uint32)
        found = np.zeros(shape, dtype=np.uint32)
        for lab in range(1, 16):
            c = rng.uniform(0, 90), rng.uniform(0, 110)
            r = rng.uniform(3, 12)
            true[disk(c, r, shape=shape)] = lab
            if rng.random() < 0.85:  # found, jittered in place and size
                c2 = c[0] + rng.normal(0, 2.5), c[1] + rng.normal(0, 2.5)
                found[disk(c2, r * rng.uniform(0.7, 1.3), shape=shape)] = 100 + lab
        n_found, n_true, expected = _brute_force(found, true)
        result = matching.match_labels(found, true)
        assert (result.n_found, result.n_true) == (n_found, n_true)
        keys = zip(result.found.tolist(), result.true.tolist(), strict=True)
        got = dict(zip(keys, result.iou.tolist(), strict=True))
        assert got.keys() == expected.keys()
        for key, iou in expected.items():
            assert got[key] == pytest.approx(iou, rel=1e-12)


def test_ties_at_the_threshold_are_matched_once() -> None:
    """One found particle exactly covering two true halves: IoU 0.5 with each, one match."""
    true = np.zeros((10, 20), dtype=np.uint32)
    true[2:6, 2:6] = 1
    true[2:6, 6:10] = 2
    found = np.zeros_like(true)
    found[2:6, 2:10] = 7
    result = matching.match_labels(found, true)
    assert result.n_matched == 1 and result.iou.tolist() == [0.5]
    assert (int(result.found[0]), int(result.true[0])) == (7, 1)  # lower true label first
    assert _brute_force(found, true)[2] == {(7, 1): 0.5}


def test_empty_and_one_sided_images() -> None:
    empty = np.zeros((8, 8), dtype=np.uint32)
    some = empty.copy()
    some[2:4, 2:4] = 3
    none = matching.match_labels(empty, empty)
    assert (none.n_found, none.n_true, none.n_matched) == (0, 0, 0)
    assert none.summary()["f1_percent"] is None and none.summary()["median_iou"] is None
    miss = matching.match_labels(empty, some)
    assert miss.summary()["recall_percent"] == 0.0 and miss.summary()["precision_percent"] is None
    with pytest.raises(Exception, match="shape"):
        matching.contingency(empty, np.zeros((8, 9), dtype=np.uint32))


def test_chunked_driver_equals_the_kernel() -> None:
    found, true = _scene()
    whole = matching.contingency(found, true)
    for step in ((7, 11), (32, 32), (120, 160), (500, 500)):
        parts = matching.contingency_windows(
            found, lambda y0, y1, x0, x1: true[y0:y1, x0:x1], step=step
        )
        for name in ("found", "true", "count"):
            np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))
    # counts add up to the pixels that are particle in either image
    assert whole.count.sum() == ((found > 0) | (true > 0)).sum()


def test_keeping_listed_found_labels_equals_erasing_the_others_first() -> None:
    """Counting a found image and then dropping its unlisted labels gives the contingency of
    the image with those objects erased (labels beyond the list included)."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        found = rng.integers(0, 30, (40, 50)) * (rng.random((40, 50)) < 0.6)
        true = rng.integers(0, 12, (40, 50)) * (rng.random((40, 50)) < 0.5)
        listed = rng.random(int(rng.integers(1, 35))) < 0.6
        lut = np.zeros(found.max() + 1, dtype=np.int64)
        n = min(listed.size, lut.size)
        lut[:n] = np.where(listed[:n], np.arange(n), 0)
        expected = matching.contingency(lut[found], true)
        got = matching.contingency(found, true).keep_found(listed)
        for field in ("found", "true", "count"):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))


def test_windows_counted_on_a_cluster_equal_the_kernel(client) -> None:
    """The windows as tasks on a real LocalCluster (the report stage's way) give the same
    contingency as the whole-image kernel."""
    from mosaicflow.runner import Runner

    found, true = _scene()
    whole = matching.contingency(found, true)
    parts = matching.contingency_windows(
        found, lambda y0, y1, x0, x1: true[y0:y1, x0:x1], step=(32, 48), runner=Runner(client)
    )
    for name in ("found", "true", "count"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))


# -- the truth's frame -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gapped_grid(tmp_path_factory: pytest.TempPathFactory) -> synth.GridTruth:
    """2x3 tiles with stage error and the top-right tile missing."""
    folder = tmp_path_factory.mktemp("gapped") / "acq"
    return synth.write_maps_grid(
        folder,
        rows=2,
        cols=3,
        tile_shape=(160, 220),
        snr=30.0,
        seed=7,
        stage_error_px=8.0,
        missing_tiles=[(1, 3)],
    )


def test_truth_window_equals_fusing_tiles_cut_from_the_truth(
    gapped_grid: synth.GridTruth, tmp_path: Path
) -> None:
    """Oracle: cut the true label mosaic into tiles at the true origins, fuse those tiles at
    the nominal stage positions with the pipeline's own ``stitch.fuse``: that is the truth in
    the fused frame, and ``TileFrame.truth_window`` must give it, window by window."""
    tileset = read_tileset(gapped_grid.folder)
    truth = np.asarray(synth.truth_labels(gapped_grid.folder)[...])
    _, origins = synth.read_ground_truth(gapped_grid.folder)
    h, w = tileset.tile_shape
    true_at = origins.set_index(["row", "col"])
    paths = []
    for row, col in zip(tileset.tiles["row"], tileset.tiles["col"], strict=True):
        oy, ox = (int(v) for v in true_at.loc[(row, col), ["y_px", "x_px"]])
        path = tmp_path / f"labels_{row}_{col}.tif"
        tifffile.imwrite(path, truth[oy : oy + h, ox : ox + w])
        paths.append(str(path))
    label_tiles = TileSet(
        folder=tmp_path,
        tiles=tileset.tiles.assign(path=paths),
        tile_shape=tileset.tile_shape,
        pixel_size_nm=tileset.pixel_size_nm,
        dtype=np.dtype(np.uint32),
        rows=tileset.rows,
        cols=tileset.cols,
        missing=tileset.missing,
    )
    expected = np.asarray(fuse(label_tiles, chunks=100, blend="nearest").data.compute())

    frame = matching.TileFrame.from_tables(tileset.tiles, origins, tileset.tile_shape)
    assert frame.fused_shape == expected.shape
    got = np.zeros_like(expected)
    for y0, y1, x0, x1 in matching.windows(expected.shape, (70, 90)):
        got[y0:y1, x0:x1] = frame.truth_window(truth, y0, y1, x0, x1)
    np.testing.assert_array_equal(got, expected)
    # The frames differ by one shift per tile (stage errors), not by one global shift.
    shifts = frame.true_origins - frame.fused_origins
    assert len({tuple(s) for s in shifts}) > 1
    assert (got > 0).any()


def test_frame_needs_every_tiles_true_origin() -> None:
    tiles = pd.DataFrame({"row": [1, 1], "col": [1, 2], "y_px": [0.0, 1.2], "x_px": [0.0, 90.4]})
    origins = pd.DataFrame({"row": [1], "col": [1], "y_px": [0.0], "x_px": [0.0]})
    with pytest.raises(Exception, match="true origin"):
        matching.TileFrame.from_tables(tiles, origins, (50, 100))
