"""Training labels: a ``label,class`` file matched to the particles of a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.classify.model import as_pandas
from mosaicflow.errors import ClassifierError


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
        :func:`mosaicflow.classify.train` with the same table).

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
    table = as_pandas(table, ["label"])
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


__all__ = ["labels_from_file"]
