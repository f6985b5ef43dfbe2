"""The kernel's own geometry: the outline behind the Feret diameters against scikit-image's
contour, and the minimum Feret diameter against a brute-force caliper."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.measure
from scipy.spatial import ConvexHull
from skimage.morphology import convex_hull_image

from mosaicflow.measure.hull import (
    _hull,
    convex_image,
    feret_diameter_min,
    feret_diameters,
    shapes,
)


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


def test_convex_runs_equal_scikit_images_convex_image_pixel_for_pixel():
    """The hull decided in integers, row by row, against ``convex_hull_image`` on random
    regions (scattered pixels, single rows and columns, blobs); many regions at once give the
    same convex areas and Feret diameters as each region alone, and the largest Feret diameter
    is scikit-image's."""
    rng = np.random.default_rng(11)
    images = []
    for i in range(1500):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        if i % 5 == 0:  # lines and thin strips
            h = 1 if i % 10 == 0 else h
            w = 1 if i % 10 == 5 else w
        image = rng.random((h, w)) < rng.uniform(0.01, 0.9)
        if image.any():
            if i % 7 == 0:  # empty rows and columns around the region
                np.testing.assert_array_equal(convex_image(image), convex_hull_image(image))
            image = image[np.ix_(image.any(1), image.any(0))]  # its own bounding box
            images.append(image)
    assert len(images) > 1200
    expected_area, expected_max, alone = [], [], []
    for i, image in enumerate(images):
        expected = convex_hull_image(image)
        np.testing.assert_array_equal(convex_image(image), expected, err_msg=f"region {i}")
        expected_area.append(int(expected.sum()))
        expected_max.append(
            skimage.measure.regionprops(image.astype(np.uint8))[0].feret_diameter_max
        )
        alone.append(feret_diameters(expected))
    pid = np.concatenate([np.full(int(im.sum()), k) for k, im in enumerate(images)])
    ys = np.concatenate([np.nonzero(im)[0] for im in images])
    xs = np.concatenate([np.nonzero(im)[1] for im in images])
    order = np.random.default_rng(0).permutation(len(pid))  # any pixel order
    area, fmax, fmin = shapes(
        pid[order], ys[order], xs[order], np.array([im.shape[0] for im in images]), True
    )
    np.testing.assert_array_equal(area, expected_area)
    np.testing.assert_allclose(fmax, expected_max, rtol=1e-12)
    np.testing.assert_array_equal(np.stack([fmax, fmin], 1), np.array(alone))


def test_a_region_without_pixels_is_refused_by_name():
    with pytest.raises(ValueError, match="2-D mask with pixels"):
        convex_image(np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="2-D mask with pixels"):
        feret_diameters(np.ones(4, dtype=bool))
