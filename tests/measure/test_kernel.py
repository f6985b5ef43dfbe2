"""The kernel's own geometry: the outline behind the Feret diameters against scikit-image's
contour, and the minimum Feret diameter against a brute-force caliper."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.measure
from scipy.spatial import ConvexHull
from skimage.morphology import convex_hull_image

from mosaicflow.measure._kernel import _hull, feret_diameter_min


def test_the_outline_is_the_hull_of_scikit_images_contour_point_for_point():
    """The kernel takes the midpoints of the region's boundary pixel edges; scikit-image traces
    the 0.5 iso-contour of the convex image padded by 2 px: the same hull vertices, bit for bit,
    on random convex images (single pixels, lines and blobs among them)."""
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        image = rng.random((h, w)) < rng.uniform(0.02, 0.9)
        if not image.any():
            continue
        convex = convex_hull_image(image)
        points = np.vstack(skimage.measure.find_contours(np.pad(convex, 2), 0.5, "high"))
        expected = points[ConvexHull(points).vertices]
        got = _hull(convex)
        assert {tuple(p) for p in got} == {tuple(p) for p in expected}
        checked += 1
    assert checked > 300


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
