"""Training an instance model on tiny synthetic fields: the checkpoint it writes (classes,
thresholds, float16 weights, decoder widths), determinism, fine-tuning and its refusals, the
split, the settings' checks, the threshold sweep and K-fold cross-validation."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mosaicflow import synth
from mosaicflow.errors import CheckpointError, ConfigError
from mosaicflow.segmentation import default as default_model
from mosaicflow.segmentation.datasets import Sample, normalise
from mosaicflow.segmentation.folds import cross_validate, split, summarise
from mosaicflow.segmentation.metrics import tally
from mosaicflow.segmentation.models import (
    build_model,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
    validate_checkpoint,
)
from mosaicflow.segmentation.operating import (
    EPOCH_POINTS,
    FIXED_POINT,
    FOREGROUND_GRID,
    SEED_GRID,
    score,
    sweep_thresholds,
)
from mosaicflow.segmentation.targets import CLASS_NAMES, INTERIOR, instance_classes
from mosaicflow.segmentation.train import TrainSettings, softmax_whole, train, training_device

#: Small decoder widths (not the default ones), so the tests also see them kept.
DECODER = (32, 16, 16, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    """``train(threads=1)`` sets torch's global thread count: give the rest of the suite its own."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny(**kw) -> TrainSettings:
    base = dict(
        crop=64,
        batch=2,
        max_epochs=2,
        steps_per_epoch=1,
        window=64,
        threads=1,
        decoder_channels=DECODER,
    )
    return TrainSettings(**{**base, **kw})


def field_samples(n: int, size: int = 96, seed: int = 0) -> list[Sample]:
    """``n`` synthetic fields with particles (4 nm/px: particles of about 15 px)."""
    out = []
    for i in range(n):
        image, labels, particles = synth.synth_field(
            (size, size),
            snr=15.0,
            seed=seed + i,
            pixel_size_nm=4.0,
            density=60.0,
            touching_fraction=0.3,
        )
        assert len(particles) >= 2
        out.append(Sample(f"f{i}", normalise(image), labels))
    return out


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return field_samples(3)


@pytest.fixture(scope="module")
def trained(samples, tmp_path_factory):
    """One tiny run, with what its callbacks saw."""
    out = tmp_path_factory.mktemp("train") / "m.safetensors"
    epochs, steps = [], []
    result = train(
        samples[:2],
        samples[2:],
        tiny(),
        out,
        on_epoch=epochs.append,
        on_step=lambda i, n: steps.append((i, n)),
        provenance={"data": {"synthetic": 3}},
    )
    return result, out, epochs, steps


def _file_state(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_a_run_writes_an_instance_checkpoint(trained):
    result, out, epochs, steps = trained
    assert result.path == out and out.is_file()
    assert result.epochs == len(result.history) == len(epochs) == 2
    assert steps == [(1, 1), (1, 1)]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"loss", "lr", "val_f1", "val_dice", "val_point", "seconds", "best"} <= set(epochs[0])
    assert all(tuple(r["val_point"]) in EPOCH_POINTS for r in epochs)
    assert epochs[0]["best"] and result.best_epoch in (1, 2)
    assert epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 at the last step

    meta = read_checkpoint_metadata(out)
    assert (meta.arch, meta.encoder, meta.in_channels, meta.classes) == ("unet", "resnet18", 1, 3)
    assert meta.activation == "softmax" and meta.window == 64
    assert meta.decoder_channels == list(DECODER)
    assert meta.extra["kind"] == "instances"
    assert meta.extra["classes"] == ["background", "interior", "contact"] == list(CLASS_NAMES)
    assert meta.threshold == result.foreground_threshold in FOREGROUND_GRID
    assert meta.extra["seed_threshold"] == result.seed_threshold in SEED_GRID
    assert meta.extra["input"]["scale"] == "percentiles"
    training = meta.extra["training"]
    assert training["epochs"] == 2 and len(training["history"]) == 2
    assert training["settings"]["crop"] == 64 and training["data"] == {"synthetic": 3}


def test_weights_are_stored_as_float16_and_load(trained):
    result, out, _, _ = trained
    stored = _file_state(out)
    floats = [k for k, v in stored.items() if v.is_floating_point()]
    assert floats and all(stored[k].dtype == torch.float16 for k in floats)
    assert validate_checkpoint(out).classes == 3
    loaded = load_checkpoint(out)
    for k, v in result.model.state_dict().items():
        w = loaded.model.state_dict()[k]
        if v.is_floating_point():
            assert w.dtype == torch.float32
            assert torch.equal(w, v.half().float()), k
        else:
            assert torch.equal(w, v), k
    # the loaded model predicts three classes
    probs = softmax_whole(loaded.model, np.zeros((40, 70), np.float32))
    assert probs.shape == (3, 40, 70) and np.allclose(probs.sum(0), 1, atol=1e-5)


def test_the_same_seed_gives_the_same_model(samples, trained, tmp_path):
    _, first, _, _ = trained
    again = train(samples[:2], samples[2:], tiny(), tmp_path / "again.safetensors").path
    other = train(samples[:2], samples[2:], tiny(seed=1), tmp_path / "other.safetensors").path
    a, b, c = _file_state(first), _file_state(again), _file_state(other)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_fine_tuning_keeps_the_checkpoint_architecture(samples, trained, tmp_path):
    _, first, _, _ = trained
    settings = tiny(arch="fpn", decoder_channels=(64, 32, 16, 16, 16), max_epochs=1)
    result = train(samples[:2], samples[2:], settings, tmp_path / "ft.safetensors", init=first)
    meta = read_checkpoint_metadata(result.path)
    assert meta.arch == "unet" and meta.decoder_channels == list(DECODER)
    assert meta.extra["classes"] == list(CLASS_NAMES)


def test_init_that_is_not_an_instance_model_is_refused(samples, tmp_path):
    with pytest.raises(CheckpointError, match=r"--init: .*missing\.safetensors is not a file"):
        train(samples[:2], samples[2:], tiny(), init=tmp_path / "missing.safetensors")
    torch.manual_seed(0)
    one_class = save_checkpoint(
        tmp_path / "binary.safetensors", build_model("unet", "resnet18"), arch="unet"
    )
    with pytest.raises(CheckpointError, match=r"--init .*binary\.safetensors.*1 output class"):
        train(samples[:2], samples[2:], tiny(), init=one_class)
    # three classes but not trained as instances (no class names): another model's checkpoint
    fpn = build_model("fpn", "resnet18", classes=3)
    three = save_checkpoint(tmp_path / "fpn3.safetensors", fpn, arch="fpn", classes=3)
    with pytest.raises(CheckpointError, match=r"--init .*fpn3\.safetensors: a fpn/resnet18 model"):
        train(samples[:2], samples[2:], tiny(), init=three)
    not_a_file = tmp_path / "junk.safetensors"
    not_a_file.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        train(samples[:2], samples[2:], tiny(), init=not_a_file)


def test_default_model_path(tmp_path, monkeypatch):
    monkeypatch.setattr(default_model, "DEFAULT_WEIGHTS", tmp_path / "default.safetensors")
    with pytest.raises(CheckpointError, match=r"--init: the default model's weights are missing"):
        default_model.resolve_model_path("default", what="--init")
    (tmp_path / "default.safetensors").write_bytes(b"x")
    assert default_model.resolve_model_path("default") == tmp_path / "default.safetensors"
    assert default_model.resolve_model_path(tmp_path / "default.safetensors").is_file()
    with pytest.raises(CheckpointError, match=r"model: .*nope is not a file"):
        default_model.resolve_model_path(tmp_path / "nope")


def test_decoder_channels_in_checkpoints(tmp_path):
    """Unet: all widths; FPN: the first is its pyramid width. Both round trip."""
    torch.manual_seed(0)
    for arch, dec in (("unet", [16, 16, 8, 8, 8]), ("fpn", [32])):
        model = build_model(arch, "resnet18", classes=3, decoder_channels=dec)
        path = save_checkpoint(
            tmp_path / f"{arch}.safetensors",
            model,
            arch=arch,
            classes=3,
            decoder_channels=dec,
            extra={"note": [1, 2]},
        )
        meta = read_checkpoint_metadata(path)
        assert meta.decoder_channels == dec and meta.extra == {"note": [1, 2]}
        loaded = load_checkpoint(path)
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[k], v), k
        # the widths are needed to load the weights
        with pytest.raises(CheckpointError, match=rf"x\.safetensors.*arch='{arch}'.*size mismatch"):
            save_checkpoint(tmp_path / "x.safetensors", model, arch=arch, classes=3)
    with pytest.raises(ConfigError, match=r"decoder_channels must be a list of positive"):
        save_checkpoint(tmp_path / "y.safetensors", model, arch="fpn", decoder_channels=[0])
    # a file whose metadata holds invalid widths is refused by name
    from safetensors.torch import save_file

    text = (
        read_checkpoint_metadata(path)
        .to_json()
        .replace('"decoder_channels": [32]', '"decoder_channels": [0]')
    )
    save_file(_file_state(path), str(tmp_path / "bad.safetensors"), metadata={"mosaicflow": text})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*decoder_channels must be"):
        read_checkpoint_metadata(tmp_path / "bad.safetensors")


def test_decoder_widths_of_the_wrong_count_are_refused_by_name(tmp_path):
    """A Unet has one decoder width per encoder stage (5): metadata listing 2 is a damaged or
    foreign checkpoint, refused as such by name (not a bare error from smp)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    dec = [16, 16, 8, 8, 8]
    model = build_model("unet", "resnet18", classes=3, decoder_channels=dec)
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, arch="unet", classes=3, decoder_channels=dec
    )
    text = read_checkpoint_metadata(path).to_json().replace(str(dec), "[16, 16]")
    assert '"decoder_channels": [16, 16]' in text
    bad = tmp_path / "two.safetensors"
    save_file(_file_state(path), str(bad), metadata={"mosaicflow": text})
    with pytest.raises(CheckpointError, match=r"two\.safetensors.*decoder_channels"):
        validate_checkpoint(bad)
    with pytest.raises(CheckpointError, match=r"two\.safetensors.*decoder_channels"):
        load_checkpoint(bad)
    with pytest.raises(ConfigError, match="decoder_channels"):
        build_model("unet", "resnet18", decoder_channels=[16, 16])


def test_split():
    samples = [Sample(f"s{i}", np.zeros((2, 2), np.float32), np.zeros((2, 2))) for i in range(10)]
    tr, va = split(samples, 0.2, seed=3)
    assert len(va) == 2 and len(tr) == 8
    assert sorted(s.name for s in tr + va) == sorted(s.name for s in samples)
    assert [s.name for s in split(samples, 0.2, seed=3)[1]] == [s.name for s in va]
    assert split(samples[:2], 0.01, seed=0)[1] and split(samples[:2], 0.99, seed=0)[0]
    with pytest.raises(ConfigError, match=r"1 labelled image\(s\); at least 2"):
        split(samples[:1], 0.1, seed=0)
    with pytest.raises(ConfigError, match=r"0 labelled image\(s\)"):
        split([], 0.1, seed=0)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ConfigError, match="validation fraction must be in"):
            split(samples, bad, seed=0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("crop", 0, "crop must be a positive integer"),
        ("crop", 48, r"crop \(48\) and window \(512\) must be multiples of 32"),
        ("window", 100, r"window \(100\) must be multiples of 32"),
        ("batch", True, "batch must be a positive integer, got True"),
        ("max_epochs", 1.5, "max_epochs must be a positive integer"),
        ("steps_per_epoch", -1, "steps_per_epoch must be a positive integer"),
        ("patience", 0, "patience must be a positive integer"),
        ("lr", 0.0, "lr must be a positive number"),
        ("lr", float("nan"), "lr must be a positive number"),
        ("max_minutes", 0.0, "max_minutes must be positive"),
        ("scale", (0.0, 1.0), "scale must be"),
        ("scale", (2.0, 1.0), "scale must be"),
        ("rim", 1.0, r"rim must be in \[0, 1\)"),
        ("rim", -0.1, r"rim must be in \[0, 1\)"),
        ("select", "best", "select must be one of points, fixed"),
        ("device", "tpu", "device must be auto, cpu or cuda"),
        ("device", "cuda:x", r"device must be auto, cpu or cuda\[:N\], got 'cuda:x'"),
        ("loaders", -1, "loaders must be 0 or more, got -1"),
        ("loaders", 1.5, "loaders must be 0 or more"),
    ],
)
def test_settings_check(field, value, message):
    TrainSettings().check()
    with pytest.raises(ConfigError, match=message):
        TrainSettings(**{field: value}).check()


def test_train_refuses_empty_sets_and_bad_settings(samples):
    with pytest.raises(ConfigError, match="no training images"):
        train([], samples, tiny())
    with pytest.raises(ConfigError, match="no validation images"):
        train(samples, [], tiny())
    with pytest.raises(ConfigError, match="crop"):
        train(samples, samples, tiny(crop=50))


def test_score_and_sweep_on_perfect_probabilities(samples):
    truths = [s.labels for s in samples]
    probs = [
        (
            np.where(t > 0, 255, 0).astype(np.uint8),
            np.where(instance_classes(t) == INTERIOR, 255, 0).astype(np.uint8),
        )
        for t in truths
    ]
    total = score(probs, truths, 0.5, 0.5)
    assert total.images == len(samples)
    assert total.scores()["pixel_dice"] == 1.0 and total.scores()["f1"] > 0.9
    fg, seed, _, scores = sweep_thresholds(probs, truths)
    # 0/255 probabilities: every threshold pair scores alike, the first one is kept
    assert (fg, seed) == (FOREGROUND_GRID[0], SEED_GRID[0])
    assert scores == pytest.approx(total.scores(), nan_ok=True)
    # the sweep picks the best pair: blurred interiors need a low seed threshold here
    soft = [(f, (i // 2).astype(np.uint8)) for f, i in probs]  # interior at most 127 (0.498)
    fg, seed, _, scores = sweep_thresholds(soft, truths)
    assert seed < 0.5 and scores["f1"] == pytest.approx(total.scores()["f1"])
    # scores sum over images
    one = [tally(t, np.zeros_like(t)) for t in truths]
    assert score(
        [(np.zeros_like(f), np.zeros_like(i)) for f, i in probs], truths, 0.5, 0.5
    ).fn == sum(t.fn for t in one)


def test_an_epoch_is_ranked_by_its_best_operating_point():
    """Two touching discs whose interior probability dips to 0.75 between them: seeds at 0.5
    join them (one particle), seeds at 0.8 separate them. The epoch's F1 is the best of
    EPOCH_POINTS, so a model is not ranked by how well it suits one fixed threshold."""
    from mosaicflow.segmentation.operating import best_point as _best_point

    yy, xx = np.mgrid[:64, :96]
    truth = np.zeros((64, 96), np.uint32)
    truth[(yy - 32) ** 2 + (xx - 30) ** 2 <= 15**2] = 1
    truth[((yy - 32) ** 2 + (xx - 60) ** 2 <= 15**2) & (truth == 0)] = 2
    fg = np.where(truth > 0, 255, 0).astype(np.uint8)
    interior = np.where(truth > 0, 250, 0).astype(np.uint8)
    interior[:, 44:47][truth[:, 44:47] > 0] = round(0.75 * 255)
    assert score([(fg, interior)], [truth], 0.5, 0.5).scores()["f1"] < 1
    point, scores = _best_point([(fg, interior)], [truth], EPOCH_POINTS)
    assert point[1] >= 0.8 and scores["f1"] == 1.0
    # select="fixed" ranks at the one point the shipped model's recorded commands used
    assert _best_point([(fg, interior)], [truth], FIXED_POINT)[0] == (0.5, 0.5, 0)


def test_validation_images_without_particles(samples, tmp_path):
    """An empty validation set with a model that predicts nothing: F1 is undefined (0/0) every
    epoch; training must still keep a model, write it and report its scores."""
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", classes=3, decoder_channels=DECODER)
    head = model.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([30.0, -30.0, -30.0]))  # background everywhere
    init = save_checkpoint(
        tmp_path / "blank.safetensors",
        model,
        arch="unet",
        classes=3,
        decoder_channels=DECODER,
        activation="softmax",
        extra={"classes": list(CLASS_NAMES)},
    )
    empty = Sample("empty", np.zeros((64, 64), np.float32), np.zeros((64, 64), np.uint32))
    result = train(samples[:2], [empty], tiny(lr=1e-9), tmp_path / "out.safetensors", init=init)
    assert math.isnan(result.history[0]["val_f1"])
    assert result.path is not None and result.path.is_file()
    assert "f1" in result.validation


def test_cross_validate_two_folds():
    samples = field_samples(4, size=64, seed=10)
    folds = []
    result = cross_validate(
        samples, 2, tiny(max_epochs=1), val_fraction=0.5, on_fold=lambda k, r: folds.append(k)
    )
    assert folds == [1, 2]
    assert [r["fold"] for r in result["folds"]] == [1, 2]
    assert [r["images"] for r in result["folds"]] == [2, 2]
    assert all(r["epochs"] == 1 for r in result["folds"])
    assert set(result["summary"]) == {"f1", "precision", "recall", "pixel_dice", "median_ecd_ratio"}
    f1 = [r["f1"] for r in result["folds"]]
    assert result["summary"]["f1"]["mean"] == pytest.approx(np.nanmean(f1), nan_ok=True)
    for bad in (1, 5, True):
        with pytest.raises(ConfigError, match="--folds must be an integer from 2 to 4"):
            cross_validate(samples, bad, tiny())


def test_folds_run_apart_equal_the_same_folds_run_together():
    """``only`` runs some folds of the same split (one process per fold); their rows equal
    those of the whole run, and :func:`summarise` joins them into the same summary."""
    samples = field_samples(6, size=64, seed=20)
    settings = tiny(max_epochs=1)
    whole = cross_validate(samples, 3, settings, val_fraction=0.5)
    apart = [cross_validate(samples, 3, settings, val_fraction=0.5, only=[k]) for k in (3, 1, 2)]
    rows = sorted((r for part in apart for r in part["folds"]), key=lambda r: r["fold"])
    assert [r["fold"] for r in rows] == [1, 2, 3]
    for got, want in zip(rows, whole["folds"], strict=True):
        assert got.keys() == want.keys()
        for key in got.keys() - {"seconds_per_epoch"}:
            assert got[key] == pytest.approx(want[key], nan_ok=True), key
    joined = summarise(rows)
    assert joined.keys() == whole["summary"].keys()
    for key, value in joined.items():
        assert value == pytest.approx(whole["summary"][key], nan_ok=True), key
    for bad in ([0], [4], []):
        with pytest.raises(ConfigError, match="fold numbers go from 1 to 3"):
            cross_validate(samples, 3, settings, only=bad)


def test_a_cuda_device_that_is_not_there_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") == torch.device("cpu")
    assert training_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"--device cuda:1: torch sees 0 CUDA device"):
        training_device("cuda:1")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_a_gpu_writes_a_checkpoint_the_cpu_reads(samples, tmp_path):
    """A run on the GPU (``device="auto"`` picks it): the model is trained there, the checkpoint
    loads on the CPU and predicts what the trained model predicts on the GPU (TF32 convolutions
    and float16 storage: within 2e-2)."""
    out = tmp_path / "gpu.safetensors"
    result = train(samples[:2], samples[2:], tiny(threads=None), out)
    assert next(result.model.parameters()).device.type == "cuda"
    on_gpu = softmax_whole(result.model, samples[2].image)
    loaded = load_checkpoint(out)
    on_cpu = softmax_whole(loaded.model, samples[2].image)
    assert on_cpu.shape == on_gpu.shape == (3, *samples[2].image.shape)
    np.testing.assert_allclose(on_cpu, on_gpu, atol=2e-2)
    assert read_checkpoint_metadata(out).extra["training"]["settings"]["device"] == "auto"


@pytest.mark.parametrize(("max_minutes", "epochs"), [(None, 3), (100.0, 3), (3.5, 1), (5.5, 2)])
def test_max_minutes_stops_before_an_epoch_that_would_overrun(
    samples, monkeypatch, max_minutes, epochs
):
    """A clock that advances 60 s per reading: the start, each epoch's start and end, and the
    check after it. After epoch k the clock reads 180 k s and an epoch took 60 s, so a budget of
    3.5 minutes (210 s) stops after epoch 1 (180 + 60 > 210) and 5.5 minutes after epoch 2."""
    from mosaicflow.segmentation import train as train_module

    ticks = iter(range(0, 10_000, 60))
    monkeypatch.setattr(
        train_module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks))
    )
    result = train(
        samples[:2], samples[2:], tiny(max_epochs=3, max_minutes=max_minutes, patience=9)
    )
    assert result.epochs == epochs
    assert [r["seconds"] for r in result.history] == [60] * epochs
