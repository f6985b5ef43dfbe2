"""Prediction: classify every particle of a pandas or Dask particle table.

:func:`predict` adds ``class``, ``class_probability`` and ``proba_<class>`` columns
(:func:`output_columns`); on a Dask table it stays lazy and ships the classifier to each
worker once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.classify.metrics import UNCLASSIFIED
from mosaicflow.classify.model import ParticleClassifier, check_features, feature_matrix
from mosaicflow.errors import ClassifierError


def output_columns(classes: Sequence[str]) -> list[str]:
    """Columns :func:`predict` adds, in order.

    Parameters
    ----------
    classes : sequence of str
        The classifier's classes.

    Returns
    -------
    list of str
        ``class``, ``class_probability``, then ``proba_<class>`` per class.
    """
    return ["class", "class_probability", *(f"proba_{c}" for c in classes)]


def _predict_frame(
    table: pd.DataFrame, classifier: ParticleClassifier, n_jobs: int | None
) -> pd.DataFrame:
    """Kernel: classify the rows of one pandas table (a Dask partition or a whole table)."""
    features = classifier.features
    previous = _previous_outputs(table)
    table = table.drop(columns=[c for c in table.columns if c in previous])
    x = feature_matrix(table, features, "predict")
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
    for k, c in enumerate(output_columns(classifier.classes)[2:]):
        out[c] = pd.Series(proba[:, k], index=table.index, dtype=np.float64)
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
        Trained by :func:`mosaicflow.classify.train` or read by
        :func:`mosaicflow.classify.load`.
    n_jobs : int or None, keyword-only
        Threads of the forest for a pandas table (default: as trained). A Dask table is
        classified one partition per task with one thread each: Dask supplies parallelism.

    Returns
    -------
    Same kind as ``table``
        Lazy for Dask: building it computes nothing. The classifier enters the graph as one
        key that every partition task depends on, so it is sent to each worker once, not
        once per task.

    Raises
    ------
    ClassifierError
        ``classifier`` or ``table`` of the wrong type, a table lacking some of the
        classifier's features (all missing ones are named), a feature column that is not
        numeric.

    Notes
    -----
    Particles with a non-finite feature (a one-pixel particle has no defined Hu moments, a
    line of pixels no Feret ratio) get ``class = "unclassified"`` and ``nan`` probabilities
    rather than failing a run of thousands of particles over a few fragments; filter them
    with ``table["class"] == "unclassified"``;
    :func:`mosaicflow.classify.class_fractions` leaves them out and reports their number.
    """
    if not isinstance(classifier, ParticleClassifier):
        raise ClassifierError(
            f"predict: expected a ParticleClassifier, got {type(classifier).__name__}"
        )
    is_pandas = isinstance(table, pd.DataFrame)
    if not is_pandas and not hasattr(table, "map_partitions"):
        raise ClassifierError(
            f"predict: expected a pandas or Dask DataFrame, got {type(table).__name__}"
        )
    check_features(list(table.columns), classifier.features, "predict")
    if is_pandas:
        return _predict_frame(table, classifier, n_jobs)
    import dask

    clf = dask.delayed(classifier, name=f"mosaicflow-classifier-{classifier.token}", traverse=False)
    meta = _predict_frame(table._meta, classifier, 1)
    return table.map_partitions(_predict_frame, clf, 1, meta=meta)


__all__ = ["output_columns", "predict"]
