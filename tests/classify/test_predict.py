"""mosaicflow.classify.predict: classifying pandas and Dask particle tables."""

from __future__ import annotations

import pickle

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from mosaicflow.classify import (
    UNCLASSIFIED,
    ClassifierError,
    add_derived_features,
    class_fractions,
    output_columns,
    predict,
)
from mosaicflow.measure import regionprops_table
from mosaicflow.measure.columns import column_units


def test_predict_pandas_equals_the_forest(model, shapes, shape_names):
    out = predict(shapes, model)
    new = ["class", "class_probability", *(f"proba_{c}" for c in shape_names)]
    assert list(out.columns) == [*shapes.columns, *new]
    x = add_derived_features(shapes)[list(model.features)].to_numpy()
    np.testing.assert_array_equal(out["class"].to_numpy(dtype=object), model.forest.predict(x))
    proba = out[[f"proba_{c}" for c in shape_names]].to_numpy()
    np.testing.assert_allclose(proba, model.forest.predict_proba(x))
    np.testing.assert_allclose(out["class_probability"], proba.max(axis=1))
    # Classifying again replaces the columns instead of duplicating them.
    again = predict(out, model)
    pd.testing.assert_frame_equal(again, out)


def test_predict_marks_non_finite_rows_unclassified(model, shapes, shape_names):
    bad = shapes.copy()
    bad.loc[[2, 7], "moments_hu-3"] = np.nan
    bad.loc[[9], "feret_diameter_max"] = 0.0  # feret_ratio = min / 0 = inf
    out = predict(bad, model)
    flagged = out["class"] == UNCLASSIFIED
    assert flagged.sum() == 3 and set(out.index[flagged]) == {2, 7, 9}
    assert out.loc[flagged, "class_probability"].isna().all()
    assert out.loc[flagged, [f"proba_{c}" for c in shape_names]].isna().all().all()
    good = predict(shapes, model)
    pd.testing.assert_frame_equal(out.loc[~flagged, "class":], good.loc[~flagged, "class":])
    fractions = class_fractions(out["class"], model.classes, confusion=model.cv_confusion)
    assert fractions.attrs["unclassified"] == 3 and fractions["count"].sum() == 117


def test_predict_names_missing_features(model, shapes):
    with pytest.raises(ClassifierError, match=r"lacks 2 feature.*\['solidity', 'fft_mean'\]"):
        predict(shapes.drop(columns=["solidity", "fft_mean"]), model)
    thin = shapes.drop(columns=["feret_diameter_min"])
    with pytest.raises(ClassifierError, match=r"feret_ratio.*from feret_diameter_min"):
        predict(thin, model)
    with pytest.raises(ClassifierError, match="lacks"):
        predict(dd.from_pandas(thin, npartitions=2), model)


def test_predict_dask_equals_pandas_lazily(no_compute, model, shapes):
    shapes = shapes.drop(columns=["truth", "group"])  # Dask would retype these string columns
    table = dd.from_pandas(shapes, npartitions=6)
    table = table[table["label"] > 0]
    with no_compute():
        lazy = predict(table, model)
    expected = predict(shapes, model)
    got = lazy.compute(scheduler="threads")
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(lazy._meta, expected.iloc[:0])
    # An empty partition keeps the dtypes.
    empty = predict(dd.from_pandas(shapes.iloc[:0], npartitions=1), model).compute()
    assert empty.dtypes.equals(expected.dtypes)


def test_predict_dask_sends_the_classifier_once(model, shapes):
    lazy = predict(dd.from_pandas(shapes, npartitions=8), model)
    graph = dict(lazy.__dask_graph__())
    keys = [k for k in graph if "mosaicflow-classifier-" in str(k)]
    assert len(keys) == 1
    blob = len(pickle.dumps(model))
    assert blob > 50_000  # the forest dominates anything else in the graph
    assert len(pickle.dumps(graph)) < blob + 50_000 + len(pickle.dumps(shapes))


def test_predict_on_the_measured_dask_table(model, shape_names, shape_crop):
    """The pipeline's own lazy table (chunked labels through regionprops_table) classifies
    like its computed pandas copy, and the shapes come out right."""
    rng = np.random.default_rng(8)
    labels = np.zeros((480, 480), dtype=np.uint32)
    image = np.full(labels.shape, 0.2)
    truth = {}
    for k in range(36):
        kind = shape_names[k % 3]
        crop, mask = shape_crop(kind, rng)
        y, x = 80 * (k // 6) + 40 - crop.shape[0] // 2, 80 * (k % 6) + 40 - crop.shape[1] // 2
        labels[y : y + crop.shape[0], x : x + crop.shape[1]][mask] = k + 1
        image[y : y + crop.shape[0], x : x + crop.shape[1]][mask] = crop[mask]
        truth[k + 1] = kind
    image += rng.normal(0, 0.05, image.shape)
    table = regionprops_table(da.from_array(labels, chunks=160), da.from_array(image, chunks=160))
    lazy = predict(table, model)
    got = lazy.compute().reset_index(drop=True)
    expected = predict(table.compute().reset_index(drop=True), model)
    pd.testing.assert_frame_equal(got, expected)
    hits = np.mean([truth[int(k)] == c for k, c in zip(got["label"], got["class"], strict=True)])
    assert len(got) == 36 and hits > 0.9


@pytest.mark.cluster
def test_predict_on_a_cluster(model, shapes, client):
    shapes = shapes.drop(columns=["truth", "group"])
    lazy = predict(dd.from_pandas(shapes, npartitions=4), model)
    got = client.compute(lazy).result()
    pd.testing.assert_frame_equal(got, predict(shapes, model))


def test_output_columns_and_wrong_arguments(model, shapes):
    assert output_columns(("a", "b")) == ["class", "class_probability", "proba_a", "proba_b"]
    added = predict(shapes, model).columns[len(shapes.columns) :]
    assert list(added) == output_columns(model.classes)
    with pytest.raises(ClassifierError, match="expected a ParticleClassifier, got RandomForest"):
        predict(shapes, model.forest)
    with pytest.raises(ClassifierError, match="expected a pandas or Dask DataFrame, got ndarray"):
        predict(shapes.to_numpy(), model)


def test_the_columns_predict_adds_have_units(model, shapes):
    """The stored table's schema carries a unit for every column, the classifier's too."""
    added = [c for c in predict(shapes, model).columns if c not in shapes.columns]
    assert added == output_columns(model.classes)
    units = column_units(added, physical=True, frame=True)
    assert units["class"] == "class name"
    assert {units[c] for c in added[1:]} == {"dimensionless"}
