"""Fourier features of one particle (Groschner et al.): definitions checked on known images."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicflow.measure import features
from mosaicflow.measure.features import fourier_features, fourier_table, radial_profile


def test_radial_profile_equals_a_loop_over_rings():
    rng = np.random.default_rng(1)
    img = rng.random((17, 22))
    prof = radial_profile(img)
    yy, xx = np.indices(img.shape)
    r = np.rint(np.hypot(yy - 8, xx - 11)).astype(int)
    for k in range(r.max() + 1):
        assert prof[k] == pytest.approx(img[r == k].mean())


@pytest.mark.parametrize("period", [4.0, 6.5])
def test_fourier_centre_of_mass_follows_the_fringe_frequency(period):
    yy, xx = np.mgrid[:64, :64]
    mask = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
    fringes = 1.0 + np.sin(2 * np.pi * (0.6 * xx + 0.8 * yy) / period)
    flat = np.ones_like(fringes)
    com_fringes = fourier_features(fringes, mask)[2]
    assert abs(com_fringes - 1 / period) < 0.25 / period
    assert fourier_features(flat, mask)[:2] == (0.0, 0.0)
    mean, std = fourier_features(fringes, mask)[3:]
    assert mean == pytest.approx(fringes[mask].mean()) and std == pytest.approx(fringes[mask].std())


def _one_by_one(crop: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """The module docstring's definition, written out for one particle with loops."""
    mean = crop[mask].mean()
    side = max(crop.shape)
    padded = np.zeros((side, side))
    padded[: crop.shape[0], : crop.shape[1]] = np.where(mask, crop - mean, 0.0)
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(padded)))
    yy, xx = np.indices(amplitude.shape)
    r = np.rint(np.hypot(yy - side // 2, xx - side // 2)).astype(int)
    profile = np.array([amplitude[r == k].mean() for k in range(1, side // 2 + 1)])
    if profile.size == 0:
        return (0.0, 0.0, 0.0)
    freq = np.arange(1, profile.size + 1) / side
    n = mask.sum()
    com = (freq * profile).sum() / profile.sum() if profile.sum() > 0 else 0.0
    return (profile.mean() / n, profile.std() / n, com)


@pytest.mark.parametrize("batch_pixels", [None, 500])
def test_many_particles_at_once_equal_each_particle_alone(batch_pixels, monkeypatch):
    """Particles of many sizes (squares of equal side transformed together, 1 px particles
    among them; also with batches small enough to split every side) against the definition
    applied to each alone."""
    if batch_pixels:
        monkeypatch.setattr(features, "_BATCH_PIXELS", batch_pixels)
    rng = np.random.default_rng(5)
    crops, masks = [], []
    for i in range(120):
        h, w = (1, 1) if i % 17 == 0 else (int(v) for v in rng.integers(2, 30, 2))
        mask = rng.random((h, w)) < 0.7
        mask[h // 2, w // 2] = True
        crops.append(rng.normal(100, 20, (h, w)))
        masks.append(mask)
    pid = np.concatenate([np.full(int(m.sum()), k) for k, m in enumerate(masks)])
    ys = np.concatenate([np.nonzero(m)[0] for m in masks])
    xs = np.concatenate([np.nonzero(m)[1] for m in masks])
    values = np.concatenate([c[m] for c, m in zip(crops, masks, strict=True)])
    side = np.array([max(m.shape) for m in masks])
    mean = np.array([c[m].mean() for c, m in zip(crops, masks, strict=True)])
    got = fourier_table(pid, ys, xs, values, side, mean)
    expected = np.array([_one_by_one(c, m) for c, m in zip(crops, masks, strict=True)])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.array_equal(got[0], [0.0, 0.0, 0.0])  # a 1 px particle
