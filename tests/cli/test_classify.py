"""mosaicflow.cli.classify: ``mosaicflow classify-train`` (here beside the classifier's tests)."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from mosaicflow.classify import ClassifierError, load
from mosaicflow.cli import classify as cli_classify
from mosaicflow.io.store import RunStore


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
    RunStore(str(store), mode="w").write_table("particles", table)
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
    table_file = RunStore(str(store), mode="r").table_path("particles")  # a plain Parquet file
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
    RunStore(str(store), mode="a").remove_table("particles")
    with pytest.raises(ClassifierError, match=r"run store .*: no particles table"):
        _cli(["classify-train", str(store), str(labels), "--out", str(tmp_path / "m")])
    foreign = tmp_path / "foreign.zarr"  # a Zarr store mosaicflow did not make
    foreign.mkdir()
    (foreign / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(ClassifierError, match=r"foreign\.zarr': not a readable Parquet"):
        _cli(["classify-train", str(foreign), str(labels), "--out", str(tmp_path / "m")])
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
