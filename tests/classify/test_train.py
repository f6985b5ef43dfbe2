"""mosaicflow.classify.train: fitting, out-of-bag and cross-validated scores, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    cross_val_predict,
)

from mosaicflow.classify import (
    DEFAULT_FEATURES,
    UNCLASSIFIED,
    ClassifierError,
    add_derived_features,
    balanced_accuracy_from_confusion,
    train,
)
from mosaicflow.errors import ConfigError, MosaicflowError


def test_train_separates_shapes(model, shapes, shape_names):
    assert model.classes == shape_names
    assert model.n_train == len(shapes)
    assert model.class_counts == {k: 40 for k in shape_names}
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
    assert list(frame.index) == list(shape_names) == list(frame.columns)
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


def test_train_parameter_errors(shapes):
    labels = shapes["truth"]
    with pytest.raises(ConfigError, match="distinct and non-empty"):
        train(shapes, labels, features=())
    with pytest.raises(ConfigError, match="distinct and non-empty"):
        train(shapes, labels, features=("area", "area"))
    with pytest.raises(ConfigError, match="n_estimators must be an integer >= 1, got 0"):
        train(shapes, labels, n_estimators=0)
    with pytest.raises(ConfigError, match="cv must be >= 2"):
        train(shapes, labels, cv=1)
    assert train(shapes, labels, n_estimators=5, cv=0, n_jobs=1).cv_folds is None
