"""mosaicflow.segmentation.evaluation and .baselines: scoring a segmenter on a folder pair, and
the Fourier band-pass baseline, against the exact truth of mosaicflow.synth fields."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from mosaicflow.errors import CheckpointError, ConfigError
from mosaicflow.segmentation import datasets, metrics
from mosaicflow.segmentation.baselines import band_pass, fourier_instances
from mosaicflow.segmentation.evaluation import (
    PIXEL_SCORES,
    evaluate,
    read_yolo_boxes,
    yolo_lines,
)
from mosaicflow.segmentation.segmenter import segment
from mosaicflow.synth.sem import synth_field

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
SHAPE = (256, 256)


def _field(seed: int, snr: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    image, labels, _ = synth_field(SHAPE, snr=snr, seed=seed, density=40.0)
    return image, labels.astype(np.uint32)


def _u8(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    return np.round((image - lo) / (hi - lo) * 255).astype(np.uint8)


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def folder_pair(tmp_path_factory):
    """Three synthetic fields in the file formats a user brings: uint8 PNG and float32 TIFF
    images, uint16 PNG and uint32 TIFF instance maps; ``truth`` maps each image's pixels (as
    read back) to its true labels."""
    root = tmp_path_factory.mktemp("pair")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    truth = {}
    for i, seed in enumerate((11, 12, 13)):
        image, labels = _field(seed)
        if i == 2:
            tifffile.imwrite(images / f"field-{i}.tif", image.astype(np.float32))
            tifffile.imwrite(masks / f"field-{i}.tiff", labels)
        else:
            Image.fromarray(_u8(image)).save(images / f"field-{i}.png")
            Image.fromarray(labels.astype(np.uint16)).save(masks / f"field-{i}.png")
        read = datasets.read_grey(next(images.glob(f"field-{i}.*")))
        truth[_key(read)] = labels
    return images, masks, truth


def _oracle(truth):
    """A "model" that returns the true labels of each image it is given."""

    def model(image):
        return truth[_key(image)]

    return model


def test_truth_as_prediction_scores_perfect(folder_pair):
    images, masks, truth = folder_pair
    calls = []
    result = evaluate(images, masks, model=_oracle(truth), on_image=lambda *a: calls.append(a[:2]))
    s = result["scores"]
    assert s["images"] == 3 and len(result["rows"]) == 3
    assert s["f1"] == 1.0 and s["pixel_dice"] == 1.0 and s["mean_matched_iou"] == 1.0
    assert s["true_particles"] == sum(len(np.unique(t)) - 1 for t in truth.values())
    assert s["size_distance"] == 0.0
    assert [r["name"] for r in result["rows"]] == ["field-0", "field-1", "field-2"]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert result["seconds_per_image"] >= 0 and result["model"].startswith("callable")


def test_set_scores_are_the_sum_of_the_images(folder_pair):
    images, masks, _ = folder_pair
    result = evaluate(images, masks, model="fourier")
    rows, s = result["rows"], result["scores"]
    for key in ("true_particles", "predicted_particles", "matched"):
        assert s[key] == sum(r[key] for r in rows)
    # micro-averaged F1 from the summed counts
    tp, npred, ntrue = s["matched"], s["predicted_particles"], s["true_particles"]
    assert s["f1"] == pytest.approx(2 * tp / (npred + ntrue))


def test_binary_masks_become_their_components(tmp_path):
    image, labels = _field(21)
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    Image.fromarray(_u8(image)).save(tmp_path / "i" / "a.png")
    Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(tmp_path / "m" / "a.png")
    components, _ = ndi.label(labels > 0, np.ones((3, 3)))
    result = evaluate(tmp_path / "i", tmp_path / "m", model=lambda img: components)
    assert result["scores"]["f1"] == 1.0


def test_names_and_limit_choose_images(folder_pair):
    images, masks, truth = folder_pair
    model = _oracle(truth)
    result = evaluate(images, masks, model=model, names=["field-2", "field-0"])
    assert [r["name"] for r in result["rows"]] == ["field-2", "field-0"]
    result = evaluate(images, masks, model=model, limit=1)
    assert [r["name"] for r in result["rows"]] == ["field-0"]
    with pytest.raises(ConfigError, match="--limit"):
        evaluate(images, masks, model=model, limit=0)


def test_otsu_through_segment(folder_pair):
    images, masks, _ = folder_pair
    result = evaluate(images, masks, model="otsu", sigma=1.0)
    for row in result["rows"]:
        labels = segment(datasets.read_grey(Path(row["image"])), "otsu", sigma=1.0)
        assert row["predicted_particles"] == len(np.unique(labels)) - 1
    assert result["model"] == "otsu" and result["scores"]["f1"] > 0.8


def test_a_checkpoint_is_loaded_once_and_segments_as_segment_does(tmp_path, monkeypatch):
    import torch

    from mosaicflow.segmentation import evaluation as evaluate_module
    from mosaicflow.segmentation.models import build_model, save_checkpoint

    torch.manual_seed(0)
    decoder = (16, 16, 16, 16, 16)
    net = build_model("unet", "resnet18", classes=3, decoder_channels=decoder)
    ckpt = save_checkpoint(
        tmp_path / "tiny.safetensors",
        net,
        arch="unet",
        classes=3,
        window=64,
        decoder_channels=decoder,
        extra={"kind": "instances", "seed_threshold": 0.5},
        activation="softmax",
    )
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    for i in range(2):
        image, labels = _field(40 + i)
        Image.fromarray(_u8(image[:64, :64])).save(tmp_path / "i" / f"{i}.png")
        Image.fromarray(labels[:64, :64].astype(np.uint16)).save(tmp_path / "m" / f"{i}.png")
    loads = []
    real_load = evaluate_module.load_model
    monkeypatch.setattr(evaluate_module, "load_model", lambda m: loads.append(m) or real_load(m))
    result = evaluate(tmp_path / "i", tmp_path / "m", model=ckpt, runtime="torch")
    assert len(loads) == 1 and len(result["rows"]) == 2
    for row in result["rows"]:
        labels = segment(datasets.read_grey(Path(row["image"])), ckpt, runtime="torch")
        assert row["predicted_particles"] == len(np.unique(labels)) - 1


# --- boxes ---------------------------------------------------------------------------------


def test_yolo_lines_read_back_as_label_boxes(tmp_path):
    _, labels = _field(5)
    path = tmp_path / "a.txt"
    path.write_text("\n".join(yolo_lines(labels)) + "\n")
    boxes = read_yolo_boxes(path, labels.shape)
    assert len(boxes) == len(np.unique(labels)) - 1
    np.testing.assert_allclose(boxes, metrics.label_boxes(labels), atol=1e-4)


@pytest.fixture(scope="module")
def box_pair(folder_pair, tmp_path_factory):
    images, _, truth = folder_pair
    boxes = tmp_path_factory.mktemp("boxes")
    for path in sorted(images.iterdir()):
        labels = truth[_key(datasets.read_grey(path))]
        (boxes / f"{path.stem}.txt").write_text("\n".join(yolo_lines(labels)) + "\n")
    return images, boxes, truth


def test_boxes_of_the_truth_score_perfect(box_pair):
    images, boxes, truth = box_pair
    result = evaluate(images, boxes, model=_oracle(truth), boxes=True)
    s = result["scores"]
    assert s["f1"] == 1.0 and s["mean_matched_iou"] == pytest.approx(1.0)
    assert s["true_particles"] == sum(len(np.unique(t)) - 1 for t in truth.values())
    assert not set(PIXEL_SCORES) & set(s)
    assert result["boxes"] is True


def test_boxes_of_a_wrong_prediction_score_below_one(box_pair):
    images, boxes, truth = box_pair

    def shifted(image):
        return np.roll(truth[_key(image)], 12, axis=1)  # every box moved by 12 px

    result = evaluate(images, boxes, model=shifted, boxes=True)
    assert result["scores"]["f1"] < 1.0


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("0 0.5 0.5 0.1", "five numbers"),
        ("0 0.5 0.5 0.1 0.1 0.9", "five numbers"),
        ("0 0.5 half 0.1 0.1", "five numbers"),
        ("0 1.5 0.5 0.1 0.1", "fractions"),
        ("0 0.5 0.5 -0.1 0.1", "fractions"),
        ("0 0.5 0.5 0.1 1.2", "fractions"),
    ],
)
def test_a_malformed_box_line_is_named(box_pair, tmp_path, line, what):
    images, boxes, _ = box_pair
    bad = tmp_path / "boxes"
    bad.mkdir()
    for p in boxes.iterdir():
        (bad / p.name).write_text(p.read_text())
    (bad / "field-1.txt").write_text("0 0.5 0.5 0.1 0.1\n\n" + line + "\n")
    called = []
    with pytest.raises(ConfigError, match=rf"field-1\.txt, line 3: .*{what}"):
        evaluate(images, bad, model=lambda img: called.append(1), boxes=True)
    assert not called  # box files are checked before anything is segmented


def test_a_box_without_area_is_left_out_and_counted(box_pair, tmp_path):
    images, boxes, truth = box_pair
    more = tmp_path / "more"
    more.mkdir()
    for p in boxes.iterdir():
        (more / p.name).write_text(p.read_text())
    (more / "field-0.txt").write_text((boxes / "field-0.txt").read_text() + "0 0.5 0.5 0 0.01\n")
    result = evaluate(images, more, model=_oracle(truth), boxes=True)
    assert result["scores"]["f1"] == 1.0 and result["scores"]["empty_boxes"] == 1
    assert [r["empty_boxes"] for r in result["rows"]] == [1, 0, 0]


def test_images_without_box_files_are_named(box_pair, tmp_path):
    images, boxes, _ = box_pair
    few = tmp_path / "few"
    few.mkdir()
    (few / "field-0.txt").write_text((boxes / "field-0.txt").read_text())
    with pytest.raises(ConfigError, match=r"no box file .*field-1"):
        evaluate(images, few, model="fourier", boxes=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="box set is empty"):
        evaluate(images, empty, model="fourier", boxes=True)


# --- bad inputs ----------------------------------------------------------------------------


def _copy_pair(folder_pair, tmp_path):
    images, masks, truth = folder_pair
    out = []
    for src in (images, masks):
        dst = tmp_path / src.name
        dst.mkdir()
        for p in src.iterdir():
            (dst / p.name).write_bytes(p.read_bytes())
        out.append(dst)
    return out[0], out[1], truth


def test_mask_names_that_do_not_match_are_named(folder_pair, tmp_path):
    images, masks, truth = _copy_pair(folder_pair, tmp_path)
    (masks / "other.png").write_bytes((masks / "field-1.png").read_bytes())
    with pytest.raises(ConfigError, match=r"have no image.*other"):
        evaluate(images, masks, model=_oracle(truth))
    (masks / "field-1.png").unlink()
    with pytest.raises(ConfigError, match=r"no mask of the same name.*field-1"):
        evaluate(images, masks, model=_oracle(truth))


def test_a_mask_of_another_size_names_both_files(folder_pair, tmp_path):
    images, masks, _ = _copy_pair(folder_pair, tmp_path)
    small = np.zeros((SHAPE[0] - 1, SHAPE[1]), np.uint16)
    small[3:9, 3:9] = 1
    Image.fromarray(small).save(masks / "field-1.png")
    called = []
    with pytest.raises(ConfigError) as err:
        evaluate(images, masks, model=lambda img: called.append(1))
    msg = str(err.value)
    assert str(masks / "field-1.png") in msg and str(images / "field-1.png") in msg
    assert "255x256" in msg and "256x256" in msg
    assert not called  # sizes are checked from the headers before anything is segmented


def test_an_empty_mask_folder_is_refused(folder_pair, tmp_path):
    images, _, truth = folder_pair
    with pytest.raises(ConfigError, match="mask set is empty"):
        evaluate(images, tmp_path, model=_oracle(truth))


@pytest.mark.parametrize("model", ["unet", "Default", "fourrier"])
def test_an_unknown_model_name_is_refused(folder_pair, model):
    images, masks, _ = folder_pair
    with pytest.raises(ConfigError, match=rf"unknown model '{model}'.*default, otsu, fourier"):
        evaluate(images, masks, model=model)


def test_a_missing_checkpoint_is_named(folder_pair, tmp_path):
    images, masks, _ = folder_pair
    missing = tmp_path / "nowhere" / "model.safetensors"
    for model in (missing, str(missing), "model.safetensors"):
        with pytest.raises(CheckpointError, match=r"model\.safetensors"):
            evaluate(images, masks, model=model)


def test_the_default_model_missing_from_the_installation_is_named(folder_pair, monkeypatch):
    from mosaicflow.segmentation import default

    images, masks, _ = folder_pair
    monkeypatch.setattr(default, "DEFAULT_WEIGHTS", Path("/nonexistent/default.safetensors"))
    with pytest.raises(CheckpointError, match="--model: the default model's weights are missing"):
        evaluate(images, masks, model="default")


def test_the_default_model_scores_a_synthetic_field(folder_pair):
    from mosaicflow.segmentation.default import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"the default model's weights are not in this installation: {DEFAULT_WEIGHTS}")
    images, masks, _ = folder_pair
    result = evaluate(images, masks, limit=1)
    assert result["model"] == "default" and len(result["rows"]) == 1
    assert 0.0 <= result["scores"]["f1"] <= 1.0


def test_bad_segmenter_output_and_options_are_refused(folder_pair):
    images, masks, _ = folder_pair
    with pytest.raises(ConfigError, match=r"shape \(10, 10\) for .*field-0"):
        evaluate(images, masks, model=lambda img: np.zeros((10, 10), np.uint32))
    with pytest.raises(ConfigError, match="float32 labels"):
        evaluate(images, masks, model=lambda img: np.zeros(img.shape, np.float32))
    with pytest.raises(ConfigError, match=r"no option\(s\) \['sigma'\].*low_cut"):
        evaluate(images, masks, model="fourier", sigma=2.0)


# --- the Fourier baseline -------------------------------------------------------------------


@pytest.mark.parametrize("snr", [None, 10.0])
@pytest.mark.parametrize("invert", [False, True])
def test_fourier_baseline_finds_the_synthetic_particles(snr, invert):
    image, labels = _field(31, snr)
    found = fourier_instances(-image if invert else image)
    assert found.dtype == np.uint32 and found.shape == image.shape
    s = metrics.tally(labels, found).scores()
    assert s["f1"] > 0.8 and s["pixel_dice"] > 0.8


@pytest.mark.parametrize("background", ["ramp", "bowl", "wave"])
def test_fourier_baseline_removes_a_slow_background(background):
    image, labels = _field(32, snr=10.0)
    contrast = image[labels > 0].mean() - image[labels == 0].mean()
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]] / (SHAPE[1] - 1)
    slow = {
        "ramp": 3 * (x + y / 2),
        "bowl": 12 * ((x - 0.5) ** 2 + (y - 0.5) ** 2),
        "wave": 2 * np.sin(2 * np.pi * 0.8 * x),
    }[background]
    shaded = image + contrast * slow
    assert metrics.tally(labels, fourier_instances(shaded)).scores()["f1"] > 0.8
    # the same image without the band-pass's high-pass loses the particles
    flat = fourier_instances(shaded, low_cut=1e-6, high_cut=0.25)
    assert metrics.tally(labels, flat).scores()["f1"] < 0.5


def test_fourier_baseline_polarity_and_size():
    image, labels = _field(33)
    support = fourier_instances(image, polarity="dark")  # the support, not the particles
    assert (support > 0).mean() > 0.5 > (labels > 0).mean()
    assert np.array_equal(fourier_instances(image), fourier_instances(image, polarity="bright"))
    big = fourier_instances(image, min_size_px=10**6)
    assert big.max() == 0
    assert fourier_instances(np.full((32, 32), 7, np.uint16)).max() == 0


@pytest.mark.parametrize("period", [4, 16, 64, 128])
def test_band_pass_response_matches_its_formula(period):
    low, high = 0.02, 0.25
    x = np.arange(512)
    wave = np.tile(np.sin(2 * np.pi * x / period), (64, 1))
    out = band_pass(wave, low_cut=low, high_cut=high)
    f = 2 / period  # in units of Nyquist
    expected = (1 - math.exp(-math.log(2) * (f / low) ** 2)) * math.exp(
        -math.log(2) * (f / high) ** 2
    )
    centre = (slice(16, 48), slice(128, 384))
    gain = (out[centre] * wave[centre]).sum() / (wave[centre] ** 2).sum()
    assert gain == pytest.approx(expected, rel=0.02, abs=1e-3)
    assert np.abs(band_pass(np.full((40, 50), 3.0))).max() < 1e-9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"low_cut": 0.3, "high_cut": 0.2}, "low_cut < high_cut"),
        ({"high_cut": 1.5}, "high_cut <= 1"),
        ({"low_cut": float("nan")}, "low_cut must be a finite"),
        ({"polarity": "up"}, "polarity must be one of"),
        ({"min_size_px": -1}, "min_size_px must be >= 0"),
        ({"min_size_px": 2.5}, "min_size_px must be an integer"),
    ],
)
def test_fourier_baseline_refuses_bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fourier_instances(np.zeros((16, 16)), **kwargs)


def test_fourier_baseline_refuses_bad_images():
    with pytest.raises(ConfigError, match="2-D"):
        fourier_instances(np.zeros((4, 16, 16)))
    bad = np.zeros((16, 16))
    bad[3, 3] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        fourier_instances(bad)


# --- real data (skipped where ../shared/data/real is absent) ---------------------------------


def _real(sub: str) -> Path:
    path = REAL / sub
    if not path.is_dir():
        pytest.skip(f"real data not present: {path.resolve()} (../shared/data/real is optional)")
    return path


def test_real_emps_pairs_are_scored():
    emps = _real("emps_particles")
    names = datasets.read_names(emps / "test.csv")[:2]
    result = evaluate(emps / "images", emps / "segmaps", model="fourier", names=names)
    assert [r["name"] for r in result["rows"]] == names
    s = result["scores"]
    assert s["true_particles"] > 0 and 0.0 <= s["pixel_dice"] <= 1.0


def test_real_yolo_boxes_are_read_and_scored():
    stem = _real("stem_catalysts_yolo")
    for path in sorted((stem / "labels").glob("*.txt")):  # every real box file parses
        boxes = read_yolo_boxes(path, (640, 640))
        assert len(boxes) and (boxes[:, 2:] >= boxes[:, :2]).all()
    result = evaluate(
        stem / "images", stem / "labels", model="fourier", names=["Cu1", "Ru1"], boxes=True
    )
    s = result["scores"]
    assert s["images"] == 2 and s["true_particles"] > 0 and 0.0 <= s["recall"] <= 1.0
