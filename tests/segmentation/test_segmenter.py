"""``segment(image, model=...)``: the shipped default model and the Otsu baseline, NumPy in gives
NumPy out, a Dask array or DataArray the same kind, lazily, equal for any chunking; the input's
own dtype; the scaling percentiles equal NumPy's; clear refusals."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from PIL import Image

from mosaicflow.errors import CheckpointError, ConfigError
from mosaicflow.segmentation import load_model, segment
from mosaicflow.segmentation.default import DEFAULT_WEIGHTS
from mosaicflow.segmentation.metrics import tally
from mosaicflow.segmentation.scaling import percentiles
from mosaicflow.synth.sem import synth_field

pytestmark = pytest.mark.usefixtures("local_scheduler")


@pytest.fixture(scope="module")
def field():
    image, labels, _ = synth_field(
        (256, 320), snr=15.0, seed=11, pixel_size_nm=4.0, touching_fraction=0.3, density=30
    )
    u8 = np.clip((image - image.min()) / np.ptp(image) * 255, 0, 255).astype(np.uint8)
    return u8, labels


@pytest.fixture(scope="module")
def default_model():
    if not DEFAULT_WEIGHTS.is_file():
        pytest.fail(f"the default model's weights are not in the package: {DEFAULT_WEIGHTS}")
    return load_model("default")


def test_default_model_is_shipped_small_with_its_thresholds(default_model):
    assert DEFAULT_WEIGHTS.stat().st_size <= 30 * 2**20
    assert default_model.is_instance_model
    assert 0 < default_model.threshold <= 1 and 0 < default_model.seed_threshold <= 1
    assert (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").is_file()


REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "emps_particles"


def test_default_model_separates_real_particles_better_than_otsu(default_model):
    """On EMPS test images (never used in training) the model's instances beat the threshold
    baseline's, matched at IoU >= 0.5 against the published masks."""
    if not REAL.is_dir():
        pytest.skip(f"real data not found at {REAL} (clone the project beside ../shared)")
    from mosaicflow.segmentation.datasets import as_instances, read_grey, read_names

    names = read_names(REAL / "test.csv")[:6]
    model, otsu = [], []
    for name in names:
        image = read_grey(REAL / "images" / f"{name}.png").astype(np.uint8)
        truth = as_instances(np.asarray(Image.open(REAL / "segmaps" / f"{name}.png")))
        labels = segment(image, default_model)
        assert isinstance(labels, np.ndarray) and labels.dtype == np.uint32
        assert labels.shape == image.shape
        model.append(tally(truth, labels))
        otsu.append(tally(truth, segment(image, "otsu")))
    f1 = sum(model[1:], model[0]).scores()["f1"]
    assert f1 > sum(otsu[1:], otsu[0]).scores()["f1"] + 0.1


@pytest.mark.parametrize("chunks", [(256, 320), (100, 90), (48, 40)])
def test_chunked_input_gives_the_same_labels_lazily(field, default_model, chunks):
    image, _ = field
    ref = segment(image, default_model, min_seed_px=0)
    assert ref.max() > 15
    lazy = segment(
        da.from_array(image, chunks=chunks), default_model, max_particle_px=96, min_seed_px=0
    )
    assert isinstance(lazy, da.Array) and lazy.chunks == da.from_array(image, chunks=chunks).chunks
    np.testing.assert_array_equal(lazy.compute(), ref)


def test_tta_is_used_and_stays_chunk_exact(field, default_model):
    """``tta=True`` averages the 8 symmetries of each window: other probabilities than one
    pass (so other labels somewhere), and still the same labels for any chunking."""
    image, truth = field
    ref = segment(image, default_model, min_seed_px=0, tta=True)
    assert not np.array_equal(ref, segment(image, default_model, min_seed_px=0))
    assert tally(truth, ref).scores()["f1"] > 0.5
    lazy = segment(
        da.from_array(image, chunks=(100, 90)),
        default_model,
        max_particle_px=96,
        min_seed_px=0,
        tta=True,
    )
    np.testing.assert_array_equal(lazy.compute(), ref)


def test_a_dataarray_keeps_its_coordinates(field, default_model):
    image, _ = field
    arr = xr.DataArray(
        da.from_array(image, chunks=128),
        dims=("y", "x"),
        coords={"y": np.arange(256) * 4.0, "x": np.arange(320) * 4.0},
        attrs={"pixel_size_nm": [4.0, 4.0]},
    )
    out = segment(arr, default_model)
    assert isinstance(out, xr.DataArray) and out.dims == ("y", "x")
    np.testing.assert_array_equal(out.coords["x"], arr.coords["x"])
    np.testing.assert_array_equal(out.values, segment(image, default_model))


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_other_dtypes_are_scaled_by_their_own_percentiles(field, default_model, dtype):
    image, _ = field
    scaled = image.astype(dtype) * (200 if dtype == "uint16" else 0.01)
    out = segment(scaled, default_model)
    ref = segment(image, default_model)
    agree = np.mean((out > 0) == (ref > 0))
    assert agree > 0.99


def test_otsu_baseline_in_memory_equals_chunked(field):
    image, truth = field
    ref = segment(image, "otsu")
    out = segment(da.from_array(image, chunks=(64, 70)), "otsu").compute()
    np.testing.assert_array_equal(out, ref)
    assert tally(truth, ref).scores()["pixel_dice"] > 0.8


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_integer_percentiles_equal_numpy_for_any_chunking(dtype):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000 if dtype == "uint16" else 256, (97, 131)).astype(dtype)
    q = (0.5, 50.0, 99.5)
    expected = np.percentile(image, q)
    for chunks in ((97, 131), (20, 33)):
        got = percentiles(da.from_array(image, chunks=chunks), q)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_float_percentiles_are_within_a_bin_and_chunk_independent():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(97, 131)).astype(np.float32)
    q = (0.5, 99.5)
    a = percentiles(da.from_array(image, chunks=(97, 131)), q)
    b = percentiles(da.from_array(image, chunks=(19, 23)), q)
    assert a == b
    width = float(np.ptp(image)) / 65536
    np.testing.assert_allclose(a, np.percentile(image, q), atol=2 * width)


def test_percentiles_over_a_mask_leave_uncovered_pixels_out():
    image = np.zeros((50, 60), np.uint8)
    image[:, 30:] = np.arange(30, dtype=np.uint8)[None, :] + 100
    mask = np.zeros(image.shape, bool)
    mask[:, 30:] = True
    got = percentiles(da.from_array(image, chunks=16), (0.0, 100.0), mask=da.from_array(mask))
    assert got == [100.0, 129.0]


def test_a_one_class_checkpoint_is_not_an_instance_model(field, tmp_path):
    from mosaicflow.segmentation import build_model, save_checkpoint

    path = save_checkpoint(tmp_path / "one.safetensors", build_model("unet"), arch="unet")
    with pytest.raises(CheckpointError, match="not an instance model"):
        segment(field[0], path)


def test_bad_options_and_missing_files_are_named(field, tmp_path):
    with pytest.raises(ConfigError, match="connectivity"):
        segment(field[0], "otsu", connectivity=3)
    with pytest.raises(ConfigError, match="polarity"):
        segment(field[0], "otsu", polarity="grey")
    with pytest.raises(CheckpointError, match=r"nope\.safetensors"):
        segment(field[0], tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match="2-D"):
        segment(np.zeros((4, 5, 6), np.uint8), "otsu")


def test_a_chunked_image_computes_only_its_percentiles_until_asked(field, default_model):
    starts = []

    class Count(dask.callbacks.Callback):
        def _start(self, dsk):
            starts.append(len(dsk))

    image = da.from_array(field[0], chunks=128)
    with Count():
        lazy = segment(image, default_model)
    assert len(starts) == 1  # the scaling percentiles, one small reduction
    with Count():
        lazy.compute()
    assert len(starts) == 2
