"""mosaicflow.classify.crops: particle-table rows for hand-picked crops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops_table as sk_regionprops_table

from mosaicflow.classify import DEFAULT_FEATURES, add_derived_features, features_from_crops
from mosaicflow.errors import ConfigError


def test_features_from_crops_equal_scikit_image(shapes, shape_crop):
    rng = np.random.default_rng(5)
    image, mask = shape_crop("hexagon", rng)
    table = features_from_crops([image], [mask])
    props = ("area", "perimeter", "eccentricity", "solidity", "moments_hu", "intensity_mean")
    ref = sk_regionprops_table(mask.astype(np.uint8), image, properties=props)
    assert table["crop"].tolist() == [0] and table["label"].tolist() == [1]
    for name, values in ref.items():
        np.testing.assert_allclose(table[name], values, rtol=1e-9, err_msg=name)
    assert set(DEFAULT_FEATURES) <= set(add_derived_features(table).columns)


def test_features_from_crops_label_images_and_errors(shape_crop):
    rng = np.random.default_rng(6)
    (im1, m1), (im2, m2) = shape_crop("disc", rng), shape_crop("square", rng)
    both = np.zeros((max(m1.shape[0], m2.shape[0]), m1.shape[1] + m2.shape[1]), dtype=np.int32)
    image = np.zeros(both.shape)
    both[: m1.shape[0], : m1.shape[1]][m1] = 3
    both[: m2.shape[0], m1.shape[1] :][m2] = 7
    image[: m1.shape[0], : m1.shape[1]] = im1
    image[: m2.shape[0], m1.shape[1] :] = im2
    table = features_from_crops([im1, image], [m1, both])
    assert table["crop"].tolist() == [0, 1, 1]
    assert table["label"].tolist() == [1, 3, 7]
    single = features_from_crops([im1], [m1]).drop(columns=["crop", "label"])
    in_context = table.iloc[[1]].drop(columns=["crop", "label"]).reset_index(drop=True)
    cols = ["area", "perimeter", "circularity", "moments_hu-0", "fft_com", "intensity_std"]
    pd.testing.assert_frame_equal(single[cols], in_context[cols])
    with pytest.raises(ConfigError, match="crop 0: mask shape"):
        features_from_crops([im1], [m2])
    with pytest.raises(ConfigError, match="crop 1: the mask holds no particle"):
        features_from_crops([im1, im1], [m1, np.zeros_like(m1)])
    with pytest.raises(ConfigError, match="crop 0: mask must be boolean"):
        features_from_crops([im1], [m1.astype(float)])
    with pytest.raises(ConfigError, match="2 images but 1 masks"):
        features_from_crops([im1, im1], [m1])
