"""Training: fit a random forest on labelled particle-table rows and validate it.

:func:`train` fits scikit-learn's ``RandomForestClassifier`` and measures it twice: out of
bag, and by stratified (optionally grouped) cross-validation, whose pooled confusion the class
fractions are later corrected with. ``docs/CLASSIFY.md`` says what the numbers mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from mosaicflow.classify.metrics import UNCLASSIFIED, balanced_accuracy_from_confusion
from mosaicflow.classify.model import (
    DEFAULT_FEATURES,
    DERIVED_FEATURES,
    ParticleClassifier,
    as_pandas,
    feature_matrix,
)
from mosaicflow.errors import ClassifierError, ConfigError


def _non_finite_report(x: np.ndarray, features: Sequence[str]) -> str:
    """``"feature: count"`` of the non-finite values per feature that has any."""
    counts = (~np.isfinite(x)).sum(axis=0)
    return ", ".join(f"{f}: {int(n)}" for f, n in zip(features, counts, strict=True) if n)


def _align(values: Any, table: pd.DataFrame, what: str) -> pd.Series:
    """``values`` as a Series on ``table.index`` (by index for a Series, else by position)."""
    if isinstance(values, pd.Series):
        extra = values.index.difference(table.index)
        if len(extra):
            raise ClassifierError(
                f"{what}: {len(extra)} entries have index values not in the particle table, "
                f"e.g. {list(extra[:5])}"
            )
        return values.reindex(table.index)
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or len(arr) != len(table):
        raise ClassifierError(
            f"{what}: got {arr.shape[0] if arr.ndim else 0} values for a table of {len(table)} "
            "rows (pass a Series indexed like the table, or one value per row)"
        )
    return pd.Series(arr, index=table.index)


def _cv_splits(
    y: np.ndarray, groups: np.ndarray | None, cv: int, random_state: int
) -> tuple[Any, int, list[str]]:
    """The fold splitter, its number of folds (at most ``cv``, fewer for a rare class) and
    notes saying why fewer."""
    classes, inverse = np.unique(y, return_inverse=True)
    if groups is None:
        support = np.bincount(inverse)
        unit = "particles"
    else:
        support = np.array([len(np.unique(groups[inverse == k])) for k in range(len(classes))])
        unit = "groups"
    smallest = int(support.min())
    weakest = str(classes[int(support.argmin())])
    if smallest < 2:
        raise ClassifierError(
            f"train: cross-validation needs every class in at least 2 {unit}; class "
            f"{weakest!r} has {smallest} (pass cv=None to skip it)"
        )
    n_splits = min(cv, smallest)
    notes = []
    if n_splits < cv:
        notes.append(
            f"cross-validation: {n_splits} folds instead of {cv}: class {weakest!r} has only "
            f"{smallest} {unit}"
        )
    if groups is None:
        splitter: Any = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return splitter, n_splits, notes


def train(
    table: Any,
    labels: Any,
    *,
    features: Sequence[str] = DEFAULT_FEATURES,
    n_estimators: int = 500,
    random_state: int = 0,
    cv: int | None = 5,
    groups: Any = None,
    n_jobs: int | None = -1,
) -> ParticleClassifier:
    """Fit a random forest on the labelled particles of ``table`` and validate it.

    Parameters
    ----------
    table : pandas.DataFrame or dask DataFrame
        Particle table (:func:`mosaicflow.measure.regionprops_table`,
        :func:`mosaicflow.classify.features_from_crops`). A Dask table is computed (the
        feature, label and group columns only).
    labels : pandas.Series or array-like of str
        Class of each particle: a Series indexed like ``table`` (e.g. from
        :func:`labels_from_file`), or one value per row. Missing values mark unlabelled rows,
        which are left out.
    features : sequence of str, keyword-only
        Columns to use; ``feret_ratio`` is derived from the Feret diameters if absent.
    n_estimators : int, keyword-only
        Trees.
    random_state : int, keyword-only
        Seed of the forest and of the fold assignment.
    cv : int or None, keyword-only
        Folds of stratified cross-validation (``None`` or 0: skip). Fewer folds are used, and
        noted in ``notes``, when the rarest class has fewer particles (or groups) than folds.
    groups : str or array-like, optional, keyword-only
        Column name or one value per row (e.g. the source image): folds keep each group whole
        (``StratifiedGroupKFold``), so particles of one image never sit on both sides.
    n_jobs : int or None, keyword-only
        Threads for fitting (scikit-learn's meaning; -1 = all cores).

    Returns
    -------
    ParticleClassifier

    Raises
    ------
    ConfigError
        Repeated or no ``features``, ``n_estimators`` below 1, ``cv`` of 1 or less than 0.
    ClassifierError
        Missing or non-numeric feature columns, non-finite feature values in labelled rows
        (named with their counts), fewer than two classes, a reserved class name, labels
        or groups that do not match the table, a class too rare for cross-validation.

    Notes
    -----
    ``RandomForestClassifier(criterion="gini", class_weight="balanced", oob_score=True)``:
    balanced class weights so that a rare class is not sacrificed to a common one, whose
    errors the class fractions would then inherit.
    """
    features = tuple(features)
    if len(features) == 0 or len(set(features)) != len(features):
        raise ConfigError(f"train: features must be distinct and non-empty, got {features}")
    if isinstance(n_estimators, bool) or not isinstance(n_estimators, int) or n_estimators < 1:
        raise ConfigError(f"train: n_estimators must be an integer >= 1, got {n_estimators!r}")
    if cv is not None and cv != 0 and cv < 2:
        raise ConfigError(f"train: cv must be >= 2 folds (or None), got {cv}")
    x, y, g = _training_data(table, labels, features, groups)
    classes, counts = np.unique(y, return_counts=True)
    forest = _forest(n_estimators, random_state, n_jobs, oob_score=True)
    with warnings.catch_warnings():
        # Particles never out of bag (few trees) are counted in ``notes`` instead.
        warnings.filterwarnings("ignore", message="Some inputs do not have OOB scores")
        forest.fit(x, y)
    oob = forest.oob_decision_function_
    seen = ~np.isnan(oob).any(axis=1)
    oob_pred = forest.classes_[np.argmax(oob[seen], axis=1)]
    oob_conf = confusion_matrix(y[seen], oob_pred, labels=forest.classes_)
    notes: list[str] = []
    if not seen.all():
        notes.append(f"{int((~seen).sum())} particles were never out of bag (few trees)")
    cv_folds = None
    fold_scores: list[float] = []
    cv_conf: np.ndarray | None = None
    if cv:
        splitter, cv_folds, cv_notes = _cv_splits(y, g, cv, random_state)
        notes += cv_notes
        cv_conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for fit_idx, test_idx in splitter.split(x, y, g):
            model = _forest(n_estimators, random_state, n_jobs, oob_score=False)
            model.fit(x[fit_idx], y[fit_idx])
            fold = confusion_matrix(y[test_idx], model.predict(x[test_idx]), labels=classes)
            fold_scores.append(balanced_accuracy_from_confusion(fold))
            cv_conf += fold
    from mosaicflow import __version__

    return ParticleClassifier(
        forest=forest,
        features=features,
        classes=tuple(str(c) for c in forest.classes_),
        n_train=len(y),
        class_counts={str(c): int(n) for c, n in zip(classes, counts, strict=True)},
        oob_score=float(forest.oob_score_),
        oob_balanced_accuracy=balanced_accuracy_from_confusion(oob_conf),
        oob_confusion=oob_conf.astype(np.int64),
        cv_folds=cv_folds,
        cv_grouped=g is not None and cv_folds is not None,
        cv_fold_scores=tuple(fold_scores),
        cv_balanced_accuracy=float(np.mean(fold_scores)) if fold_scores else None,
        cv_balanced_accuracy_std=float(np.std(fold_scores)) if fold_scores else None,
        cv_confusion=cv_conf,
        notes=tuple(notes),
        mosaicflow_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _forest(
    n_estimators: int, random_state: int, n_jobs: int | None, *, oob_score: bool
) -> RandomForestClassifier:
    """The forest :func:`train` fits (see its notes), and each cross-validation fold."""
    return RandomForestClassifier(
        n_estimators=n_estimators,
        criterion="gini",
        class_weight="balanced",
        oob_score=oob_score,
        n_jobs=n_jobs,
        random_state=random_state,
    )


def _training_data(
    table: Any, labels: Any, features: tuple[str, ...], groups: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features, labels and groups (or ``None``) of the labelled rows, checked."""
    needed = [*features, *(c for f in features for c in DERIVED_FEATURES.get(f, ()))]
    if isinstance(groups, str):
        needed.append(groups)
    table = as_pandas(table, needed)
    if not table.index.is_unique:
        raise ClassifierError(
            "train: the particle table's index has repeated values; use "
            "table.reset_index(drop=True) and align the labels with it"
        )
    y_all = _align(labels, table, "train: labels")
    y_all = y_all.where(y_all.notna() & (y_all.astype(str) != ""))
    labelled = y_all.notna().to_numpy()
    if not labelled.any():
        raise ClassifierError("train: no particle has a label")
    sub = table.loc[labelled]
    x = feature_matrix(sub, features, "train")
    y = y_all[labelled].astype(str).to_numpy(dtype=object)
    bad_rows = ~np.isfinite(x).all(axis=1)
    if bad_rows.any():
        raise ClassifierError(
            f"train: {int(bad_rows.sum())} labelled particle(s) have non-finite features "
            f"({_non_finite_report(x, features)}), e.g. table index "
            f"{list(sub.index[bad_rows][:5])}; drop them or their labels"
        )
    classes = np.unique(y)
    if UNCLASSIFIED in classes:
        raise ClassifierError(f"train: {UNCLASSIFIED!r} is reserved and cannot be a class")
    if len(classes) < 2:
        raise ClassifierError(f"train: need at least two classes, got {list(classes)}")
    if groups is None:
        return x, y, None
    if isinstance(groups, str):
        if groups not in table.columns:
            raise ClassifierError(f"train: group column {groups!r} is not in the table")
        g_series = table[groups]
    else:
        g_series = _align(groups, table, "train: groups")
    g_series = g_series[labelled]
    if g_series.isna().any():
        raise ClassifierError(
            f"train: {int(g_series.isna().sum())} labelled particles have no group"
        )
    return x, y, g_series.astype(str).to_numpy()


__all__ = ["train"]
