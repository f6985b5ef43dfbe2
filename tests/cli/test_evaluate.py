"""mosaicflow.cli.evaluate: ``mosaicflow evaluate`` on a tiny folder of synthetic fields."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from mosaicflow.cli import evaluate as cli_evaluate
from mosaicflow.errors import ConfigError
from mosaicflow.segmentation.evaluation import FORMAT, yolo_lines
from mosaicflow.synth.sem import synth_field


def _cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="mosaicflow")
    cli_evaluate.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", *argv])
    buf = io.StringIO()
    code = args.func(args, Console(file=buf, width=200))
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two synthetic fields: uint8 PNG images, uint16 PNG instance maps, YOLO boxes."""
    root = tmp_path_factory.mktemp("evalcli")
    for sub in ("images", "masks", "boxes"):
        (root / sub).mkdir()
    for i, seed in enumerate((3, 4)):
        image, labels, _ = synth_field((192, 192), snr=None, seed=seed, density=40.0)
        u8 = np.round((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
        Image.fromarray(u8).save(root / "images" / f"f{i}.png")
        Image.fromarray(labels.astype(np.uint16)).save(root / "masks" / f"f{i}.png")
        (root / "boxes" / f"f{i}.txt").write_text("\n".join(yolo_lines(labels)) + "\n")
    return root


def test_evaluate_prints_and_writes_the_files(pair, tmp_path):
    out = tmp_path / "eval" / "run1"
    code, text = _cli(
        [str(pair / "images"), str(pair / "masks"), "--model", "fourier", "--out", str(out)]
    )
    assert code == 0
    assert "fourier: 2 image(s)" in text and "F1" in text and "pixel Dice" in text
    record = json.loads((out / cli_evaluate.JSON_NAME).read_text())
    assert record["format"] == FORMAT and record["model"] == "fourier"
    assert [r["name"] for r in record["rows"]] == ["f0", "f1"]
    assert record["scores"]["f1"] > 0.8
    page = (out / cli_evaluate.MARKDOWN_NAME).read_text()
    assert "| F1 |" in page and "| f0 |" in page and "| f1 |" in page
    # a second run may replace its own evaluation
    code, _ = _cli(
        [str(pair / "images"), str(pair / "masks"), "--model", "otsu", "--out", str(out)]
    )
    assert code == 0
    assert json.loads((out / cli_evaluate.JSON_NAME).read_text())["model"] == "otsu"


def test_tta_is_named_and_recorded(pair, tmp_path):
    out = tmp_path / "tta"
    code, text = _cli([str(pair / "images"), str(pair / "masks"), "--tta", "--out", str(out)])
    assert code == 0 and "default with TTA: 2 image(s)" in text
    record = json.loads((out / cli_evaluate.JSON_NAME).read_text())
    assert record["options"] == {"tta": True} and record["scores"]["f1"] > 0.5
    for model in ("otsu", "fourier"):  # no windows to average: refused, naming the option
        with pytest.raises(ConfigError, match="tta"):
            _cli([str(pair / "images"), str(pair / "masks"), "--tta", "--model", model])


def test_per_image_names_and_limit(pair, tmp_path):
    names = tmp_path / "names.csv"
    names.write_text("f1\nf0\n")
    code, text = _cli(
        [str(pair / "images"), str(pair / "masks"), "--model", "fourier", "--names", str(names),
         "--limit", "1", "--per-image"]
    )  # fmt: skip
    assert code == 0
    assert "fourier: 1 image(s)" in text
    each = text.split("each image")[1]
    assert "│ f1 " in each and "│ f0 " not in each


def test_boxes(pair, tmp_path):
    code, text = _cli(
        [str(pair / "images"), str(pair / "boxes"), "--model", "fourier", "--boxes",
         "--out", str(tmp_path / "b")]
    )  # fmt: skip
    assert code == 0 and "boxes matched" in text and "pixel Dice" not in text
    record = json.loads((tmp_path / "b" / cli_evaluate.JSON_NAME).read_text())
    assert record["boxes"] is True and "pixel_dice" not in record["scores"]
    assert record["scores"]["f1"] > 0.8


def test_nan_scores_are_written_as_null(pair, tmp_path):
    # the baseline finds nothing on a flat image: precision and matched IoU are undefined
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.full((192, 192), 9, np.uint8)).save(flat / "f0.png")
    masks = tmp_path / "m"
    masks.mkdir()
    (masks / "f0.png").write_bytes((pair / "masks" / "f0.png").read_bytes())
    code, _ = _cli([str(flat), str(masks), "--model", "fourier", "--out", str(tmp_path / "o")])
    assert code == 0
    raw = (tmp_path / "o" / cli_evaluate.JSON_NAME).read_text()
    assert "NaN" not in raw and json.loads(raw)["scores"]["precision"] is None


def test_a_foreign_folder_is_refused_and_left_alone(pair, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    argv = [str(pair / "images"), str(pair / "masks"), "--model", "fourier", "--out"]
    with pytest.raises(ConfigError, match=r"not empty and holds no evaluation\.json"):
        _cli([*argv, str(foreign)])
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    # an evaluation.json that mosaicflow did not write does not make a folder ours
    (foreign / "evaluation.json").write_text('{"format": "someone-else"}')
    with pytest.raises(ConfigError, match="not empty"):
        _cli([*argv, str(foreign)])
    assert (foreign / "evaluation.json").read_text() == '{"format": "someone-else"}'
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        _cli([*argv, str(a_file)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli([*argv, str(empty)])[0] == 0


def test_errors_come_before_any_work(pair, tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'unet'"):
        _cli([str(pair / "images"), str(pair / "masks"), "--model", "unet"])
    with pytest.raises(ConfigError, match="mask set is empty"):
        _cli([str(pair / "images"), str(tmp_path), "--model", "fourier"])
