"""The run store as OME-Zarr: valid from its root for the field's validators and readers, every
pyramid level placed where it was made from, the same shape in every layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr

from mosaicflow.config import Config, StoreConfig
from mosaicflow.errors import StoreError
from mosaicflow.io import RunStore
from mosaicflow.pipeline import Pipeline

LAYERS = ("mosaic", "denoised", "probability", "labels/particles")


@pytest.fixture(scope="module")
def run_store(small_grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("ome") / "run.zarr"
    Pipeline(Config(input=str(small_grid.folder), store=StoreConfig(chunk=128)), out).run()
    return out


def test_validators_accept_the_store_from_its_root(run_store):
    from ome_zarr_models.v05 import Image, ImageLabel, Labels

    root = zarr.open_group(str(run_store), mode="r")
    image = Image.from_zarr(root)
    assert image.labels is not None and image.labels.attributes.ome.labels == ["particles"]
    for name in ("denoised", "probability"):
        Image.from_zarr(root[name])
    Labels.from_zarr(root["labels"])
    label = ImageLabel.from_zarr(root["labels/particles"])
    assert label.attributes.ome.image_label.source.image == "../../"


def test_ome_zarr_lists_the_image_with_its_labels(run_store):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    reader = Reader(parse_url(run_store))
    nodes = {str(n.zarr).split(" [")[0].split("run.zarr")[-1]: n for n in reader()}
    assert any(isinstance(s, Multiscales) for s in nodes[""].specs)
    labels = nodes["/labels/particles"]
    assert any(isinstance(s, Label) for s in labels.specs)
    assert labels.data[0].shape == nodes[""].data[0].shape


def test_every_layer_has_the_same_shape_at_every_level(run_store):
    store = RunStore(str(run_store), mode="r")
    levels = store.image_levels("mosaic")
    assert len(levels) >= 3
    for name in LAYERS:
        assert store.image_levels(name) == levels
    for level in levels:
        shapes = {store.open_level(name, level).shape for name in LAYERS}
        assert len(shapes) == 1, (level, shapes)


def _centre_nm(store, name, level, index):
    scale, shift = store.image_transform(name, level)
    return [shift[a] + index[a] * scale[a] for a in (0, 1)]


def test_level_translations_put_pixel_centres_where_they_were_made(run_store):
    store = RunStore(str(run_store), mode="r")
    pixel, origin = store.image_transform("mosaic", 0)
    rng = np.random.default_rng(0)
    for level in store.image_levels("mosaic")[1:]:
        f = 2**level
        shape = store.open_level("mosaic", level).shape
        for index in zip(rng.integers(0, shape[0], 5), rng.integers(0, shape[1], 5), strict=True):
            # an image pixel of level k is the mean of a f x f block of level 0: its centre
            block = [origin[a] + (index[a] * f + (f - 1) / 2) * pixel[a] for a in (0, 1)]
            for name in ("mosaic", "denoised", "probability"):
                np.testing.assert_allclose(_centre_nm(store, name, level, index), block)
            # a label pixel of level k is level 0's pixel (i * f, j * f): its centre
            sampled = [origin[a] + index[a] * f * pixel[a] for a in (0, 1)]
            np.testing.assert_allclose(_centre_nm(store, "labels/particles", level, index), sampled)
    # ... and the values are what the metadata says they are
    lab0 = store.open_level("labels/particles", 0)[...]
    for level in store.image_levels("labels/particles")[1:]:
        f = 2**level
        lab = store.open_level("labels/particles", level)[...]
        np.testing.assert_array_equal(lab, lab0[::f, ::f][: lab.shape[0], : lab.shape[1]])
    img0 = store.open_level("denoised", 0)[...].astype(np.float64)
    img1 = store.open_level("denoised", 1)[...]
    h, w = img1.shape
    mean = img0[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(img1, np.round(mean).astype(img1.dtype))


def test_coordinates_carry_units(run_store):
    store = RunStore(str(run_store), mode="r")
    image = store.read_image("labels/particles", 1)
    assert image["y"].attrs["units"] == "nm" and image["x"].attrs["units"] == "nm"


def test_a_store_of_the_earlier_layout_reads_but_does_not_resume(tmp_path):
    path = tmp_path / "old.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs["mosaicflow"] = {"format": "mosaicflow-run/1", "version": "0.1.0", "stages": {}}
    mosaic = root.require_group("mosaic")
    mosaic.create_array("0", shape=(4, 6), dtype="uint8")[:] = 9
    mosaic.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [2.0, 2.0]},
                            {"type": "translation", "translation": [0.0, 0.0]},
                        ],
                    }
                ],
            }
        ],
    }
    assert (RunStore(str(path), mode="r").read_image("mosaic").values == 9).all()
    with pytest.raises(StoreError, match=r"earlier mosaicflow .* --overwrite"):
        RunStore(str(path), mode="a")
    RunStore(str(path), mode="w")  # replacing it is allowed: it is a run store
    assert RunStore(str(path), mode="r").meta["format"] == "mosaicflow-run/2"


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "uint32", "float32"])
def test_next_level_is_the_rounded_2x2_mean_for_every_pixel_type(dtype):
    """The oracle: NumPy's float mean of each 2x2 block, rounded half to even for integers
    (ties made common by a patch of 0..2 values); odd sizes lose their last row and column."""
    from mosaicflow.io.chunk_writes import half_size

    rng = np.random.default_rng(0)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        image = rng.integers(max(info.min, -(2**20)), min(info.max, 2**20), size=(301, 257))
    else:
        image = rng.normal(size=(301, 257)) * 100
    image = image.astype(dtype)
    image[:50, :50] = rng.integers(0, 3, size=(50, 50))
    got = half_size(image)
    mean = image[:300, :256].astype(np.float64).reshape(150, 2, 128, 2).mean(axis=(1, 3))
    expected = np.round(mean) if np.issubdtype(np.dtype(dtype), np.integer) else mean
    assert got.dtype == image.dtype
    np.testing.assert_allclose(got, expected.astype(dtype), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize(("near_min", "near"), [(256, 0), (16, 2)])
@pytest.mark.parametrize("label", [False, True])
def test_the_pyramid_above_level_0_is_one_computation_equal_to_level_by_level(
    tmp_path, label, near_min, near, monkeypatch
):
    """The near levels (chunks of at least ``NEAR_LEVEL_MIN_CHUNK`` px) are written by the
    level-0 tasks; the further levels come from one computation of one task per chunk, each
    from the level above. The oracle is NumPy level by level from the level below (2x2 rounded
    mean, or every second pixel for labels)."""
    import xarray as xr

    from mosaicflow.io import ome
    from mosaicflow.io.ome import write_multiscale
    from mosaicflow.runner import Runner

    monkeypatch.setattr(ome, "NEAR_LEVEL_MIN_CHUNK", near_min)

    class Counting(Runner):
        def __init__(self):
            super().__init__()
            self.descriptions = []

        def compute(self, collection, description):
            self.descriptions.append(description)
            self.tasks = len(dict(collection.__dask_graph__()))
            return super().compute(collection, description)

    rng = np.random.default_rng(1)
    image = rng.integers(0, 60_000, size=(700, 530)).astype(np.uint16)
    runner = Counting()
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w")
    array = xr.DataArray(image, dims=("y", "x"))
    _, written = write_multiscale(group, array, name="img", chunk=64, runner=runner, label=label)
    assert runner.descriptions == ["img", f"img[{near + 1}-4]"]
    expected = image
    for level in range(5):
        np.testing.assert_array_equal(group[str(level)][...], expected)
        side = 64 >> level if level <= near else 64
        assert group[str(level)].chunks == tuple(min(side, n) for n in expected.shape)
        if label:
            expected = expected[: expected.shape[0] // 2 * 2 : 2, : expected.shape[1] // 2 * 2 : 2]
        else:
            h, w = expected.shape[0] // 2, expected.shape[1] // 2
            blocks = expected[: 2 * h, : 2 * w].astype(np.float64).reshape(h, 2, w, 2)
            expected = np.round(blocks.mean(axis=(1, 3))).astype(np.uint16)
    chunks = [
        math.prod(
            -(-n // c) for n, c in zip(group[str(k)].shape, group[str(k)].chunks, strict=True)
        )
        for k in range(5)
    ]
    assert written == sum(chunks)
    assert runner.tasks == sum(chunks[near + 1 :])  # one task per chunk of the far levels


def test_a_level_made_anew_rewrites_level_0_on_resume(tmp_path, monkeypatch):
    """A level-0 chunk flagged written vouches for its near levels only if those levels were
    kept: a resume that makes them anew (another chunk layout) writes level 0 again, whole."""
    import xarray as xr

    from mosaicflow.io import ome
    from mosaicflow.runner import Runner

    image = np.random.default_rng(2).integers(0, 255, size=(300, 200)).astype(np.uint8)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w")
    progress = group.require_group("progress")
    array = xr.DataArray(image, dims=("y", "x"))
    kwargs = {"name": "img", "chunk": 64, "runner": Runner(), "label": False}
    ome.write_multiscale(group, array, progress=progress, **kwargs)
    monkeypatch.setattr(ome, "NEAR_LEVEL_MIN_CHUNK", 16)
    _, written = ome.write_multiscale(group, array, progress=progress, resume=True, **kwargs)
    assert written == 5 * 4 + 5 * 4 + 5 * 4  # levels 0-2 (5 x 4 chunks each), nothing above
    assert group["1"].chunks == (32, 32)
    np.testing.assert_array_equal(group["0"][...], image)
    blocks = image[:300, :200].astype(np.float64).reshape(150, 2, 100, 2)
    np.testing.assert_array_equal(group["1"][...], np.round(blocks.mean(axis=(1, 3))))
    # every level-0 chunk flagged, vouching for its near levels, which have no flags of their own
    assert np.all(progress["0"][...] == 1) and np.all(progress["3"][...] == 1)
    assert "1" not in progress and "2" not in progress


def test_two_pyramid_writes_of_the_same_image_path_never_share_a_task_key(tmp_path):
    """Two stores written at once on one shared cluster hold the same image paths: their
    pyramid tasks must differ, or the scheduler would run one of them for both."""
    from mosaicflow.io.ome import _pyramid_writes

    names = []
    for store in ("a.zarr", "b.zarr"):
        group = zarr.open_group(str(tmp_path / store), mode="w")
        level0 = group.create_array("0", shape=(64, 64), chunks=(16, 16), dtype="uint8")
        level1 = group.create_array("1", shape=(32, 32), chunks=(16, 16), dtype="uint8")
        markers, n = _pyramid_writes(level0, [(level1, None, False)], False)
        assert n == 4
        names.append(markers.name)
    assert names[0] != names[1]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16])
def test_an_8_bit_level_0_is_counted_per_value_by_the_tasks_that_write_it(tmp_path, dtype):
    """The counts equal a bincount of the stored level 0, and each chunk is made once; other
    types leave the dict empty (their histogram takes a pass of its own)."""
    import dask
    import dask.array as da
    import xarray as xr

    from mosaicflow.io.ome import write_multiscale
    from mosaicflow.runner import Runner

    made = []

    def once(block):
        made.append(1)
        return block

    values = np.random.default_rng(4).integers(-100, 120, size=(300, 260))
    image = values.astype(dtype) if dtype != np.uint16 else (values + 100).astype(dtype)
    lazy = da.from_array(image, chunks=64).map_blocks(once, meta=np.empty((0, 0), dtype=dtype))
    counts = {}
    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    array = xr.DataArray(lazy, dims=("y", "x"))
    # in this process, whatever client an earlier test left as the default, to count the chunks
    with dask.config.set(scheduler="synchronous"):
        write_multiscale(
            group, array, name="c", chunk=64, runner=Runner(), label=False, counts=counts
        )
    assert len(made) == lazy.npartitions
    stored = group["0"][...]
    np.testing.assert_array_equal(stored, image)
    if dtype == np.uint16:
        assert counts == {}
        return
    offset = int(np.iinfo(dtype).min)
    expected = np.bincount(stored.ravel().astype(int) - offset, minlength=256)
    np.testing.assert_array_equal(counts["per_value"], expected)


def test_each_chunk_is_summarised_from_its_written_pixels_by_its_writer(tmp_path):
    """``summaries``: one value per level-0 chunk, in the chunk grid, made from exactly the
    pixels stored there by the task that writes them (each chunk computed once, with counts
    as well); a resumed write that finds the chunks written leaves ``results`` unset."""
    import dask
    import dask.array as da
    import xarray as xr

    from mosaicflow.io.chunk_writes import ChunkSummaries
    from mosaicflow.io.ome import write_multiscale
    from mosaicflow.runner import Runner

    made = []

    def once(block):
        made.append(1)
        return block

    image = np.random.default_rng(5).integers(0, 255, size=(300, 260)).astype(np.uint8)
    lazy = da.from_array(image, chunks=64).map_blocks(once, meta=np.empty((0, 0), np.uint8))
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    progress = group.require_group("progress")
    found = []
    for resume in (False, True):
        summaries, counts = ChunkSummaries(_origin_and_sum), {}
        # in this process, whatever client an earlier test left as the default
        with dask.config.set(scheduler="synchronous"):
            write_multiscale(
                group,
                xr.DataArray(lazy, dims=("y", "x")),
                name="s",
                chunk=64,
                runner=Runner(),
                label=False,
                progress=progress,
                resume=resume,
                counts=counts,
                summaries=summaries,
            )
        found.append((summaries.results, counts))
    (results, counts), (resumed, resumed_counts) = found
    assert resumed is None and resumed_counts == {}
    assert len(made) == lazy.npartitions  # the resumed write computed nothing
    stored = group["0"][...]
    np.testing.assert_array_equal(stored, image)
    assert results.shape == lazy.numblocks == (5, 5)
    for i, j in np.ndindex(*lazy.numblocks):
        y0, x0 = 64 * i, 64 * j
        window = stored[y0 : y0 + 64, x0 : x0 + 64]
        assert results[i, j] == ((y0, x0), int(window.astype(np.int64).sum()))
    np.testing.assert_array_equal(counts["per_value"], np.bincount(stored.ravel(), minlength=256))


def _origin_and_sum(block: np.ndarray, origin: tuple[int, ...]) -> tuple:
    return tuple(origin), int(block.astype(np.int64).sum())
