"""The registration tests' synthetic grid: 3x4 tiles of 300x400 px, 10 % overlap, 8 px stage
error, dense enough that every overlap holds particles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mosaicflow import synth


def _write_grid(folder: Path, seed: int) -> Path:
    synth.write_maps_grid(
        folder,
        rows=3,
        cols=4,
        tile_shape=(300, 400),
        overlap=0.1,
        stage_error_px=8,
        snr=20,
        seed=seed,
        density=40.0,
    )
    return folder


@pytest.fixture
def write_grid() -> Callable[[Path, int], Path]:
    """Writes the registration grid with a given seed into a folder; returns the folder."""
    return _write_grid
