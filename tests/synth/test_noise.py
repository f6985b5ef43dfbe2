"""Tests for the detector noise shared by the synthetic modes (mosaicflow.synth.noise)."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicflow import synth
from mosaicflow.errors import ConfigError
from mosaicflow.synth.noise import noise_sigma


def test_noise_has_a_shot_component() -> None:
    rng = np.random.default_rng(0)
    flat_lo = synth.add_noise(np.full(200_000, 0.2), sigma=0.1, rng=rng, mean_level=0.6)
    flat_hi = synth.add_noise(np.full(200_000, 1.0), sigma=0.1, rng=rng, mean_level=0.6)
    assert flat_hi.std() > 1.3 * flat_lo.std()
    both = synth.add_noise(np.r_[np.full(100_000, 0.2), np.full(100_000, 1.0)], sigma=0.1, rng=rng)
    resid = both - np.r_[np.full(100_000, 0.2), np.full(100_000, 1.0)]
    assert resid.std() == pytest.approx(0.1, rel=0.03)


def test_noise_sigma_from_snr() -> None:
    assert noise_sigma(4.0, 0.5) == 0.125
    assert noise_sigma(None, 0.5) == noise_sigma(float("inf"), 0.5) == 0.0
    for snr in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="snr must be positive"):
            noise_sigma(snr, 0.5)
