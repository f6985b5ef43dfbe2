"""mosaicflow.classify.model: the feature lists, derived features, feature checks and the
classifier object's own methods."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from mosaicflow.classify import (
    DEFAULT_FEATURES,
    DERIVED_FEATURES,
    HU_COLUMNS,
    SHAPE_FEATURES,
    ClassifierError,
    add_derived_features,
    feret_ratio,
    train,
)
from mosaicflow.classify.model import as_pandas, check_features, feature_matrix
from mosaicflow.errors import ConfigError
from mosaicflow.measure._kernel import BASE_COLUMNS, SHAPE_COLUMNS
from mosaicflow.measure.features import FOURIER_COLUMNS


def test_features_are_particle_table_columns():
    """Every feature is a column the measurement writes, or derived from such columns."""
    table = {*BASE_COLUMNS, *SHAPE_COLUMNS, *FOURIER_COLUMNS}
    for name in DEFAULT_FEATURES:
        assert name in table or set(DERIVED_FEATURES.get(name, ("?",))) <= table, name
    assert HU_COLUMNS == tuple(f"moments_hu-{k}" for k in range(7))
    assert set(SHAPE_FEATURES) <= set(DEFAULT_FEATURES)
    assert len(set(DEFAULT_FEATURES)) == len(DEFAULT_FEATURES) == 20
    assert not set(DERIVED_FEATURES) & table  # derived, not measured


def test_feret_ratio_values():
    with np.errstate(divide="ignore", invalid="ignore"):
        got = feret_ratio(np.array([1.0, np.sqrt(3) / 2, 0.0, 0.0]), np.array([2.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(got[:3], [0.5, np.sqrt(3) / 2, 0.0])
    assert np.isnan(got[3])


def test_add_derived_features_pandas_and_dask(no_compute):
    table = pd.DataFrame(
        {"feret_diameter_min": [1.0, 2.0, 0.0], "feret_diameter_max": [2.0, 2.0, 0.0]}
    )
    out = add_derived_features(table)
    assert list(out.columns) == [*table.columns, "feret_ratio"]
    np.testing.assert_array_equal(out["feret_ratio"], [0.5, 1.0, np.nan])
    kept = table.assign(feret_ratio=[9.0, 9.0, 9.0])
    assert add_derived_features(kept) is kept  # present columns are kept as they are
    assert add_derived_features(table, ("circularity",)) is table  # not asked for
    lazy_in = dd.from_pandas(table, npartitions=2)
    with no_compute():
        lazy = add_derived_features(lazy_in)
    pd.testing.assert_frame_equal(lazy.compute(), out)


def test_check_features_names_every_missing_one():
    with pytest.raises(ClassifierError, match=r"lacks 2 feature.*\['solidity', 'feret_ratio'\]"):
        check_features(
            ["circularity", "feret_diameter_max"],
            ("circularity", "solidity", "feret_ratio"),
            "predict",
        )
    with pytest.raises(ClassifierError, match=r"feret_ratio \(from feret_diameter_min and"):
        check_features(["feret_diameter_max"], ("feret_ratio",), "train")
    check_features(["feret_diameter_min", "feret_diameter_max"], ("feret_ratio",), "train")


def test_feature_matrix_and_as_pandas():
    table = pd.DataFrame({"a": [1, 2], "flag": [True, False], "name": ["x", "y"]})
    np.testing.assert_array_equal(
        feature_matrix(table, ("flag", "a"), "train"), [[1.0, 1.0], [0.0, 2.0]]
    )
    with pytest.raises(ClassifierError, match=r"train: feature column\(s\) \['name'\]"):
        feature_matrix(table, ("a", "name"), "train")
    lazy = dd.from_pandas(table, npartitions=1)
    assert list(as_pandas(lazy, ["a", "nope"]).columns) == ["a"]
    assert as_pandas(table, ["a"]) is table
    with pytest.raises(ClassifierError, match="got ndarray"):
        as_pandas(np.zeros((2, 2)), ["a"])


def test_confusion_frame_kinds(model, shapes, shape_names):
    oob = model.confusion_frame("oob")
    np.testing.assert_array_equal(oob.to_numpy(), model.oob_confusion)
    assert oob.index.name == "true" and oob.columns.name == "predicted"
    assert list(oob.index) == list(shape_names)
    with pytest.raises(ConfigError, match="'cv' or 'oob'"):
        model.confusion_frame("test")
    no_cv = train(shapes, shapes["truth"], n_estimators=10, cv=None, n_jobs=1)
    with pytest.raises(ClassifierError, match="without cv"):
        no_cv.confusion_frame("cv")
    summary = no_cv.summary()
    assert (
        summary["confusion_kind"] == "oob" and summary["confusion"] == no_cv.oob_confusion.tolist()
    )
