"""A random forest that sorts particles into shape classes from their table row.

``train`` fits scikit-learn's ``RandomForestClassifier`` on labelled rows of a particle table
and measures it (out-of-bag and cross-validated confusion); ``predict`` adds ``class``,
``class_probability`` and ``proba_<class>`` columns to a pandas or Dask table; ``save`` and
``load`` keep a classifier in one file with a JSON header that is checked before anything is
unpickled. ``docs/CLASSIFY.md`` says how to use it and what the numbers mean.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from mosaicflow.classify.features import FOURIER_COLUMNS
from mosaicflow.classify.metrics import UNCLASSIFIED, balanced_accuracy_from_confusion
from mosaicflow.errors import ClassifierError

HU_COLUMNS: tuple[str, ...] = tuple(f"moments_hu-{k}" for k in range(7))

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

DEFAULT_FEATURES: tuple[str, ...] = (*SHAPE_FEATURES, *FOURIER_COLUMNS)
"""Shape features and Groschner et al.'s five Fourier features. The table's ``intensity_std``
is left out: ``real_std`` is the same number (the spread of the intensity over the particle's
pixels, computed on the same image), and a duplicated column only dilutes the forest's
feature sampling."""

DERIVED_FEATURES: dict[str, tuple[str, ...]] = {
    "feret_ratio": ("feret_diameter_min", "feret_diameter_max"),
}
"""Features computed from table columns when the table lacks them: name -> inputs."""

FORMAT = "mosaicflow-particle-classifier"
FORMAT_VERSION = 1
_MAGIC = b"MOSAICFLOW-PARTICLE-CLASSIFIER\n"


def feret_ratio(feret_min: Any, feret_max: Any) -> Any:
    """Smallest over largest caliper width, in ``(0, 1]``.

    A disc gives 1, a regular hexagon (an octahedron seen down a 3-fold axis) ``sqrt(3)/2 =
    0.866``, a square (a cube face-on) ``1/sqrt(2) = 0.707``, a rod its thickness over length.
    Zero-width particles (one line of pixels) give 0; a particle without extent gives ``nan``.
    Works on NumPy arrays, pandas and Dask series alike.
    """
    return feret_min / feret_max


def add_derived_features(table: Any, features: Sequence[str] = DEFAULT_FEATURES) -> Any:
    """``table`` with every derived feature among ``features`` that it lacks added.

    Lazy on a Dask DataFrame. Columns already present are kept as they are.
    """
    new = {}
    for name in features:
        inputs = DERIVED_FEATURES.get(name)
        if inputs is None or name in table.columns:
            continue
        if all(c in table.columns for c in inputs):
            with np.errstate(divide="ignore", invalid="ignore"):
                new[name] = feret_ratio(table[inputs[0]], table[inputs[1]])
    return table.assign(**new) if new else table


def _missing_features(columns: Sequence[str], features: Sequence[str]) -> list[str]:
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


def _check_features(columns: Sequence[str], features: Sequence[str], what: str) -> None:
    missing = _missing_features(columns, features)
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
        """The ``"cv"`` or ``"oob"`` confusion as a DataFrame labelled by class."""
        if kind not in ("cv", "oob"):
            raise ClassifierError(f"confusion_frame: kind must be 'cv' or 'oob', got {kind!r}")
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
        """Mean decrease in Gini impurity per feature, largest first (sums to one).

        Impurity importance is shared between correlated features (e.g. ``circularity`` and
        ``moments_hu-0``), so read it as a ranking of what the forest used, not of what
        matters physically.
        """
        return pd.Series(
            self.forest.feature_importances_, index=list(self.features), name="importance"
        ).sort_values(ascending=False)

    def header(self) -> dict[str, Any]:
        """JSON-able description: the file header without its payload fields."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
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
        """JSON-able record for a run's metadata: the header plus the confusion to adjust
        class fractions with (``confusion``: cross-validated if measured, else out-of-bag;
        ``confusion_kind`` says which), rows = true class, columns = predicted, in
        ``classes`` order."""
        kind = "cv" if self.cv_confusion is not None else "oob"
        matrix = self.cv_confusion if self.cv_confusion is not None else self.oob_confusion
        return {
            **self.header(),
            "confusion": np.asarray(matrix).tolist(),
            "confusion_kind": kind,
        }

    def save(self, path: str | Path) -> Path:
        """Write the classifier to ``path`` (conventionally ``*.joblib``); returns the path.

        The file is a magic line, one JSON header line (everything but the forest, plus the
        payload's length and SHA-256) and the forest pickled by joblib. Read it back with
        :func:`load`; like any pickle, load only files you trust.
        """
        import joblib

        buf = io.BytesIO()
        joblib.dump({"forest": self.forest}, buf)
        payload = buf.getvalue()
        head = self.header()
        head["payload_bytes"] = len(payload)
        head["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC)
            fh.write(json.dumps(head).encode() + b"\n")
            fh.write(payload)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ParticleClassifier:
        """Same as :func:`load`."""
        return load(path)


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a classifier file, checked, without unpickling anything."""
    head, _ = _read(path, payload=False)
    return head


def _read(path: str | Path, *, payload: bool) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    where = f"classifier file '{path}'"
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise ClassifierError(f"{where}: not found") from None
    except OSError as exc:
        raise ClassifierError(f"{where}: cannot open ({exc})") from exc
    with fh:
        magic = fh.read(len(_MAGIC))
        if magic != _MAGIC:
            raise ClassifierError(
                f"{where}: not a mosaicflow particle classifier (it starts with {magic[:16]!r}; "
                "write one with `mosaicflow classify-train` or ParticleClassifier.save)"
            )
        line = fh.readline()
        try:
            head = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClassifierError(f"{where}: damaged header ({exc})") from exc
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise ClassifierError(f"{where}: damaged header (no format {FORMAT!r})")
        version = head.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ClassifierError(
                f"{where}: format version {version!r}; this mosaicflow reads versions 1 to "
                f"{FORMAT_VERSION} (written by mosaicflow {head.get('mosaicflow_version')})"
            )
        missing = [
            k
            for k in ("features", "classes", "payload_bytes", "payload_sha256", "oob_confusion")
            if k not in head
        ]
        if missing:
            raise ClassifierError(f"{where}: damaged header (lacks {missing})")
        if not payload:
            return head, b""
        data = fh.read()
    if len(data) != head["payload_bytes"]:
        raise ClassifierError(
            f"{where}: truncated or damaged (forest payload has {len(data)} bytes, the header "
            f"says {head['payload_bytes']})"
        )
    if hashlib.sha256(data).hexdigest() != head["payload_sha256"]:
        raise ClassifierError(f"{where}: damaged (forest payload checksum does not match)")
    return head, data


def load(path: str | Path) -> ParticleClassifier:
    """Read a classifier written by :meth:`ParticleClassifier.save`.

    Raises
    ------
    ClassifierError
        Missing, foreign, truncated or damaged file, or a newer format version; the header and
        a checksum are verified before the forest is unpickled.

    Notes
    -----
    A file written under another scikit-learn version loads with scikit-learn's own
    ``InconsistentVersionWarning``; the header's ``sklearn_version`` says which one it was.
    """
    import joblib

    head, data = _read(path, payload=True)
    where = f"classifier file '{path}'"
    try:
        body = joblib.load(io.BytesIO(data))
        forest = body["forest"]
    except Exception as exc:  # unpickling can fail in many ways; all mean a bad file
        raise ClassifierError(f"{where}: forest payload unreadable ({exc})") from exc
    if not isinstance(forest, RandomForestClassifier):
        raise ClassifierError(f"{where}: payload holds {type(forest).__name__}, not a forest")
    classes = tuple(str(c) for c in head["classes"])
    features = tuple(head["features"])
    if tuple(str(c) for c in forest.classes_) != classes or forest.n_features_in_ != len(features):
        raise ClassifierError(f"{where}: header and forest disagree on classes or features")
    cv_conf = head.get("cv_confusion")
    return ParticleClassifier(
        forest=forest,
        features=features,
        classes=classes,
        n_train=int(head["n_train"]),
        class_counts={str(k): int(v) for k, v in head["class_counts"].items()},
        oob_score=float(head["oob_score"]),
        oob_balanced_accuracy=float(head["oob_balanced_accuracy"]),
        oob_confusion=np.asarray(head["oob_confusion"], dtype=np.int64),
        cv_folds=head.get("cv_folds"),
        cv_grouped=bool(head.get("cv_grouped", False)),
        cv_fold_scores=tuple(head.get("cv_fold_scores", ())),
        cv_balanced_accuracy=head.get("cv_balanced_accuracy"),
        cv_balanced_accuracy_std=head.get("cv_balanced_accuracy_std"),
        cv_confusion=None if cv_conf is None else np.asarray(cv_conf, dtype=np.int64),
        notes=tuple(head.get("notes", ())),
        mosaicflow_version=str(head.get("mosaicflow_version", "")),
        sklearn_version=str(head.get("sklearn_version", "")),
        created=str(head.get("created", "")),
        token=str(head.get("token") or uuid.uuid4().hex),
    )


def _to_pandas(table: Any, columns: Sequence[str]) -> pd.DataFrame:
    """A pandas table of the columns needed (a Dask table is computed, those columns only)."""
    if isinstance(table, pd.DataFrame):
        return table
    if hasattr(table, "compute") and hasattr(table, "columns"):
        present = [c for c in dict.fromkeys(columns) if c in table.columns]
        return table[present].compute()
    raise ClassifierError(
        f"expected a pandas or Dask DataFrame particle table, got {type(table).__name__}"
    )


def _feature_matrix(table: pd.DataFrame, features: Sequence[str], what: str) -> np.ndarray:
    _check_features(list(table.columns), features, what)
    table = add_derived_features(table, features)
    bad = [
        c
        for c in features
        if not (pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]))
    ]
    if bad:
        raise ClassifierError(f"{what}: feature column(s) {bad} are not numeric")
    return table[list(features)].to_numpy(dtype=np.float64)


def _non_finite_report(x: np.ndarray, features: Sequence[str]) -> str:
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
    ClassifierError
        Missing or non-numeric feature columns, non-finite feature values in labelled rows
        (named with their counts), fewer than two classes, a reserved class name, labels
        that do not match the table.

    Notes
    -----
    ``RandomForestClassifier(criterion="gini", class_weight="balanced", oob_score=True)``:
    balanced class weights so that a rare class is not sacrificed to a common one, whose
    errors the class fractions would then inherit.
    """
    features = tuple(features)
    if len(features) == 0 or len(set(features)) != len(features):
        raise ClassifierError(f"train: features must be distinct and non-empty, got {features}")
    needed = [*features, *(c for f in features for c in DERIVED_FEATURES.get(f, ()))]
    if isinstance(groups, str):
        needed.append(groups)
    table = _to_pandas(table, needed)
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
    x = _feature_matrix(sub, features, "train")
    y = y_all[labelled].astype(str).to_numpy(dtype=object)
    bad_rows = ~np.isfinite(x).all(axis=1)
    if bad_rows.any():
        raise ClassifierError(
            f"train: {int(bad_rows.sum())} labelled particle(s) have non-finite features "
            f"({_non_finite_report(x, features)}), e.g. table index "
            f"{list(sub.index[bad_rows][:5])}; drop them or their labels"
        )
    classes, counts = np.unique(y, return_counts=True)
    if UNCLASSIFIED in classes:
        raise ClassifierError(f"train: {UNCLASSIFIED!r} is reserved and cannot be a class")
    if len(classes) < 2:
        raise ClassifierError(f"train: need at least two classes, got {list(classes)}")
    g: np.ndarray | None = None
    if groups is not None:
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
        g = g_series.astype(str).to_numpy()
    forest = RandomForestClassifier(
        n_estimators=n_estimators,
        criterion="gini",
        class_weight="balanced",
        oob_score=True,
        n_jobs=n_jobs,
        random_state=random_state,
    )
    with warnings.catch_warnings():
        # Particles never out of bag (few trees) are counted in ``notes`` instead.
        warnings.filterwarnings("ignore", message="Some inputs do not have OOB scores")
        forest.fit(x, y)
    class_names = tuple(str(c) for c in forest.classes_)
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
        if cv < 2:
            raise ClassifierError(f"train: cv must be >= 2 folds (or None), got {cv}")
        splitter, cv_folds, cv_notes = _cv_splits(y, g, cv, random_state)
        notes += cv_notes
        cv_conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for fit_idx, test_idx in splitter.split(x, y, g):
            model = RandomForestClassifier(
                n_estimators=n_estimators,
                criterion="gini",
                class_weight="balanced",
                n_jobs=n_jobs,
                random_state=random_state,
            )
            model.fit(x[fit_idx], y[fit_idx])
            fold = confusion_matrix(y[test_idx], model.predict(x[test_idx]), labels=classes)
            fold_scores.append(balanced_accuracy_from_confusion(fold))
            cv_conf += fold
    from mosaicflow import __version__

    return ParticleClassifier(
        forest=forest,
        features=features,
        classes=class_names,
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


def output_columns(classes: Sequence[str]) -> list[str]:
    """Columns :func:`predict` adds, in order."""
    return ["class", "class_probability", *(f"proba_{c}" for c in classes)]


def _predict_frame(
    table: pd.DataFrame, classifier: ParticleClassifier, n_jobs: int | None
) -> pd.DataFrame:
    """Kernel: classify the rows of one pandas table (a Dask partition or a whole table)."""
    features = classifier.features
    table = table.drop(columns=[c for c in table.columns if c in _previous_outputs(table)])
    x = _feature_matrix(table, features, "predict")
    n = len(table)
    n_cls = len(classifier.classes)
    proba = np.full((n, n_cls), np.nan)
    ok = np.isfinite(x).all(axis=1)
    if ok.any():
        forest = classifier.forest
        if n_jobs is not None and n_jobs != forest.n_jobs:
            forest = copy.copy(forest)  # shallow: shares the trees, changes only n_jobs
            forest.n_jobs = n_jobs
        proba[ok] = forest.predict_proba(x[ok])
    names = np.asarray(classifier.classes, dtype=object)
    best = np.argmax(np.where(ok[:, None], proba, 0.0), axis=1)
    out = {
        "class": pd.Series(np.where(ok, names[best], UNCLASSIFIED), index=table.index, dtype="str"),
        "class_probability": pd.Series(
            np.where(ok, np.nanmax(np.where(ok[:, None], proba, 0.0), axis=1), np.nan),
            index=table.index,
            dtype=np.float64,
        ),
    }
    for k, c in enumerate(classifier.classes):
        out[f"proba_{c}"] = pd.Series(proba[:, k], index=table.index, dtype=np.float64)
    return table.assign(**out)


def _previous_outputs(table: pd.DataFrame) -> set[str]:
    """Columns of an earlier classification, replaced rather than duplicated."""
    return {
        c
        for c in table.columns
        if c in ("class", "class_probability") or str(c).startswith("proba_")
    }


def predict(table: Any, classifier: ParticleClassifier, *, n_jobs: int | None = None) -> Any:
    """Classify every particle: adds ``class``, ``class_probability``, ``proba_<class>``.

    Parameters
    ----------
    table : pandas.DataFrame or dask DataFrame
        Particle table with the classifier's feature columns (``feret_ratio`` may be derived
        from the Feret diameters). Columns of an earlier classification are replaced.
    classifier : ParticleClassifier
    n_jobs : int or None, keyword-only
        Threads of the forest for a pandas table (default: as trained). A Dask table is
        classified one partition per task with one thread each: Dask supplies parallelism.

    Returns
    -------
    Same kind as ``table``
        Lazy for Dask: building it computes nothing. The classifier enters the graph as one
        key that every partition task depends on, so it is sent to each worker once, not
        once per task.

    Notes
    -----
    Particles with a non-finite feature (a one-pixel particle has no defined Hu moments, a
    line of pixels no Feret ratio) get ``class = "unclassified"`` and ``nan`` probabilities
    rather than failing a run of thousands of particles over a few fragments; filter them
    with ``table["class"] == "unclassified"``; :func:`class_fractions` leaves them out and
    reports their number.

    Raises
    ------
    ClassifierError
        The table lacks some of the classifier's features (all missing ones are named), or a
        feature column is not numeric.
    """
    if not isinstance(classifier, ParticleClassifier):
        raise ClassifierError(
            f"predict: expected a ParticleClassifier, got {type(classifier).__name__}"
        )
    columns = list(table.columns)
    _check_features(columns, classifier.features, "predict")
    if isinstance(table, pd.DataFrame):
        return _predict_frame(table, classifier, n_jobs)
    if not hasattr(table, "map_partitions"):
        raise ClassifierError(
            f"predict: expected a pandas or Dask DataFrame, got {type(table).__name__}"
        )
    import dask

    clf = dask.delayed(classifier, name=f"mosaicflow-classifier-{classifier.token}", traverse=False)
    meta = _predict_frame(table._meta, classifier, 1)
    return table.map_partitions(_predict_frame, clf, 1, meta=meta)


def labels_from_file(path: str | Path, table: Any) -> pd.Series:
    """Training labels from a ``label,class`` CSV or Parquet file, aligned with ``table``.

    Parameters
    ----------
    path : str or Path
        ``.csv`` or ``.parquet`` file (or a Parquet directory) with columns ``label`` (the
        particle's id in the table's ``label`` column) and ``class``.
    table : pandas.DataFrame or dask DataFrame
        The particle table the labels refer to (a Dask table's ``label`` column is computed).

    Returns
    -------
    pandas.Series
        Named ``class``, indexed by the ``table`` rows that have a label (pass it to
        :func:`train` with the same table).

    Raises
    ------
    ClassifierError
        Unreadable file, missing columns, non-integer or repeated labels, labels that name
        particles absent from the table (a few are named, with the count), a table without
        a unique ``label`` column.
    """
    path = Path(path)
    where = f"labels file '{path}'"
    if not path.exists():
        raise ClassifierError(f"{where}: not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            frame = pd.read_csv(path, dtype={"class": str})
        elif suffix in (".parquet", ".pq") or path.is_dir():
            frame = pd.read_parquet(path)
        else:
            raise ClassifierError(f"{where}: expected a .csv or .parquet file")
    except ClassifierError:
        raise
    except Exception as exc:
        raise ClassifierError(f"{where}: unreadable ({exc})") from exc
    missing = [c for c in ("label", "class") if c not in frame.columns]
    if missing:
        raise ClassifierError(
            f"{where}: lacks column(s) {missing}; it has {list(frame.columns)} (expected "
            "'label,class': particle id, class name)"
        )
    lab = pd.to_numeric(frame["label"], errors="coerce")
    integral = lab.notna() & (lab == np.round(lab))
    if not integral.all():
        bad = frame.loc[~integral, "label"].tolist()
        raise ClassifierError(
            f"{where}: {len(bad)} label value(s) are not integer particle ids, e.g. {bad[:5]}"
        )
    lab = lab.astype(np.int64)
    classes = frame["class"]
    empty = (classes.isna() | (classes.astype(str).str.strip() == "")).to_numpy()
    if empty.any():
        raise ClassifierError(f"{where}: {int(empty.sum())} entries have no class")
    dup = lab[lab.duplicated()].unique()
    if len(dup):
        raise ClassifierError(
            f"{where}: {len(dup)} particle id(s) appear more than once, e.g. {list(dup[:5])}"
        )
    table = _to_pandas(table, ["label"])
    if "label" not in table.columns:
        raise ClassifierError("labels_from_file: the particle table has no 'label' column")
    ids = table["label"].to_numpy().astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ClassifierError(
            "labels_from_file: the particle table's 'label' column repeats ids (tables of "
            "several images?); label ids must identify one particle"
        )
    if not table.index.is_unique:
        raise ClassifierError(
            "labels_from_file: the particle table's index repeats values; use "
            "table.reset_index(drop=True)"
        )
    known = np.isin(lab.to_numpy(), ids)
    if not known.all():
        absent = lab[~known].tolist()
        raise ClassifierError(
            f"{where}: {len(absent)} of {len(lab)} labels name particles not in the table, "
            f"e.g. {absent[:5]} (table ids run {ids.min() if len(ids) else '-'}.."
            f"{ids.max() if len(ids) else '-'})"
        )
    by_id = pd.Series(classes.astype(str).str.strip().to_numpy(), index=lab.to_numpy())
    rows = np.isin(ids, lab.to_numpy())
    out = pd.Series(
        by_id.loc[ids[rows]].to_numpy(), index=table.index[rows], name="class", dtype="str"
    )
    return out


__all__ = [
    "DEFAULT_FEATURES",
    "DERIVED_FEATURES",
    "FORMAT_VERSION",
    "HU_COLUMNS",
    "SHAPE_FEATURES",
    "ClassifierError",
    "ParticleClassifier",
    "add_derived_features",
    "feret_ratio",
    "labels_from_file",
    "load",
    "output_columns",
    "predict",
    "read_header",
    "train",
]
