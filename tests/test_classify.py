"""mosaicflow.classify: class-fraction statistics, the random forest, crops, the CLI."""

from __future__ import annotations

import argparse
import io
import json
import pickle

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy.optimize import brentq
from skimage.draw import disk, polygon
from skimage.measure import regionprops_table as sk_regionprops_table
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    cross_val_predict,
)

from mosaicflow import cli_classify
from mosaicflow.classify import (
    DEFAULT_FEATURES,
    UNCLASSIFIED,
    ClassifierError,
    ParticleClassifier,
    adjusted_fractions,
    balanced_accuracy_from_confusion,
    class_fractions,
    features_from_crops,
    labels_from_file,
    load,
    predict,
    read_header,
    train,
    wilson_interval,
)
from mosaicflow.classify.forest import add_derived_features
from mosaicflow.errors import ConfigError, MosaicflowError
from mosaicflow.measure import regionprops_table

Z = 1.959963984540054


# --------------------------------------------------------------------------- Wilson interval


def test_wilson_known_values():
    # Textbook values of the 95 % Wilson interval.
    np.testing.assert_allclose(wilson_interval(5, 10), (0.2366, 0.7634), atol=5e-5)
    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.2775), atol=5e-5)
    np.testing.assert_allclose(wilson_interval(10, 10), (0.7225, 1.0), atol=5e-5)
    low, high = wilson_interval(np.array([0, 3, 7]), np.array([0, 10, 10]))
    assert np.isnan(low[0]) and np.isnan(high[0])
    np.testing.assert_allclose(low[1:], 1 - high[1:][::-1])  # symmetry k <-> n - k


@pytest.mark.parametrize("k, n", [(1, 7), (3, 10), (17, 40), (95, 100), (250, 1000)])
@pytest.mark.parametrize("z", [1.0, Z, 2.576])
def test_wilson_inverts_the_score_test(k, n, z):
    """Oracle: the interval ends are the two roots of (k/n - p)^2 = z^2 p (1 - p) / n."""
    p_hat = k / n

    def score(p: float) -> float:
        return (p_hat - p) ** 2 - z * z * p * (1 - p) / n

    low = brentq(score, 0.0, p_hat) if k > 0 else 0.0
    high = brentq(score, p_hat, 1.0) if k < n else 1.0
    np.testing.assert_allclose(wilson_interval(k, n, z=z), (low, high), atol=1e-10)


def test_wilson_coverage_by_simulation():
    rng = np.random.default_rng(7)
    n, draws = 60, 20000
    for p in (0.03, 0.05, 0.1, 0.3, 0.5):
        k = rng.binomial(n, p, size=draws)
        low, high = wilson_interval(k, np.full(draws, n))
        wilson = np.mean((low <= p) & (p <= high))
        half = Z * np.sqrt(k / n * (1 - k / n) / n)
        wald = np.mean((k / n - half <= p) & (p <= k / n + half))
        assert 0.92 <= wilson <= 0.99, (p, wilson)
        if p <= 0.05:  # where the textbook Wald interval fails, Wilson must not
            assert wald < 0.90 < wilson, (p, wald, wilson)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ConfigError, match="0 <= k <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ConfigError, match="0 <= k <= n"):
        wilson_interval(-1, 10)


# --------------------------------------------------------------------------- class fractions

CLASSES3 = ["a", "b", "c"]
RATES = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.15, 0.80]])


def test_class_fractions_raw_columns():
    pred = ["a"] * 30 + ["b"] * 10 + [UNCLASSIFIED] * 4 + ["c"] * 60
    out = class_fractions(pred, CLASSES3)
    assert list(out.columns) == ["class", "count", "fraction", "ci_low", "ci_high"]
    assert out["count"].tolist() == [30, 10, 60]
    np.testing.assert_allclose(out["fraction"], [0.3, 0.1, 0.6])
    low, high = wilson_interval(np.array([30, 10, 60]), 100)
    np.testing.assert_allclose(out["ci_low"], low)
    np.testing.assert_allclose(out["ci_high"], high)
    assert out.attrs["unclassified"] == 4 and out.attrs["n"] == 100
    with pytest.raises(ConfigError, match=r"\['x'\]"):
        class_fractions(["a", "x"], CLASSES3)


def test_adjusted_fractions_exact_when_observed_is_consistent():
    p = np.array([0.5, 0.2, 0.3])
    np.testing.assert_allclose(adjusted_fractions(RATES.T @ p, RATES), p, atol=1e-12)
    # A mix on the simplex's edge: NNLS keeps the absent class at zero.
    p = np.array([0.7, 0.3, 0.0])
    np.testing.assert_allclose(adjusted_fractions(RATES.T @ p * 1000, RATES), p, atol=1e-12)


def _simulate(rng, truth, n, n_val):
    true = rng.choice(3, size=n, p=truth)
    pred = np.array([rng.choice(3, p=RATES[t]) for t in true])
    confusion = np.stack([rng.multinomial(n_val, RATES[i]) for i in range(3)])
    return np.asarray(CLASSES3, dtype=object)[pred], confusion


def test_adjusted_estimate_recovers_a_known_mix():
    """Known mix + known confusion: the adjusted estimate beats the raw fractions and its
    bootstrap interval covers the truth about as often as it claims."""
    rng = np.random.default_rng(3)
    truth = np.array([0.6, 0.3, 0.1])
    raw, adjusted, covered = [], [], []
    for rep in range(40):
        pred, confusion = _simulate(rng, truth, n=1500, n_val=200)
        out = class_fractions(pred, CLASSES3, confusion=confusion, n_boot=400, random_state=rep)
        raw.append(out["fraction"].to_numpy())
        adjusted.append(out["adjusted_fraction"].to_numpy())
        covered.append((out["adjusted_low"] <= truth) & (truth <= out["adjusted_high"]))
        assert np.isclose(out["adjusted_fraction"].sum(), 1.0)
    raw, adjusted = np.array(raw), np.array(adjusted)
    # Raw counting is biased by the confusion (cubes lost to spheres...); the adjusted
    # estimate is not, and is closer to the truth on average despite its larger variance.
    assert np.abs(raw.mean(axis=0) - truth).max() > 0.04
    assert np.abs(adjusted.mean(axis=0) - truth).max() < 0.01
    assert np.abs(adjusted - truth).sum(axis=1).mean() < np.abs(raw - truth).sum(axis=1).mean()
    coverage = np.mean(covered, axis=0)
    assert np.all(coverage >= 0.85), coverage
    # The raw Wilson interval, which ignores the classifier's errors, misses badly.
    pred, confusion = _simulate(rng, truth, n=1500, n_val=200)
    out = class_fractions(pred, CLASSES3, confusion=confusion)
    assert not ((out["ci_low"] <= truth) & (truth <= out["ci_high"])).all()


def test_class_fractions_takes_a_labelled_confusion():
    rng = np.random.default_rng(0)
    pred, confusion = _simulate(rng, np.array([0.2, 0.5, 0.3]), n=500, n_val=100)
    frame = pd.DataFrame(confusion, index=CLASSES3, columns=CLASSES3)
    shuffled = frame.loc[["c", "a", "b"], ["b", "c", "a"]]
    a = class_fractions(pred, CLASSES3, confusion=confusion)
    b = class_fractions(pred, CLASSES3, confusion=shuffled)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ConfigError, match="shape"):
        class_fractions(pred, CLASSES3, confusion=confusion[:2])
    empty_row = confusion.copy()
    empty_row[1] = 0
    with pytest.raises(ConfigError, match=r"true class \['b'\]"):
        class_fractions(pred, CLASSES3, confusion=empty_row)


def test_balanced_accuracy_from_confusion_equals_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    m = sk_confusion_matrix(y, p)
    assert balanced_accuracy_from_confusion(m) == pytest.approx(balanced_accuracy_score(y, p))


# --------------------------------------------------------------------------- synthetic shapes

SHAPES = ("disc", "hexagon", "square")


def _shape_crop(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r = rng.uniform(10, 22)
    size = int(2 * r + 12)
    c = size / 2
    mask = np.zeros((size, size), dtype=bool)
    if kind == "disc":
        mask[disk((c, c), r, shape=mask.shape)] = True
    else:
        sides = 6 if kind == "hexagon" else 4
        angles = rng.uniform(0, 2 * np.pi) + np.arange(sides) * 2 * np.pi / sides
        mask[polygon(c + r * np.sin(angles), c + r * np.cos(angles), mask.shape)] = True
    image = np.where(mask, 0.8, 0.2) + rng.normal(0, 0.05, mask.shape)
    return image, mask


@pytest.fixture(scope="module")
def shapes() -> pd.DataFrame:
    """Discs, hexagons and squares (random size and rotation), measured like the pipeline."""
    rng = np.random.default_rng(11)
    kinds = [k for k in SHAPES for _ in range(40)]
    crops = [_shape_crop(k, rng) for k in kinds]
    table = features_from_crops([c[0] for c in crops], [c[1] for c in crops])
    table["truth"] = kinds
    table["group"] = [f"g{i % 5}" for i in range(len(kinds))]
    return table


@pytest.fixture(scope="module")
def model(shapes) -> ParticleClassifier:
    return train(shapes, shapes["truth"], n_estimators=60, cv=3, n_jobs=1)


# --------------------------------------------------------------------------- crops


def test_features_from_crops_equal_scikit_image(shapes):
    rng = np.random.default_rng(5)
    image, mask = _shape_crop("hexagon", rng)
    table = features_from_crops([image], [mask])
    props = ("area", "perimeter", "eccentricity", "solidity", "moments_hu", "intensity_mean")
    ref = sk_regionprops_table(mask.astype(np.uint8), image, properties=props)
    assert table["crop"].tolist() == [0] and table["label"].tolist() == [1]
    for name, values in ref.items():
        np.testing.assert_allclose(table[name], values, rtol=1e-9, err_msg=name)
    assert set(DEFAULT_FEATURES) <= set(add_derived_features(table).columns)


def test_features_from_crops_label_images_and_errors():
    rng = np.random.default_rng(6)
    (im1, m1), (im2, m2) = _shape_crop("disc", rng), _shape_crop("square", rng)
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
    cols = ["area", "perimeter", "circularity", "moments_hu-0", "fft_com", "real_std"]
    pd.testing.assert_frame_equal(single[cols], in_context[cols])
    with pytest.raises(ConfigError, match="crop 0: mask shape"):
        features_from_crops([im1], [m2])
    with pytest.raises(ConfigError, match="crop 1: the mask holds no particle"):
        features_from_crops([im1, im1], [m1, np.zeros_like(m1)])
    with pytest.raises(ConfigError, match="crop 0: mask must be boolean"):
        features_from_crops([im1], [m1.astype(float)])
    with pytest.raises(ConfigError, match="2 images but 1 masks"):
        features_from_crops([im1, im1], [m1])


# --------------------------------------------------------------------------- training


def test_train_separates_shapes(model, shapes):
    assert model.classes == SHAPES
    assert model.n_train == len(shapes)
    assert model.class_counts == {k: 40 for k in SHAPES}
    assert model.cv_folds == 3 and not model.cv_grouped
    assert model.cv_balanced_accuracy > 0.9
    assert model.oob_confusion.sum() == len(shapes)
    assert model.cv_confusion is not None and model.cv_confusion.sum() == len(shapes)
    assert model.oob_balanced_accuracy == pytest.approx(
        balanced_accuracy_from_confusion(model.oob_confusion)
    )
    imp = model.feature_importances()
    assert imp.sum() == pytest.approx(1.0) and imp.is_monotonic_decreasing
    frame = model.confusion_frame("cv")
    assert list(frame.index) == list(SHAPES) == list(frame.columns)
    summary = model.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["confusion_kind"] == "cv" and summary["confusion"] == frame.values.tolist()


def test_cross_validation_equals_sklearn(shapes, model):
    """Oracle: scikit-learn's cross_val_predict with the same forest and folds."""
    x = add_derived_features(shapes)[list(DEFAULT_FEATURES)].to_numpy()
    y = shapes["truth"].to_numpy()
    forest = RandomForestClassifier(
        n_estimators=60, class_weight="balanced", random_state=0, n_jobs=1
    )
    pred = cross_val_predict(
        forest, x, y, cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    )
    np.testing.assert_array_equal(model.cv_confusion, sk_confusion_matrix(y, pred))
    grouped = train(shapes, shapes["truth"], n_estimators=60, cv=3, groups="group", n_jobs=1)
    g = shapes["group"].to_numpy()
    pred = cross_val_predict(
        forest, x, y, groups=g, cv=StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
    )
    np.testing.assert_array_equal(grouped.cv_confusion, sk_confusion_matrix(y, pred))
    assert grouped.cv_grouped


def test_grouped_cv_exposes_a_group_confound():
    """Each 'image' holds one class and has its own brightness: ungrouped folds learn the
    brightness and look good; folds that keep images whole show the features carry no class."""
    rng = np.random.default_rng(2)
    rows = []
    for image in range(12):
        cls = ("x", "y", "z")[image % 3]
        brightness = rng.normal(0, 1)
        for _ in range(30):
            rows.append(
                {
                    "noise": rng.normal(),
                    "bright": brightness + rng.normal(0, 0.01),
                    "cls": cls,
                    "image": image,
                }
            )
    table = pd.DataFrame(rows)
    common = {"features": ("noise", "bright"), "n_estimators": 40, "n_jobs": 1, "cv": 4}
    loose = train(table, table["cls"], **common)
    grouped = train(table, table["cls"], groups="image", **common)
    assert loose.cv_balanced_accuracy > 0.95
    assert grouped.cv_balanced_accuracy < 0.7


def test_cv_folds_follow_the_rarest_class():
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"f": rng.normal(size=60), "image": np.repeat(np.arange(6), 10)})
    labels = np.where(table["image"] < 3, "p", "q")  # 3 images per class
    clf = train(table, labels, features=("f",), groups="image", n_estimators=30, n_jobs=1)
    assert clf.cv_folds == 3
    assert any("3 folds instead of 5" in note for note in clf.notes)
    labels = np.where(table["image"] < 1, "p", "q")
    with pytest.raises(ClassifierError, match="class 'p' has 1"):
        train(table, labels, features=("f",), groups="image", n_estimators=30, n_jobs=1)


def test_train_errors(shapes):
    labels = shapes["truth"]
    with pytest.raises(ClassifierError, match=r"lacks 2 feature column\(s\) \['nope', 'zilch'\]"):
        train(shapes, labels, features=("area", "nope", "zilch"))
    bad = shapes.copy()
    bad.loc[[3, 5, 8], "solidity"] = np.nan
    bad.loc[[5], "fft_com"] = np.inf
    with pytest.raises(ClassifierError, match=r"3 labelled .*solidity: 3, fft_com: 1"):
        train(bad, labels, n_estimators=10, cv=None)
    # Unlabelled rows are simply left out, even with bad features.
    partial = labels.where(~labels.index.isin([3, 5, 8]))
    clf = train(bad, partial, n_estimators=10, cv=None, n_jobs=1)
    assert clf.n_train == len(shapes) - 3
    with pytest.raises(ClassifierError, match="at least two classes"):
        train(shapes, ["disc"] * len(shapes), n_estimators=10, cv=None)
    with pytest.raises(ClassifierError, match="got 3 values for a table of 120"):
        train(shapes, ["disc", "square", "disc"], n_estimators=10)
    with pytest.raises(ClassifierError, match="reserved"):
        train(shapes, labels.replace("disc", UNCLASSIFIED), n_estimators=10, cv=None)
    with pytest.raises(ClassifierError, match="group column 'where'"):
        train(shapes, labels, groups="where", n_estimators=10)
    assert issubclass(ClassifierError, MosaicflowError)


# --------------------------------------------------------------------------- predicting


def test_predict_pandas_equals_the_forest(model, shapes):
    out = predict(shapes, model)
    new = ["class", "class_probability", *(f"proba_{c}" for c in SHAPES)]
    assert list(out.columns) == [*shapes.columns, *new]
    x = add_derived_features(shapes)[list(model.features)].to_numpy()
    np.testing.assert_array_equal(out["class"].to_numpy(dtype=object), model.forest.predict(x))
    proba = out[[f"proba_{c}" for c in SHAPES]].to_numpy()
    np.testing.assert_allclose(proba, model.forest.predict_proba(x))
    np.testing.assert_allclose(out["class_probability"], proba.max(axis=1))
    # Classifying again replaces the columns instead of duplicating them.
    again = predict(out, model)
    pd.testing.assert_frame_equal(again, out)


def test_predict_marks_non_finite_rows_unclassified(model, shapes):
    bad = shapes.copy()
    bad.loc[[2, 7], "moments_hu-3"] = np.nan
    bad.loc[[9], "feret_diameter_max"] = 0.0  # feret_ratio = min / 0 = inf
    out = predict(bad, model)
    flagged = out["class"] == UNCLASSIFIED
    assert flagged.sum() == 3 and set(out.index[flagged]) == {2, 7, 9}
    assert out.loc[flagged, "class_probability"].isna().all()
    assert out.loc[flagged, [f"proba_{c}" for c in SHAPES]].isna().all().all()
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


class _NoCompute(dask.callbacks.Callback):
    def _start(self, dsk):
        raise AssertionError("a graph was computed while it was being built")


def test_predict_dask_equals_pandas_lazily(model, shapes):
    shapes = shapes.drop(columns=["truth", "group"])  # Dask would retype these string columns
    table = dd.from_pandas(shapes, npartitions=6)
    table = table[table["label"] > 0]
    with _NoCompute():
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


def test_predict_on_the_measured_dask_table(model):
    """The pipeline's own lazy table (chunked labels through regionprops_table) classifies
    like its computed pandas copy, and the shapes come out right."""
    rng = np.random.default_rng(8)
    labels = np.zeros((480, 480), dtype=np.uint32)
    image = np.full(labels.shape, 0.2)
    truth = {}
    for k in range(36):
        kind = SHAPES[k % 3]
        crop, mask = _shape_crop(kind, rng)
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


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip(model, shapes, tmp_path):
    path = model.save(tmp_path / "model.joblib")
    head = read_header(path)
    assert head["classes"] == list(SHAPES) and head["features"] == list(DEFAULT_FEATURES)
    assert head["n_train"] == 120 and head["cv_folds"] == 3
    loaded = load(path)
    assert loaded.header() == model.header()
    np.testing.assert_array_equal(loaded.cv_confusion, model.cv_confusion)
    pd.testing.assert_frame_equal(predict(shapes, loaded), predict(shapes, model))
    assert not list(tmp_path.glob("*.partial"))


def test_load_rejects_bad_files(model, tmp_path):
    import joblib

    good = model.save(tmp_path / "good.joblib").read_bytes()
    with pytest.raises(ClassifierError, match="not found"):
        load(tmp_path / "missing.joblib")
    foreign = tmp_path / "foreign.joblib"
    joblib.dump({"forest": model.forest}, foreign)
    with pytest.raises(ClassifierError, match="not a mosaicflow particle classifier"):
        load(foreign)
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(good[: len(good) - 1000])
    with pytest.raises(ClassifierError, match="truncated or damaged"):
        load(truncated)
    flipped = bytearray(good)
    flipped[-500] ^= 0xFF
    (tmp_path / "flipped.joblib").write_bytes(bytes(flipped))
    with pytest.raises(ClassifierError, match="checksum"):
        load(tmp_path / "flipped.joblib")
    future = good.replace(b'"format_version": 1', b'"format_version": 99', 1)
    (tmp_path / "future.joblib").write_bytes(future)
    with pytest.raises(ClassifierError, match="format version 99"):
        load(tmp_path / "future.joblib")
    lines = good.split(b"\n", 2)
    (tmp_path / "header.joblib").write_bytes(lines[0] + b"\n{not json\n" + lines[2])
    with pytest.raises(ClassifierError, match="damaged header"):
        load(tmp_path / "header.joblib")


# --------------------------------------------------------------------------- labels file


def test_labels_from_file(shapes, tmp_path):
    table = shapes.assign(label=np.arange(101, 101 + len(shapes))).iloc[::-1]
    table.index = np.arange(1000, 1000 + len(shapes))
    rows = table.iloc[[0, 5, 9]]
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"label": rows["label"], "class": rows["truth"]}).to_csv(csv, index=False)
    labels = labels_from_file(csv, table)
    assert labels.name == "class"
    assert sorted(labels.index) == sorted(rows.index)
    assert (labels == table.loc[labels.index, "truth"]).all()
    pq = tmp_path / "labels.parquet"
    pd.DataFrame({"label": rows["label"], "class": rows["truth"]}).to_parquet(pq)
    pd.testing.assert_series_equal(labels_from_file(pq, table), labels)
    lazy = labels_from_file(csv, dd.from_pandas(table, npartitions=3))
    pd.testing.assert_series_equal(lazy.sort_index(), labels.sort_index())


def test_labels_from_file_errors(shapes, tmp_path):
    table = shapes.assign(label=np.arange(1, len(shapes) + 1))
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"label": [1], "class": ["disc"]}).to_csv(bad, index=False)
    with pytest.raises(ClassifierError, match="'label' column repeats ids"):
        labels_from_file(bad, shapes)  # every crop's particle is label 1
    pd.DataFrame({"label": [1, 2, 500, 501, 777], "class": ["disc"] * 5}).to_csv(bad, index=False)
    with pytest.raises(ClassifierError, match=r"3 of 5 labels .*\[500, 501, 777\]"):
        labels_from_file(bad, table)
    pd.DataFrame({"id": [1], "class": ["disc"]}).to_csv(bad, index=False)
    with pytest.raises(ClassifierError, match=r"bad.csv': lacks column\(s\) \['label'\]"):
        labels_from_file(bad, table)
    pd.DataFrame({"label": [1, 1, 2, 2], "class": ["disc"] * 4}).to_csv(bad, index=False)
    with pytest.raises(ClassifierError, match="2 particle id"):
        labels_from_file(bad, table)
    pd.DataFrame({"label": [1, 2.5], "class": ["disc"] * 2}).to_csv(bad, index=False)
    with pytest.raises(ClassifierError, match="not integer"):
        labels_from_file(bad, table)
    with pytest.raises(ClassifierError, match="not found"):
        labels_from_file(tmp_path / "none.csv", table)


# --------------------------------------------------------------------------- command line


def _cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="mosaicflow")
    cli_classify.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    buf = io.StringIO()
    code = args.func(args, Console(file=buf, width=120))
    return code, buf.getvalue()


@pytest.fixture
def cli_inputs(shapes, tmp_path):
    table = shapes.drop(columns=["truth"]).assign(label=np.arange(1, len(shapes) + 1))
    store = tmp_path / "run.zarr"
    (store / "tables").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    table.to_parquet(store / "tables" / "particles.parquet")
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"label": table["label"], "class": shapes["truth"]}).to_csv(labels, index=False)
    return store, labels


def test_cli_classify_train(cli_inputs, tmp_path, shapes):
    store, labels = cli_inputs
    out = tmp_path / "model.joblib"
    argv = ["classify-train", str(store), str(labels), "--out", str(out)]
    code, text = _cli([*argv, "--trees", "40", "--cv", "3", "--groups", "group", "--jobs", "1"])
    assert code == 0
    assert "CV balanced accuracy (3 grouped folds)" in text
    assert "OOB accuracy" in text and "square" in text and "Saved classifier" in text
    clf = load(out)
    assert clf.cv_grouped and clf.forest.n_estimators == 40
    with pytest.raises(ClassifierError, match="exists"):
        _cli(argv)
    table_file = store / "tables" / "particles.parquet"
    code, text = _cli(
        [
            "classify-train",
            str(table_file),
            str(labels),
            "--out",
            str(out),
            "--overwrite",
            "--features",
            "circularity,feret_ratio",
            "solidity",
            "--cv",
            "0",
            "--trees",
            "20",
        ]
    )
    assert code == 0 and "out-of-bag confusion" in text
    assert load(out).features == ("circularity", "feret_ratio", "solidity")


def test_cli_classify_train_errors(cli_inputs, tmp_path):
    store, labels = cli_inputs
    (store / "tables" / "particles.parquet").unlink()
    with pytest.raises(ClassifierError, match=r"no tables/particles\.parquet"):
        _cli(["classify-train", str(store), str(labels), "--out", str(tmp_path / "m")])
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ClassifierError, match=r"junk\.parquet': not a readable Parquet"):
        _cli(["classify-train", str(junk), str(labels), "--out", str(tmp_path / "m")])


def test_cli_main_runs_classify_train(cli_inputs, tmp_path, capsys):
    from mosaicflow import cli

    parser = cli.build_parser()
    choices = next(a.choices for a in parser._actions if isinstance(a.choices, dict))
    if "classify-train" not in choices:
        pytest.skip("classify-train is not hooked into mosaicflow.cli yet")
    store, labels = cli_inputs
    out = tmp_path / "model.joblib"
    argv = ["classify-train", str(store), str(labels), "--out", str(out), "--trees", "20"]
    assert cli.main([*argv, "--jobs", "1"]) == 0
    assert load(out).n_train == 120
    assert cli.main(argv) == 2  # exists: a clear error, not a traceback
    assert "ClassifierError" in capsys.readouterr().out
