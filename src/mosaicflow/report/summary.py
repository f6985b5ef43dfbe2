"""Numbers of a run's report: size, shape and class statistics, ground truth, stage timings.

Everything here is vectorised over the particle table (a million rows take well under a
second) and reads only the table columns it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.io.store import RunStore
from mosaicflow.measure.columns import UNCLASSIFIED

ECD = "equivalent_diameter_area"
"""Column of the equivalent circular diameter (nm), the report's size measure."""


# -- reading -------------------------------------------------------------------------------
def read_columns(store: RunStore, name: str, columns: Iterable[str]) -> pd.DataFrame:
    """The columns of table ``name`` among ``columns`` that exist (others are skipped).

    Only these columns are read from the Parquet file(s), which keeps a million-row table with
    a hundred columns at a few tens of MB.
    """
    available = set(store.table_columns(name))
    return store.read_table(name, columns=[c for c in dict.fromkeys(columns) if c in available])


# -- statistics ----------------------------------------------------------------------------
def size_statistics(ecd_nm: np.ndarray) -> dict[str, float | None]:
    """Mean, median, standard deviation and D10/D50/D90 of diameters in nm.

    D10/D50/D90 are number-weighted percentiles (``numpy.percentile``, linear interpolation);
    the standard deviation is that of the measured set (``ddof=0``). Every value is ``None``
    for an empty input.
    """
    ecd_nm = np.asarray(ecd_nm, dtype=np.float64)
    if ecd_nm.size == 0:
        return {
            "mean_nm": None,
            "median_nm": None,
            "d10_nm": None,
            "d50_nm": None,
            "d90_nm": None,
            "std_nm": None,
        }
    d10, d50, d90 = np.percentile(ecd_nm, [10, 50, 90])
    return {
        "mean_nm": float(ecd_nm.mean()),
        "median_nm": float(np.median(ecd_nm)),
        "d10_nm": float(d10),
        "d50_nm": float(d50),
        "d90_nm": float(d90),
        "std_nm": float(ecd_nm.std()),
    }


#: The shape columns the summary reports (median and 10th/90th percentiles).
SUMMARY_SHAPE_COLUMNS = ("circularity", "aspect_ratio", "solidity", "eccentricity")


def shape_statistics(table: pd.DataFrame) -> dict[str, Any]:
    """Median (and 10th/90th percentile) of each shape column present in ``table``.

    Non-finite values (a zero perimeter gives an infinite circularity) are left out and
    counted. Returns ``{column: {"median", "p10", "p90", "n"}}``; ``None`` for each value of a
    column with no finite entry; columns absent from the table are absent from the result.
    """
    out: dict[str, Any] = {}
    for col in SUMMARY_SHAPE_COLUMNS:
        if col not in table:
            continue
        values = table[col].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        if finite.size:
            p10, p50, p90 = np.percentile(finite, [10, 50, 90])
            out[col] = {
                "median": float(p50),
                "p10": float(p10),
                "p90": float(p90),
                "n": int(finite.size),
                "non_finite": int(values.size - finite.size),
            }
        else:
            out[col] = {
                "median": None,
                "p10": None,
                "p90": None,
                "n": 0,
                "non_finite": int(values.size),
            }
    return out


def compare_with_truth(table: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Found particles against a synthetic ground truth: counts and median ECD.

    Truth rows of class ``empty`` (HRTEM synthetic data: carbon patches, not particles) are
    not counted as particles. Relative errors are in percent, ``100 (found - true) / true``
    (``None`` without true particles). Totals can hide errors that cancel (a missed particle
    and a false one): the one-to-one figures come from :mod:`mosaicflow.report.matching`.
    """
    if "class" in truth:
        truth = truth[truth["class"] != "empty"]
    found_median = float(np.median(table[ECD])) if len(table) else float("nan")
    true_median = float(np.median(truth["ecd_nm"])) if len(truth) else float("nan")
    return {
        "true_count": len(truth),
        "found_count": len(table),
        "count_error_percent": 100.0 * (len(table) - len(truth)) / len(truth)
        if len(truth)
        else None,
        "true_median_ecd_nm": true_median,
        "found_median_ecd_nm": found_median,
        "median_ecd_error_percent": 100.0 * (found_median - true_median) / true_median
        if len(truth)
        else None,
    }


def segmentation_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """The segmenter and its threshold, named with the threshold's unit.

    The Otsu baseline thresholds the denoised image: ``threshold_grey_level`` is in grey
    levels of that image (its stored type, e.g. uint8 0..255). A model thresholds its
    probability: ``threshold_probability`` (0..1). ``threshold_unit`` says it in words.
    """
    stages = meta.get("stages", {})
    prob = stages.get("probability", {}) or {}
    segmenter = prob.get("segmenter")
    threshold = prob.get("threshold")
    out: dict[str, Any] = {"segmenter": segmenter}
    if threshold is None:
        return out
    if segmenter == "model":
        out["threshold_probability"] = threshold
        out["threshold_unit"] = "probability of the model's particle class (0 to 1)"
    else:
        dtype = (stages.get("denoised", {}) or {}).get("dtype")
        out["threshold_grey_level"] = threshold
        out["threshold_unit"] = "grey level of the denoised image" + (
            f" ({dtype}{', 0 to 255' if dtype == 'uint8' else ''})" if dtype else ""
        )
    return out


# -- classes -------------------------------------------------------------------------------
def encode_classes(
    values: Any, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a class column, and the class names they index.

    Parameters
    ----------
    values : array-like of str
        One class per particle (missing values allowed).
    classes : sequence of str, optional
        The classifier's classes in their order; values not among them are appended, sorted
        (``"unclassified"`` last). Without it, the sorted distinct values are used.

    Returns
    -------
    codes : ndarray of int16
        ``names[codes[i]]`` is particle ``i``'s class; ``-1`` for a missing value.
    names : list of str
    """
    cat = pd.Categorical(pd.Series(values, dtype=object).astype("string"))
    present = [str(c) for c in cat.categories]
    names = [str(c) for c in classes] if classes is not None else []
    extra = sorted(set(present) - set(names), key=lambda c: (c == UNCLASSIFIED, c))
    names = names + extra
    codes = pd.Categorical(cat, categories=names).codes.astype(np.int16)
    return codes, names


def classify_info(meta: dict[str, Any]) -> tuple[list[str] | None, np.ndarray | None]:
    """Classes and held-out confusion counts of the classifier the particles stage applied."""
    entry = meta.get("stages", {}).get("particles", {}).get("classifier", {}) or {}
    classes = entry.get("classes")
    confusion = entry.get("confusion")
    return (
        [str(c) for c in classes] if classes else None,
        None if confusion is None else np.asarray(confusion, dtype=np.float64),
    )


def class_summary(
    predicted: Any,
    classes: Sequence[str],
    *,
    confusion: np.ndarray | None = None,
    ecd_nm: np.ndarray | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Per-class counts and fractions with intervals, raw and (with ``confusion``) adjusted.

    The fractions come from :func:`mosaicflow.classify.metrics.class_fractions` (Wilson
    intervals; adjusted classify-and-count with a bootstrap interval). ``classes`` are the
    classifier's classes (the order of ``confusion``); a predicted class outside them, which
    a table and metadata out of step would give, is added as a class of its own and the
    adjustment is then skipped. With ``ecd_nm`` each class also gets its median ECD.

    Returns
    -------
    table : pandas.DataFrame
        ``class, count, fraction, ci_low, ci_high`` [``adjusted_fraction, adjusted_low,
        adjusted_high``] [``median_ecd_nm``], one row per class; ``attrs["n"]`` and
        ``attrs["unclassified"]`` as ``class_fractions`` gives them.
    notes : list of str
        What was skipped and why.
    """
    from mosaicflow.classify.metrics import class_fractions

    notes: list[str] = []
    codes, names = encode_classes(predicted, classes)
    fit_classes = [c for c in names if c != UNCLASSIFIED]
    if confusion is not None and fit_classes != [c for c in classes if c != UNCLASSIFIED]:
        notes.append(
            "predicted classes outside the classifier's classes "
            f"{sorted(set(fit_classes) - set(classes))}: fractions not adjusted"
        )
        confusion = None
    if confusion is not None and confusion.shape != (len(fit_classes), len(fit_classes)):
        notes.append(
            f"confusion matrix of shape {confusion.shape} does not fit {len(fit_classes)} "
            "classes: fractions not adjusted"
        )
        confusion = None
    if not fit_classes:
        notes.append(
            "no particles: no class fractions"
            if codes.size == 0
            else "every particle is unclassified: no class fractions"
        )
        return pd.DataFrame(columns=["class", "count", "fraction", "ci_low", "ci_high"]), notes
    predicted_names = np.asarray([*names, ""], dtype=object)[codes]
    valid = codes >= 0
    table = class_fractions(predicted_names[valid], fit_classes, confusion=confusion)
    if ecd_nm is not None:
        ecd_nm = np.asarray(ecd_nm, dtype=np.float64)
        medians = []
        for i, name in enumerate(names):
            if name == UNCLASSIFIED:
                continue
            sel = ecd_nm[codes == i]
            medians.append(float(np.median(sel)) if sel.size else np.nan)
        table["median_ecd_nm"] = medians
    return table, notes


def truth_class_fractions(truth: pd.DataFrame) -> list[dict[str, Any]] | None:
    """Counts and fractions of the true classes (ground truth's ``class`` column), if any."""
    if "class" not in truth:
        return None
    counts = truth["class"].astype("string").value_counts(dropna=True).sort_index()
    total = int(counts.sum())
    return [
        {"class": str(k), "count": int(v), "fraction": (int(v) / total) if total else None}
        for k, v in counts.items()
    ]


# -- stages --------------------------------------------------------------------------------
def stage_timings(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Seconds and Mpx/s of every finished stage, in run order."""
    return {
        name: {"seconds": s.get("seconds"), "mpx_per_s": s.get("mpx_per_s")}
        for name, s in meta.get("stages", {}).items()
        if s.get("status") == "done"
    }


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays made plain and non-finite floats made ``None``.

    ``summary.json`` is strict JSON (``NaN`` is not JSON and breaks browsers' parsers).
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``table`` as JSON-ready dicts."""
    return [jsonable(row) for row in table.to_dict(orient="records")]
