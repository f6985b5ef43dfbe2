"""Tests for the synthetic HRTEM crops, fields and tile grids (mosaicflow.synth.hrtem).

The oracles are the spectrum (fringe period and direction from the FFT peak, fringe phase by
demodulation at the lattice wave vector), scipy.ndimage on the label image, and the field
itself for the tile grid.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mosaicflow import synth
from mosaicflow.errors import ConfigError
from mosaicflow.io.tiles import read_tile, read_tileset
from mosaicflow.synth import hrtem as sh

FOUR = ndimage.generate_binary_structure(2, 1)


# --------------------------------------------------------------------------------------------
# Spectral measurements (the oracle for what the generator claims to draw)
# --------------------------------------------------------------------------------------------


def _highpassed(crop: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Crop minus its Gaussian blur (removes the thickness dome), zero outside ``region``."""
    hp = crop - ndimage.gaussian_filter(crop.astype(np.float64), 3.0)
    return np.where(region, hp - hp[region].mean(), 0.0)


def _inner(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=3)


def _lattice_peak(
    crop: np.ndarray, region: np.ndarray, *, band: tuple[float, float] = (0.15, 0.32)
) -> tuple[float, float, float]:
    """Strongest spectral peak in a frequency band (cycles/px).

    Returns the peak power over the median power at the same radius (about 15 for noise:
    the largest of ~10^4 exponential variates over their median), the period in px and the
    direction of the wave vector in radians, in (y, x) order.
    """
    x = _highpassed(crop, region)
    n = max(256, *x.shape)
    power = np.abs(np.fft.fft2(x, s=(n, n))) ** 2
    f = np.fft.fftfreq(n)
    fy, fx = f[:, None], f[None, :]
    fr = np.sqrt(fy * fy + fx * fx)
    ring = np.rint(fr * n).astype(np.intp).ravel()
    flat = power.ravel()
    order = np.lexsort((flat, ring))
    counts = np.bincount(ring)
    median = np.maximum(flat[order[np.cumsum(counts) - counts + counts // 2]], 1e-300)
    ratio = (flat / median[ring]).reshape(power.shape)
    in_band = (fr >= band[0]) & (fr <= band[1])
    iy, ix = np.unravel_index(np.argmax(np.where(in_band, ratio, -1.0)), power.shape)
    # Refine the peak to 1/40 of a bin with a zoomed DFT around it (separable matrix products).
    ky = f[iy] + np.linspace(-1.0, 1.0, 81) / n
    kx = f[ix] + np.linspace(-1.0, 1.0, 81) / n
    zoom = np.exp(-2j * np.pi * np.outer(ky, np.arange(x.shape[0]))) @ x
    zoom = zoom @ np.exp(-2j * np.pi * np.outer(np.arange(x.shape[1]), kx))
    jy, jx = np.unravel_index(np.argmax(np.abs(zoom)), zoom.shape)
    peak_y, peak_x = ky[jy], kx[jx]
    return float(ratio[iy, ix]), 1.0 / math.hypot(peak_y, peak_x), math.atan2(peak_y, peak_x)


def _line_angle_deg(a: float, b: float) -> float:
    d = math.degrees(abs(a - b)) % 180.0
    return min(d, 180.0 - d)


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


def test_crops_are_deterministic_in_seed() -> None:
    a = sh.particle_crops(2, seed=11)
    b = sh.particle_crops(2, seed=11)
    c = sh.particle_crops(2, seed=12)
    assert a[2] == b[2] == c[2]
    for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True):
        np.testing.assert_array_equal(x, y)
    for x, z in zip(a[0], c[0], strict=True):
        assert x.shape != z.shape or not np.array_equal(x, z)


def test_every_class_present_as_one_blob_with_margin() -> None:
    n, margin = 5, 6
    images, masks, classes = sh.particle_crops(n, seed=3, crop_margin_px=margin)
    assert Counter(classes) == dict.fromkeys(sh.CLASSES, n)
    assert len(images) == len(masks) == n * len(sh.CLASSES)
    for image, mask, kind in zip(images, masks, classes, strict=True):
        assert image.dtype == np.float32 and mask.dtype == bool
        assert image.shape == mask.shape
        assert np.isfinite(image).all()
        assert ndimage.label(mask, structure=FOUR)[1] == 1, kind
        rows, cols = np.nonzero(mask)
        gaps = (
            rows.min(),
            cols.min(),
            mask.shape[0] - 1 - rows.max(),
            mask.shape[1] - 1 - cols.max(),
        )
        assert all(margin <= g <= margin + 1 for g in gaps), (kind, gaps)

    # Bright field: particles are darker than the carbon around them, empty blobs barely.
    def contrast(i: int) -> float:
        outside = ~ndimage.binary_dilation(masks[i], iterations=4)
        return 1.0 - float(images[i][masks[i]].mean() / images[i][outside].mean())

    by_class = {
        k: np.mean([contrast(i) for i in range(len(images)) if classes[i] == k]) for k in sh.CLASSES
    }
    assert by_class["empty"] < 0.5 * min(by_class[k] for k in sh.CLASSES if k != "empty")
    assert min(by_class.values()) > 0


@pytest.mark.parametrize("pixel_size_nm", [0.05, 0.04])
def test_fringe_period_equals_requested_spacing(pixel_size_nm: float) -> None:
    spacing = 0.235
    # Clearly visible fringes (the faintest default ones need a larger particle or dose).
    app = sh.HrtemAppearance(fringe_spacing_nm=(spacing, spacing), fringe_contrast=(0.05, 0.2))
    kw = dict(seed=5, pixel_size_nm=pixel_size_nm, appearance=app)
    images, masks, classes = sh.particle_crops(4, **kw)  # type: ignore[arg-type]
    specs = sh.particle_specs(4, **kw)  # type: ignore[arg-type]
    checked = 0
    for image, mask, kind, spec in zip(images, masks, classes, specs, strict=True):
        if kind not in ("crystalline", "agglomerate"):
            continue
        ratio, period, angle = _lattice_peak(image, _inner(mask))
        assert ratio > 100
        # Strain (0.3 rad over 2-6 nm) moves the peak of a small region by up to ~2 %.
        rel = 0.01 if kind == "crystalline" else 0.03
        assert period == pytest.approx(spacing / pixel_size_nm, rel=rel)
        directions = [f.angle_rad for m in spec.members for f in m.fringes]
        assert min(_line_angle_deg(angle, d) for d in directions) < 2.0
        checked += 1
    assert checked == 8


def test_stacking_fault_shows_two_fringe_phases() -> None:
    """Demodulate at the fringe wave vector on both sides of the fault line.

    The mean complex amplitudes ``a``, ``b`` of the two halves have the same phase for a
    perfect crystal (any line; the smooth strain field moves them apart by a few tenths of a
    radian) and phases that differ by the jump across a stacking fault; across a twin
    boundary the far side has (almost) no fringes at that wave vector, but at the mirrored one.
    """
    n = 8
    app = sh.HrtemAppearance(fringe_contrast=(0.05, 0.2))
    images, masks, classes = sh.particle_crops(n, seed=21, snr=10.0, appearance=app)
    specs = sh.particle_specs(n, seed=21, appearance=app)
    line_rng = np.random.default_rng(0)
    kinds_seen = set()
    for image, mask, kind, spec in zip(images, masks, classes, specs, strict=True):
        if kind not in ("crystalline", "stacking_fault"):
            continue
        member = spec.members[0]
        fringe = member.fringes[0]
        fault = spec.fault
        if fault is None:
            py, px, normal = member.y, member.x, float(line_rng.uniform(0, 2 * math.pi))
        else:
            py, px, normal = fault.y, fault.x, fault.normal_rad
            kinds_seen.add(fault.kind)
        yy, xx = np.indices(image.shape, dtype=np.float64)
        s = (yy - py) * math.sin(normal) + (xx - px) * math.cos(normal)
        hp = _highpassed(image, _inner(mask))
        along = (yy - py) * math.sin(fringe.angle_rad) + (xx - px) * math.cos(fringe.angle_rad)
        wave = np.exp(-2j * math.pi * along / fringe.period_px)
        sides = [_inner(mask) & (s < -3), _inner(mask) & (s > 3)]
        a, b = ((hp[side] * wave[side]).mean() for side in sides)
        jump = abs(np.angle(b * np.conj(a)))  # 0 .. pi
        if fault is None:
            assert jump < 0.8 and abs(b) > 0.5 * abs(a), kind
        elif fault.kind == "shift":
            assert abs(jump - fault.shift_rad) < 0.6, (jump, fault.shift_rad)
            assert abs(b) > 0.5 * abs(a)
        else:
            assert abs(b) < 0.3 * abs(a)
            # The far side's own spectrum peaks at the mirrored direction.
            mirrored = 2 * (fault.normal_rad + math.pi / 2) - fringe.angle_rad
            _, _, angle_b = _lattice_peak(image, sides[1])
            _, _, angle_a = _lattice_peak(image, sides[0])
            assert _line_angle_deg(angle_b, mirrored) < 3.0
            assert _line_angle_deg(angle_a, fringe.angle_rad) < 3.0
    assert kinds_seen == {"shift", "twin"}


def test_misoriented_and_empty_crops_have_no_lattice_peak() -> None:
    images, masks, classes = sh.particle_crops(6, seed=8)
    specs = sh.particle_specs(6, seed=8)
    ratios: dict[str, list[float]] = {}
    for image, mask, kind, spec in zip(images, masks, classes, specs, strict=True):
        ratio = _lattice_peak(image, _inner(mask))[0]
        if kind == "crystalline" and spec.members[0].fringes[0].amplitude < 0.05:
            kind = "faint crystalline"
        ratios.setdefault(kind, []).append(ratio)
    assert max(ratios["misoriented"] + ratios["empty"]) < 40.0
    assert min(ratios["crystalline"]) > 200.0
    assert min(ratios.get("faint crystalline", [np.inf])) > 40.0


def test_agglomerates_are_one_blob_of_several_members() -> None:
    n = 8
    _, masks, classes = sh.particle_crops(n, seed=13)
    specs = sh.particle_specs(n, seed=13)
    seen = 0
    for mask, kind, spec in zip(masks, classes, specs, strict=True):
        if kind != "agglomerate":
            assert len(spec.members) == 1
            continue
        seen += 1
        lo, hi = sh.HrtemAppearance().agglomerate_members
        assert lo <= len(spec.members) <= hi
        assert ndimage.label(mask, structure=FOUR)[1] == 1
        gy = np.arange(mask.shape[0], dtype=np.float64)[:, None]
        gx = np.arange(mask.shape[1], dtype=np.float64)[None, :]
        feet = [
            sh.render_particle(sh.ParticleSpec("crystalline", (m,)), gy, gx)[2]
            for m in spec.members
        ]
        np.testing.assert_array_equal(np.logical_or.reduce(feet), mask)
        for i, foot in enumerate(feet):
            others = np.logical_or.reduce([f for j, f in enumerate(feet) if j != i])
            assert (foot & ~others).sum() > 0.15 * foot.sum()  # no member hidden
        angles = [m.fringes[0].angle_rad for m in spec.members]
        assert all(
            _line_angle_deg(a, b) >= sh.MIN_MEMBER_TURN_DEG - 1e-9
            for i, a in enumerate(angles)
            for b in angles[i + 1 :]
        )
    assert seen == n


def test_bad_options_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="Nyquist"):
        sh.particle_crops(1, pixel_size_nm=0.12)
    with pytest.raises(ConfigError, match="unknown particle class 'amorphous'"):
        sh.hrtem_field((256, 256), n_particles=1, class_weights={"amorphous": 1.0})
    with pytest.raises(ConfigError, match=r"could place only \d+ of 400"):
        sh.hrtem_field((600, 600), n_particles=400, seed=1)
    with pytest.raises(ConfigError, match="fringe_spacing_nm"):
        sh.HrtemAppearance(fringe_spacing_nm=(0.3, 0.2))


# --------------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------------


def test_field_truth_matches_labels() -> None:
    shape, n, px = (900, 1200), 14, 0.05
    image, labels, truth = sh.hrtem_field(shape, n_particles=n, seed=2, pixel_size_nm=px)
    again = sh.hrtem_field(shape, n_particles=n, seed=2, pixel_size_nm=px)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert image.shape == labels.shape == shape
    assert image.dtype == np.float32 and labels.dtype == np.uint32
    assert list(truth.columns) == list(sh.TRUTH_COLUMNS)
    ids = truth["label"].to_numpy()
    np.testing.assert_array_equal(np.unique(labels)[1:], ids)
    np.testing.assert_array_equal(
        truth["area_px"], ndimage.sum_labels(np.ones(shape), labels, index=ids)
    )
    centroids = np.array(ndimage.center_of_mass(np.ones(shape), labels, index=ids)) * px
    np.testing.assert_allclose(truth[["centroid_y_nm", "centroid_x_nm"]], centroids, rtol=1e-12)
    np.testing.assert_allclose(truth["area_nm2"], truth["area_px"] * px * px)
    np.testing.assert_allclose(truth["ecd_nm"], np.sqrt(4 * truth["area_px"] / math.pi) * px)
    # Each object is one blob and no two objects touch (agglomerates are one label).
    assert ndimage.label(labels > 0, structure=np.ones((3, 3)))[1] == n
    for lab in ids:
        assert ndimage.label(labels == lab, structure=FOUR)[1] == 1
    assert ((truth["n_members"] >= 2) == (truth["class"] == "agglomerate")).all()
    assert set(truth["class"]) <= set(sh.CLASSES)

    only_empty = sh.hrtem_field((768, 768), n_particles=3, class_weights={"empty": 1}, seed=2)[2]
    assert (only_empty["class"] == "empty").all()


def test_field_noise_follows_snr() -> None:
    kw = dict(n_particles=6, seed=4)
    clean = sh.hrtem_field((512, 640), snr=None, **kw)[0].astype(np.float64)  # type: ignore[arg-type]
    noise = [
        (sh.hrtem_field((512, 640), snr=snr, **kw)[0] - clean).std()  # type: ignore[arg-type]
        for snr in (4.0, 8.0)
    ]
    assert noise[0] / noise[1] == pytest.approx(2.0, rel=0.02)


# --------------------------------------------------------------------------------------------
# Tile grid
# --------------------------------------------------------------------------------------------

GRID = dict(rows=2, cols=3, tile_shape=(512, 640), overlap=0.15, n_particles=7, seed=6)


def _dequantise(tile: np.ndarray) -> np.ndarray:
    top = float(np.iinfo(tile.dtype).max)
    lo, hi = (f * top for f in synth.DTYPE_RANGE_FRACTION)
    v0, v1 = synth.INTENSITY_RANGE
    return v0 + (tile.astype(np.float64) - lo) * ((v1 - v0) / (hi - lo))


def test_grid_reads_back_and_reassembles_field(tmp_path: Path) -> None:
    gt = sh.write_hrtem_grid(
        tmp_path / "acq",
        **GRID,  # type: ignore[arg-type]
        snr=None,
        stage_error_px=0.0,
        gain_sigma=0.0,
        offset_sigma=0.0,
        bit_depth=16,
    )
    field, labels, truth = sh.hrtem_field(
        gt.mosaic_shape, n_particles=7, seed=6, snr=None, pixel_size_nm=0.05
    )
    tiles = read_tileset(gt.folder)
    assert tiles.pixel_size_nm == pytest.approx((0.05, 0.05))
    assert (tiles.rows, tiles.cols, tiles.tile_shape) == (2, 3, (512, 640))
    _, origins = synth.read_ground_truth(gt.folder)
    merged = tiles.tiles.merge(origins, on=["row", "col"], suffixes=("", "_true"))
    np.testing.assert_allclose(merged["y_px"], merged["y_px_true"], atol=1e-6)
    np.testing.assert_allclose(merged["x_px"], merged["x_px_true"], atol=1e-6)

    # Reassemble: each mosaic pixel from the tile whose centre is nearest (the overlap-free
    # interior of every tile), then compare with the field rendered on its own.
    h, w = tiles.tile_shape
    mosaic = np.full(gt.mosaic_shape, np.nan)
    best = np.full(gt.mosaic_shape, np.inf)
    yy, xx = np.indices(gt.mosaic_shape)
    for row in tiles.tiles.itertuples():
        oy, ox = round(row.y_px), round(row.x_px)
        data = _dequantise(read_tile(row.path, shape=(h, w), dtype=tiles.dtype))
        win = (slice(oy, oy + h), slice(ox, ox + w))
        d = np.maximum(abs(yy[win] - (oy + (h - 1) / 2)) / h, abs(xx[win] - (ox + (w - 1) / 2)) / w)
        take = d < best[win]
        best[win][take] = d[take]
        mosaic[win][take] = data[take]
    assert not np.isnan(mosaic).any()
    step = (synth.INTENSITY_RANGE[1] - synth.INTENSITY_RANGE[0]) / (0.8 * 65535)
    np.testing.assert_allclose(mosaic, field, atol=step)

    np.testing.assert_array_equal(synth.truth_labels(gt.folder)[...], labels)
    written = pd.read_csv(gt.particles_csv)
    assert list(written.columns) == list(sh.TRUTH_COLUMNS)
    pd.testing.assert_frame_equal(
        written, truth.astype({"label": np.int64}), check_exact=False, rtol=1e-6
    )
    assert gt.n_particles == len(truth) == 7


def test_noisy_grid_is_deterministic(tmp_path: Path) -> None:
    def digest(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    small = dict(GRID, rows=1, cols=2, n_particles=3)
    a = sh.write_hrtem_grid(tmp_path / "a", **small)  # type: ignore[arg-type]
    sh.write_hrtem_grid(tmp_path / "b", **small)  # type: ignore[arg-type]
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    tiles = read_tileset(a.folder)
    assert tiles.dtype == np.uint16
    _, origins = synth.read_ground_truth(a.folder)
    # Nominal positions carry the stage error (8 px sigma), relative to the first tile.
    dx = (tiles.tiles["x_px"] - tiles.tiles["x_px"].iloc[0]) - (
        origins["x_px"] - origins["x_px"].iloc[0]
    )
    assert 0 < abs(dx.iloc[1]) < 60
