"""The particle classifier object and the features it reads from the particle table.

:class:`ParticleClassifier` holds a fitted scikit-learn forest with the feature list, classes
and validation it was trained with. The feature lists name columns of the particle table
(:func:`mosaicflow.measure.regionprops_table`) plus derived features (``feret_ratio``, and
Groschner's ``real_mean`` / ``real_std``, which are the table's ``intensity_mean`` /
``intensity_std``); the checks here are shared by training and prediction, so both name
missing or unusable columns alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import RandomForestClassifier

from mosaicflow.errors import ClassifierError, ConfigError
from mosaicflow.measure.columns import SHAPE_COLUMNS
from mosaicflow.measure.features import GROSCHNER_FEATURES

HU_COLUMNS: tuple[str, ...] = tuple(c for c in SHAPE_COLUMNS if c.startswith("moments_hu-"))
"""Hu's seven moment invariants, as the particle table names them."""

SHAPE_FEATURES: tuple[str, ...] = (
    "equivalent_diameter_area",
    "circularity",
    "aspect_ratio",
    "solidity",
    "eccentricity",
    "roundness",
    "boundary_area_ratio",
    "feret_ratio",
    *HU_COLUMNS,
)
"""Outline descriptors. All but ``equivalent_diameter_area`` and ``boundary_area_ratio`` are
scale-free; those two carry the particle's size (nm with a pixel size, else px)."""

DEFAULT_FEATURES: tuple[str, ...] = (*SHAPE_FEATURES, *GROSCHNER_FEATURES)
"""Shape features and Groschner et al.'s five features (three Fourier columns of the table,
and ``real_mean`` / ``real_std``, derived from the table's ``intensity_mean`` /
``intensity_std``: the same numbers, so those two are not listed again; a duplicated column
only dilutes the forest's feature sampling)."""

DERIVED_FEATURES: dict[str, tuple[str, ...]] = {
    "feret_ratio": ("feret_diameter_min", "feret_diameter_max"),
    "real_mean": ("intensity_mean",),
    "real_std": ("intensity_std",),
}
"""Features computed from table columns when the table lacks them: name -> inputs.
``real_mean`` / ``real_std`` were table columns until the table dropped them as duplicates of
``intensity_mean`` / ``intensity_std``; deriving them keeps classifiers that read them working
on newer tables (a table that still has them keeps its own)."""


def feret_ratio(feret_min: Any, feret_max: Any) -> Any:
    """Smallest over largest caliper width, in ``(0, 1]``.

    A disc gives 1, a regular hexagon (an octahedron seen down a 3-fold axis) ``sqrt(3)/2 =
    0.866``, a square (a cube face-on) ``1/sqrt(2) = 0.707``, a rod its thickness over length.

    Parameters
    ----------
    feret_min, feret_max : array-like
        The table's ``feret_diameter_min`` and ``feret_diameter_max``: NumPy arrays, pandas
        or Dask series alike.

    Returns
    -------
    Same kind as the inputs
        Zero-width particles (one line of pixels) give 0; a particle without extent ``nan``.
    """
    return feret_min / feret_max


def _derive(name: str, table: Any) -> Any:
    """Derived feature ``name`` of ``table`` (its inputs present), pandas or Dask alike."""
    if name == "feret_ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return feret_ratio(table["feret_diameter_min"], table["feret_diameter_max"])
    (source,) = DERIVED_FEATURES[name]  # real_mean, real_std: the same numbers, renamed
    return table[source]


def add_derived_features(table: Any, features: Sequence[str] = DEFAULT_FEATURES) -> Any:
    """``table`` with every derived feature among ``features`` that it lacks added.

    Parameters
    ----------
    table : pandas.DataFrame or dask DataFrame
        A particle table.
    features : sequence of str
        The features wanted; only those in :data:`DERIVED_FEATURES` whose inputs the table
        has are added.

    Returns
    -------
    Same kind as ``table``
        Lazy on a Dask DataFrame. Columns already present are kept as they are.
    """
    new = {}
    for name in features:
        inputs = DERIVED_FEATURES.get(name)
        if inputs is None or name in table.columns:
            continue
        if all(c in table.columns for c in inputs):
            new[name] = _derive(name, table)
    return table.assign(**new) if new else table


def missing_features(columns: Sequence[str], features: Sequence[str]) -> list[str]:
    """The features that neither are among ``columns`` nor can be derived from them.

    Parameters
    ----------
    columns : sequence of str
        A table's columns.
    features : sequence of str
        Features a classifier reads.

    Returns
    -------
    list of str
        In the order of ``features``.
    """
    have = set(columns)
    missing = []
    for name in features:
        if name in have:
            continue
        inputs = DERIVED_FEATURES.get(name)
        if inputs is not None and all(c in have for c in inputs):
            continue
        missing.append(name)
    return missing


def check_features(columns: Sequence[str], features: Sequence[str], what: str) -> None:
    """Raise if a table with ``columns`` cannot supply every one of ``features``.

    Parameters
    ----------
    columns : sequence of str
        The table's columns.
    features : sequence of str
        Features wanted.
    what : str
        Who asks (``"train"``, ``"predict"``), to start the message with.

    Raises
    ------
    ClassifierError
        Naming every missing feature, the inputs a missing derived feature needs, and the
        table's columns.
    """
    missing = missing_features(columns, features)
    if missing:
        derived = [
            f"{m} (from {' and '.join(DERIVED_FEATURES[m])})"
            for m in missing
            if m in DERIVED_FEATURES
        ]
        hint = f"; derived features need their inputs: {derived}" if derived else ""
        raise ClassifierError(
            f"{what}: the particle table lacks {len(missing)} feature column(s) {missing}"
            f"{hint}; it has {sorted(columns)}"
        )


def feature_matrix(table: pd.DataFrame, features: Sequence[str], what: str) -> np.ndarray:
    """The ``features`` of every row of ``table`` as a float64 matrix, derived ones included.

    Parameters
    ----------
    table : pandas.DataFrame
        Particle table.
    features : sequence of str
        Columns, in the matrix's column order.
    what : str
        Who asks, for the messages.

    Returns
    -------
    ndarray (n_rows, n_features)
        May hold non-finite values; callers decide what those mean.

    Raises
    ------
    ClassifierError
        A feature is missing (see :func:`check_features`) or not numeric.
    """
    check_features(list(table.columns), features, what)
    table = add_derived_features(table, features)
    bad = [
        c
        for c in features
        if not (pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]))
    ]
    if bad:
        raise ClassifierError(f"{what}: feature column(s) {bad} are not numeric")
    return table[list(features)].to_numpy(dtype=np.float64)


def as_pandas(table: Any, columns: Sequence[str]) -> pd.DataFrame:
    """A pandas table holding at least ``columns`` of ``table``.

    Parameters
    ----------
    table : pandas.DataFrame or dask DataFrame
        A pandas table is returned as it is; a Dask table is computed, the present ones among
        ``columns`` only.
    columns : sequence of str
        Columns needed.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ClassifierError
        ``table`` is neither.
    """
    if isinstance(table, pd.DataFrame):
        return table
    if hasattr(table, "compute") and hasattr(table, "columns"):
        present = [c for c in dict.fromkeys(columns) if c in table.columns]
        return table[present].compute()
    raise ClassifierError(
        f"expected a pandas or Dask DataFrame particle table, got {type(table).__name__}"
    )


@dataclass(eq=False)
class ParticleClassifier:
    """A fitted forest with the features, classes and validation it was trained with.

    Attributes
    ----------
    forest : sklearn.ensemble.RandomForestClassifier
        Fitted on ``features`` in this order.
    features : tuple of str
        Table columns the forest reads.
    classes : tuple of str
        Class names, in the forest's (sorted) order: the rows and columns of every confusion.
    n_train : int
        Labelled particles it was fitted on; ``class_counts`` per class.
    oob_score : float
        Out-of-bag accuracy (scikit-learn's ``oob_score_``).
    oob_balanced_accuracy : float
        Mean per-class recall of the out-of-bag predictions.
    oob_confusion : ndarray (C, C)
        Out-of-bag counts, rows = true class, columns = predicted.
    cv_folds : int or None
        Folds actually used for cross-validation (``None``: not run); ``cv_grouped`` says
        whether folds kept groups (source images) together.
    cv_fold_scores : tuple of float
        Balanced accuracy of each held-out fold (mean recall over the classes in that fold).
    cv_balanced_accuracy, cv_balanced_accuracy_std : float or None
        Their mean and standard deviation.
    cv_confusion : ndarray (C, C) or None
        Held-out counts pooled over folds.
    notes : tuple of str
        What training decided on its own (e.g. fewer folds than asked), for the record.
    mosaicflow_version, sklearn_version, created : str
        Provenance: the versions that trained it and when (ISO 8601, UTC).
    token : str
        Unique per trained classifier: names it in a Dask graph.
    """

    forest: RandomForestClassifier
    features: tuple[str, ...]
    classes: tuple[str, ...]
    n_train: int
    class_counts: dict[str, int]
    oob_score: float
    oob_balanced_accuracy: float
    oob_confusion: np.ndarray
    cv_folds: int | None = None
    cv_grouped: bool = False
    cv_fold_scores: tuple[float, ...] = ()
    cv_balanced_accuracy: float | None = None
    cv_balanced_accuracy_std: float | None = None
    cv_confusion: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    mosaicflow_version: str = ""
    sklearn_version: str = field(default_factory=lambda: sklearn.__version__)
    created: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def confusion_frame(self, kind: str = "cv") -> pd.DataFrame:
        """A confusion matrix labelled by class.

        Parameters
        ----------
        kind : {"cv", "oob"}
            Cross-validated or out-of-bag.

        Returns
        -------
        pandas.DataFrame
            Index ``true``, columns ``predicted``, both in ``classes`` order.

        Raises
        ------
        ConfigError
            Another ``kind``.
        ClassifierError
            ``"cv"`` for a classifier trained without cross-validation.
        """
        if kind not in ("cv", "oob"):
            raise ConfigError(f"confusion_frame: kind must be 'cv' or 'oob', got {kind!r}")
        m = self.cv_confusion if kind == "cv" else self.oob_confusion
        if m is None:
            raise ClassifierError("confusion_frame: this classifier was trained without cv")
        names = list(self.classes)
        return pd.DataFrame(
            m,
            index=pd.Index(names, name="true"),
            columns=pd.Index(names, name="predicted"),
        )

    def feature_importances(self) -> pd.Series:
        """Mean decrease in Gini impurity per feature.

        Returns
        -------
        pandas.Series
            Indexed by feature, largest first, summing to one.

        Notes
        -----
        Impurity importance is shared between correlated features (e.g. ``circularity`` and
        ``moments_hu-0``), so read it as a ranking of what the forest used, not of what
        matters physically.
        """
        return pd.Series(
            self.forest.feature_importances_, index=list(self.features), name="importance"
        ).sort_values(ascending=False)

    def header(self) -> dict[str, Any]:
        """JSON-able description of the classifier: everything but the forest's trees.

        Returns
        -------
        dict
            Versions, creation time, token, features, classes, training counts, the number of
            trees, OOB and CV scores and confusions, notes. The classifier file's header holds
            these plus the file's own fields (:mod:`mosaicflow.classify.fileformat`).
        """
        return {
            "mosaicflow_version": self.mosaicflow_version,
            "sklearn_version": self.sklearn_version,
            "created": self.created,
            "token": self.token,
            "features": list(self.features),
            "classes": list(self.classes),
            "n_train": self.n_train,
            "class_counts": dict(self.class_counts),
            "n_estimators": int(self.forest.n_estimators),
            "oob_score": self.oob_score,
            "oob_balanced_accuracy": self.oob_balanced_accuracy,
            "oob_confusion": np.asarray(self.oob_confusion).tolist(),
            "cv_folds": self.cv_folds,
            "cv_grouped": self.cv_grouped,
            "cv_fold_scores": list(self.cv_fold_scores),
            "cv_balanced_accuracy": self.cv_balanced_accuracy,
            "cv_balanced_accuracy_std": self.cv_balanced_accuracy_std,
            "cv_confusion": None
            if self.cv_confusion is None
            else np.asarray(self.cv_confusion).tolist(),
            "notes": list(self.notes),
        }

    def summary(self) -> dict[str, Any]:
        """JSON-able record for a run's metadata.

        Returns
        -------
        dict
            :meth:`header` plus ``confusion``, the matrix to adjust class fractions with
            (cross-validated if measured, else out-of-bag; ``confusion_kind`` says which),
            rows = true class, columns = predicted, in ``classes`` order.
        """
        kind = "cv" if self.cv_confusion is not None else "oob"
        matrix = self.cv_confusion if self.cv_confusion is not None else self.oob_confusion
        return {
            **self.header(),
            "confusion": np.asarray(matrix).tolist(),
            "confusion_kind": kind,
        }

    def save(self, path: str | Path) -> Path:
        """Write the classifier to one file; see :func:`mosaicflow.classify.fileformat.save`.

        Parameters
        ----------
        path : str or Path
            File to write (replaced atomically).

        Returns
        -------
        Path
        """
        from mosaicflow.classify.fileformat import save  # fileformat imports this module

        return save(self, path)

    @classmethod
    def load(cls, path: str | Path, *, trust_pickle: bool = False) -> ParticleClassifier:
        """Read a classifier file; see :func:`mosaicflow.classify.fileformat.load`.

        Parameters
        ----------
        path : str or Path
            The file.
        trust_pickle : bool, keyword-only
            Also read an old pickle-based file (which can run code): only for files whose
            origin you trust.

        Returns
        -------
        ParticleClassifier
        """
        from mosaicflow.classify.fileformat import load

        return load(path, trust_pickle=trust_pickle)


__all__ = [
    "DEFAULT_FEATURES",
    "DERIVED_FEATURES",
    "HU_COLUMNS",
    "SHAPE_FEATURES",
    "ParticleClassifier",
    "add_derived_features",
    "as_pandas",
    "check_features",
    "feature_matrix",
    "feret_ratio",
    "missing_features",
]
