"""``mosaicflow train``: a tiny run on synthetic fields and on image/mask folders, and the
refusals that exit 2 with one line naming the option or the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from mosaicflow import synth
from mosaicflow.cli import main
from mosaicflow.segmentation.models import load_checkpoint, read_checkpoint_metadata

TINY = ["--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--crop", "64", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    """``--threads 1`` sets torch's global thread count: give the rest of the suite its own."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["train", *argv])
    return code, " ".join(capsys.readouterr().out.split())


def test_train_on_synthetic_fields(tmp_path, capsys):
    # a path longer than the captured console's 80 columns is printed whole, not folded
    folder = tmp_path / ("a-facility-folder-" * 5)
    folder.mkdir()
    out, report = folder / "m.safetensors", tmp_path / "report.json"
    assert len(str(out)) > 80
    code, printed = _train(
        ["--synthetic", "2", *TINY, "--out", str(out), "--report", str(report)], capsys
    )
    assert code == 0, printed
    assert "training data: 0 labelled image(s), 2 synthetic field(s)" in printed
    assert "epoch 1" in printed and f"wrote {out}" in printed
    ckpt = load_checkpoint(out)
    assert ckpt.meta.classes == 3 and ckpt.meta.extra["classes"][2] == "contact"
    # the whole default window: crops of 64 px do not limit the image size it segments
    assert ckpt.meta.window == 512
    training = ckpt.meta.extra["training"]
    assert training["data"]["synthetic"] == 2 and len(training["data"]["validation"]) == 1
    record = json.loads(report.read_text())
    assert record["command"] == "mosaicflow train" and len(record["history"]) == 1
    assert record["checkpoint"] == str(out)
    assert record["settings"]["crop"] == 64
    assert training["settings"]["rim"] == 0.0


def test_rim_reaches_the_training_settings(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code, printed = _train(["--synthetic", "2", *TINY, "--rim", "0.3", "--out", str(out)], capsys)
    assert code == 0, printed
    assert load_checkpoint(out).meta.extra["training"]["settings"]["rim"] == 0.3


@pytest.fixture
def folders(tmp_path):
    """Three labelled images: grey TIFFs and 16-bit instance-map PNGs of the same names."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(3):
        image, labels, _ = synth.synth_field(
            (96, 96), snr=15.0, seed=i, pixel_size_nm=4.0, density=60.0, touching_fraction=0.3
        )
        tifffile.imwrite(images / f"img{i}.tif", image.astype(np.float32))
        Image.fromarray(labels.astype(np.uint16)).save(masks / f"img{i}.png")
    return images, masks


def test_train_on_folders_with_init(folders, tmp_path, capsys):
    images, masks = folders
    first = tmp_path / "first.safetensors"
    argv = ["--images", str(images), "--masks", str(masks), *TINY, "--val-fraction", "0.3"]
    code, printed = _train([*argv, "--out", str(first)], capsys)
    assert code == 0, printed
    assert "training data: 3 labelled image(s), 0 synthetic field(s)" in printed
    data = read_checkpoint_metadata(first).extra["training"]["data"]
    assert data["real"] == 3 and len(data["validation"]) == 1
    # an existing --out is kept unless --overwrite
    before = first.read_bytes()
    code, printed = _train([*argv, "--out", str(first)], capsys)
    assert code == 2
    assert f"--out: {first} exists; pass --overwrite to replace it" in printed
    assert first.read_bytes() == before
    # --overwrite replaces a checkpoint, never another file
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    code, printed = _train([*argv, "--out", str(other), "--overwrite"], capsys)
    assert code == 2 and "notes.txt" in printed and other.read_text() == "keep me"
    # fine-tuning from it over itself, the arch option ignored for the checkpoint's own
    code, printed = _train(
        [*argv, "--init", str(first), "--arch", "fpn", "--out", str(first), "--overwrite"], capsys
    )
    assert code == 0, printed
    assert read_checkpoint_metadata(first).arch == "unet"
    assert first.read_bytes() != before


def test_fine_tuning_on_another_split_of_the_same_images_is_warned(folders, tmp_path, capsys):
    """--init validated on other images of this set: its training images would be this run's
    validation images, so the run says so; the same split, or other images, say nothing."""
    from mosaicflow.segmentation.folds import split

    images, masks = folders
    argv = ["--images", str(images), "--masks", str(masks), *TINY, "--val-fraction", "0.3"]
    first = tmp_path / "first.safetensors"
    assert _train([*argv, "--out", str(first)], capsys)[0] == 0
    names = ["img0", "img1", "img2"]
    kept = [s for s in split(names, 0.3, 0)[1]]
    other = next(k for k in range(1, 50) if split(names, 0.3, k)[1] != kept)
    code, printed = _train(
        [*argv, "--init", str(first), "--out", str(tmp_path / "same.safetensors")], capsys
    )
    assert code == 0 and "warning" not in printed
    code, printed = _train(
        [*argv, "--init", str(first), "--seed", str(other), "--out", str(tmp_path / "o.st")],
        capsys,
    )
    assert code == 0, printed
    assert f"--init {first} was validated on 1 other images of this set" in printed
    assert "1 of this run's 1 validation images were its training images" in printed
    assert "(its split: --seed 0 and the same --val-fraction)" in printed


def test_cross_validation_writes_no_checkpoint(folders, tmp_path, capsys):
    images, masks = folders
    report = tmp_path / "cv.json"
    out = tmp_path / "never.safetensors"
    argv = ["--images", str(images), "--masks", str(masks), *TINY, "--folds", "3"]
    code, printed = _train(
        [*argv, "--val-fraction", "0.5", "--out", str(out), "--report", str(report)], capsys
    )
    assert code == 0, printed
    assert "fold 1:" in printed and "fold 3:" in printed and "f1:" in printed
    assert not out.exists()
    record = json.loads(report.read_text())
    assert [r["fold"] for r in record["folds"]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "{images}", *TINY], "--images and --masks go together"),
        (["--masks", "{masks}", *TINY], "--images and --masks go together"),
        (TINY, "nothing to train on: give --images and --masks, or --synthetic N"),
        (
            ["--synthetic", "2", "--crop", "48"],
            "crop (48) and window (512) must be multiples of 32",
        ),
        (["--synthetic", "2", "--epochs", "0"], "max_epochs must be a positive integer"),
        (["--synthetic", "2", "--rim", "1"], "rim must be in [0, 1), got 1.0"),
        (
            ["--synthetic", "2", "--init", "{tmp}/missing.safetensors"],
            "missing.safetensors is not a file",
        ),
        (["--synthetic", "2", "--out", "{tmp}/no/such/m.safetensors"], "--out: the folder"),
        (
            ["--images", "{images}", "--masks", "{masks}", *TINY, "--names", "{tmp}/names.csv"],
            "names.csv is not a file",
        ),
        (["--synthetic", "2", "--names", "{names}"], "selects among the --images, which are not"),
        (["--synthetic", "1", *TINY], "1 labelled image(s); at least 2 are needed"),
        (["--synthetic", "4", *TINY, "--folds", "5"], "--folds must be an integer from 2 to 4"),
        (["--synthetic", "2", "--rafts", "1.5"], "--rafts (the share of raft fields)"),
        (["--synthetic", "2", "--supported", "-0.1"], "--supported (the share of supported"),
        (
            ["--synthetic", "2", "--rafts", "0.6", "--supported", "0.6"],
            "--rafts 0.6 and --supported 0.6 add up to more than 1",
        ),
    ],
)
def test_refusals_exit_2_with_a_message(folders, tmp_path, capsys, argv, message):
    images, masks = folders
    names = tmp_path / "existing-names.csv"
    names.write_text("a\n")
    argv = [a.format(images=images, masks=masks, tmp=tmp_path, names=names) for a in argv]
    # a later --out in argv wins over this one
    code, printed = _train(["--out", str(tmp_path / "m.safetensors"), *argv], capsys)
    assert code == 2
    assert "error:" in printed and message in printed
    assert not (tmp_path / "m.safetensors").exists()


def test_masks_named_differently_exit_2(folders, capsys, tmp_path):
    images, masks = folders
    for p in sorted(masks.iterdir()):
        p.rename(p.with_name(p.stem + "_mask.png"))
    code, printed = _train(
        ["--images", str(images), "--masks", str(masks), *TINY, "--out", str(tmp_path / "m.st")],
        capsys,
    )
    assert code == 2
    assert "3 image(s)" in printed and "no mask of the same name" in printed
    assert "'img0'" in printed
