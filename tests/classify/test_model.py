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
    GROSCHNER_FEATURES,
    HU_COLUMNS,
    SHAPE_FEATURES,
    ClassifierError,
    ParticleClassifier,
    add_derived_features,
    features_from_crops,
    feret_ratio,
    fourier_features,
    predict,
    train,
)
from mosaicflow.classify.model import as_pandas, check_features, feature_matrix
from mosaicflow.errors import ConfigError
from mosaicflow.measure.columns import GROUP_COLUMNS, table_columns


def test_features_are_particle_table_columns():
    """Every feature is a column the measurement writes, or derived from such columns."""
    table = set(table_columns(GROUP_COLUMNS, intensity=True, extras=[]))
    for name in DEFAULT_FEATURES:
        assert name in table or set(DERIVED_FEATURES.get(name, ("?",))) <= table, name
    assert HU_COLUMNS == tuple(f"moments_hu-{k}" for k in range(7))
    assert set(SHAPE_FEATURES) <= set(DEFAULT_FEATURES)
    assert set(GROSCHNER_FEATURES) <= set(DEFAULT_FEATURES)
    assert len(set(DEFAULT_FEATURES)) == len(DEFAULT_FEATURES) == 20
    assert not set(DERIVED_FEATURES) & table  # derived, not measured
    assert DERIVED_FEATURES["real_mean"] == ("intensity_mean",)
    assert DERIVED_FEATURES["real_std"] == ("intensity_std",)


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


def test_real_space_features_are_the_intensity_statistics(shapes, no_compute):
    assert not {"real_mean", "real_std"} & set(shapes.columns)
    out = add_derived_features(shapes)
    pd.testing.assert_series_equal(out["real_mean"], shapes["intensity_mean"], check_names=False)
    pd.testing.assert_series_equal(out["real_std"], shapes["intensity_std"], check_names=False)
    old = shapes.assign(real_mean=1.0)
    assert (add_derived_features(old)["real_mean"] == 1.0).all()  # a stored column is kept
    with no_compute():
        lazy = add_derived_features(dd.from_pandas(shapes, npartitions=3), ("real_std",))
    np.testing.assert_array_equal(lazy["real_std"].compute(), shapes["intensity_std"])
    with pytest.raises(ClassifierError, match=r"real_std \(from intensity_std\)"):
        check_features(["fft_mean", "real_mean", "intensity_mean"], ("real_std",), "predict")


def test_a_classifier_trained_on_real_columns_predicts_alike_on_tables_without_them(
    shape_crop, shape_names, tmp_path
):
    """Tables made before real_mean / real_std were dropped held them as columns (from
    fourier_features); a classifier trained on such a table, also after a save and load,
    classifies a new table (intensity_mean / intensity_std only) exactly as the old one."""
    rng = np.random.default_rng(3)
    kinds = [k for k in shape_names for _ in range(15)]
    crops = [shape_crop(k, rng) for k in kinds]
    new = features_from_crops([c[0] for c in crops], [c[1] for c in crops])
    real = np.array([fourier_features(image, mask)[3:] for image, mask in crops])
    old = new.assign(real_mean=real[:, 0], real_std=real[:, 1])
    np.testing.assert_allclose(old["real_mean"], new["intensity_mean"], rtol=1e-12)
    clf = train(old, kinds, n_estimators=30, cv=None, n_jobs=1)
    assert {"real_mean", "real_std"} <= set(clf.features)
    on_old = predict(old, clf)
    loaded = ParticleClassifier.load(clf.save(tmp_path / "old.clf"))
    for c in (clf, loaded):
        on_new = predict(new, c)
        assert not {"real_mean", "real_std"} & set(on_new.columns)  # derived, not added
        new_cols = ["class", "class_probability", *(f"proba_{k}" for k in shape_names)]
        pd.testing.assert_frame_equal(on_new[new_cols], on_old[new_cols], check_exact=True)


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
