"""The window grid and the blending weights against MONAI's ``dense_patch_slices`` and
``compute_importance_map``."""

from __future__ import annotations

import numpy as np
import pytest
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from mosaicflow.segmentation import importance_map, window_grid


@pytest.mark.parametrize("size", [64, 65, 100, 111, 112, 300, 513])
@pytest.mark.parametrize(("window", "overlap"), [(64, 0.25), (64, 0.0), (64, 0.5), (96, 0.9)])
def test_window_grid_is_monais(size, window, overlap):
    shape = (size, 200)
    grid = window_grid(shape, window, overlap)
    padded = tuple(max(s, window) for s in shape)
    interval = _get_scan_interval(padded, (window, window), 2, (overlap, overlap))
    slices = dense_patch_slices(padded, (window, window), interval)
    expected = sorted({(s[0].start, s[1].start) for s in slices})
    got = [(int(y), int(x)) for y in grid.starts_y for x in grid.starts_x]
    assert got == expected
    assert grid.n_windows == len(slices)


@pytest.mark.parametrize("window", [64, 65, 96])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("sigma_scale", [0.125, 0.3])
def test_importance_map_is_monais(window, blend, sigma_scale):
    ours = importance_map(window, blend, sigma_scale)
    theirs = compute_importance_map((window, window), mode=blend, sigma_scale=sigma_scale)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs.numpy())
    assert ours.min() > 0
