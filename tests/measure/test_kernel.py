"""The kernel's own geometry: the minimum Feret diameter against a brute-force caliper."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.measure

from mosaicflow.measure._kernel import feret_diameter_min


@pytest.mark.parametrize("angle", [0.0, 0.3, 0.9, 1.4])
def test_feret_min_equals_a_brute_force_caliper(angle):
    yy, xx = np.mgrid[:80, :80] - 40.0
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    rect = (np.abs(u) <= 25) & (np.abs(v) <= 8)
    region = skimage.measure.regionprops(rect.astype(np.uint8))[0]
    contour = np.vstack(
        skimage.measure.find_contours(np.pad(region.image_convex, 2), 0.5, fully_connected="high")
    )

    def widths(thetas):
        return np.ptp(contour @ np.stack([np.cos(thetas), np.sin(thetas)]), axis=0)

    coarse = np.linspace(0, np.pi, 3600, endpoint=False)
    best = coarse[np.argmin(widths(coarse))]
    fine = np.linspace(best - 1e-3, best + 1e-3, 4001)  # refine around the coarse minimum
    assert feret_diameter_min(region.image_convex) == pytest.approx(widths(fine).min(), abs=1e-5)
    assert 16 <= feret_diameter_min(region.image_convex) <= 19
