"""The run store: images, status, tables."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mosaicflow import open_run
from mosaicflow.errors import StoreError
from mosaicflow.io import RunStore


def test_store_image_roundtrip_and_ome(tmp_path):
    store = RunStore(str(tmp_path / "run.zarr"), mode="w")
    data = np.arange(300 * 260, dtype=np.uint16).reshape(300, 260)
    image = xr.DataArray(
        da.from_array(data, chunks=64),
        dims=("y", "x"),
        coords={"y": np.arange(300) * 2.0, "x": np.arange(260) * 2.0},
        attrs={"pixel_size_nm": [2.0, 2.0]},
    )
    store.write_image("mosaic", image, chunk=64)
    back = store.read_image("mosaic")
    np.testing.assert_array_equal(back.values, data)
    np.testing.assert_allclose(back["x"], image["x"])
    ome = store.root.attrs["ome"]  # the store's root is the mosaic image
    assert ome["version"] == "0.5"
    datasets = ome["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2", "3"]
    level1 = store.read_image("mosaic", 1).values
    expected = data[:300, :260].reshape(150, 2, 130, 2).astype(np.float64).mean((1, 3))
    np.testing.assert_array_equal(level1, np.round(expected).astype(np.uint16))
    # labels keep their values (nearest), and are listed in labels/.zattrs
    labels = image.copy(data=da.from_array((data % 7).astype(np.uint32), chunks=64))
    store.write_image("labels/particles", labels, chunk=64, label=True)
    assert set(np.unique(store.read_image("labels/particles", 1).values)) <= set(range(7))
    assert store.root["labels"].attrs["ome"]["labels"] == ["particles"]
    ds = open_run(str(tmp_path / "run.zarr"))
    assert set(ds.data_vars) == {"mosaic", "labels"}
    assert ds["mosaic"].dims == ("y", "x")


def test_store_status_and_tables(tmp_path):
    store = RunStore(str(tmp_path / "s.zarr"), mode="w")
    store.set_stage("mosaic", "running")
    assert not store.stage_done("mosaic")
    store.set_stage("mosaic", "done", seconds=1.0)
    assert RunStore(str(tmp_path / "s.zarr"), mode="r").stage_done("mosaic")
    store.write_table("t", pd.DataFrame({"a": [1, 2]}))
    assert list(store.read_table("t")["a"]) == [1, 2]
    with pytest.raises(StoreError, match="no table"):
        store.read_table("nope")
    with pytest.raises(StoreError, match="does not exist"):
        RunStore(str(tmp_path / "missing.zarr"), mode="r")


def test_a_resumed_write_stores_its_empty_chunks_too(tmp_path):
    """Chunks equal to the fill value are stored like any other, also when a resumed write
    reuses the levels already there (Zarr keeps that setting with the array object, not in the
    store): afterwards no chunk file is missing, so the run is not reported as having lost
    some, and the pixels are the image's."""
    import dask

    store = RunStore(str(tmp_path / "run.zarr"), mode="w")
    pixels = np.zeros((600, 600), np.uint8)
    pixels[:100, :100] = 7  # every chunk but the first is empty
    image = xr.DataArray(pixels, dims=("y", "x"))
    with dask.config.set(scheduler="synchronous"):
        store.write_image("probability", image, chunk=128)
        assert store.missing_image_chunks("probability") == {}
        flags = store.root["progress/probability/0"]
        for i, j in [(0, 0), (2, 2), (3, 3)]:  # an interrupted write: unflagged, no file
            flags[i, j] = 0
            (tmp_path / "run.zarr" / "probability" / "0" / "c" / str(i) / str(j)).unlink()
        assert store.missing_image_chunks("probability") == {0: 3}
        assert store.write_image("probability", image, chunk=128, resume=True) == 3
    assert store.missing_image_chunks("probability") == {}
    np.testing.assert_array_equal(store.open_level("probability", 0)[...], pixels)


def test_images_written_together_equal_images_written_alone(tmp_path):
    """Two images from one shared graph, written in one computation: the shared part runs
    once per chunk, and each image (every level, its flags, its attributes, an 8-bit image's
    value counts) is what ``write_image`` writes for it alone."""
    import dask

    calls = []

    def shared(block, block_info=None):
        calls.append(block_info[0]["chunk-location"])
        return block

    data = np.random.default_rng(5).integers(0, 256, size=(300, 420)).astype(np.uint8)
    base = da.from_array(data, chunks=64).map_blocks(shared, dtype=np.uint8)
    coords = {"y": np.arange(300) * 2.0, "x": np.arange(420) * 2.0}
    mosaic = xr.DataArray(base, dims=("y", "x"), coords=coords, attrs={"pixel_size_nm": [2, 2]})
    den = xr.DataArray(255 - base, dims=("y", "x"), coords=coords, attrs={"a": 1})
    together = RunStore(str(tmp_path / "together.zarr"), mode="w")
    counts: dict = {}
    with dask.config.set(scheduler="sync"):
        written = together.write_images(
            {"mosaic": mosaic, "denoised": den}, chunk=64, counts={"denoised": counts}
        )
    assert len(calls) == len(set(calls)) == base.npartitions  # the shared part ran once
    alone = RunStore(str(tmp_path / "alone.zarr"), mode="w")
    alone_counts: dict = {}
    expected = {
        "mosaic": alone.write_image("mosaic", mosaic, chunk=64),
        "denoised": alone.write_image("denoised", den, chunk=64, counts=alone_counts),
    }
    assert written == expected
    np.testing.assert_array_equal(
        counts["per_value"], np.bincount(255 - data.ravel(), minlength=256)
    )
    np.testing.assert_array_equal(counts["per_value"], alone_counts["per_value"])
    for name in ("mosaic", "denoised"):
        assert together.image_levels(name) == alone.image_levels(name)
        for level in alone.image_levels(name):
            np.testing.assert_array_equal(
                together.open_level(name, level)[...], alone.open_level(name, level)[...]
            )
        assert together.read_image(name).attrs == alone.read_image(name).attrs
        flags = together.root[f"progress/{name}/0"][...]
        assert flags.shape == (5, 7) and (flags == 1).all()
    assert together.missing_image_chunks("denoised") == {}
