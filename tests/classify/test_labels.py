"""mosaicflow.classify.labels: training labels from a label,class file."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from mosaicflow.classify import ClassifierError, labels_from_file


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
