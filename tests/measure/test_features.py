"""Fourier features of one particle (Groschner et al.): definitions checked on known images."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicflow.measure.features import fourier_features, radial_profile


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
