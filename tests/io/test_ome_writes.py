"""Writes into Zarr arrays: tasks write whole chunks and whole shards, never parts of one.

Two tasks writing parts of one shard each rewrite the whole shard, and one part is lost without
an error: the guard refuses such a plan, and ``store_array`` plans by shard."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from mosaicflow.errors import StoreError
from mosaicflow.io.chunk_writes import check_alignment, store_array, write_unit
from mosaicflow.runner import Runner


def _sharded(tmp_path, shape=(100, 90)):
    return zarr.create_array(
        str(tmp_path / "a.zarr"), shape=shape, chunks=(10, 10), shards=(40, 30), dtype="uint16"
    )


def test_a_sharded_array_is_written_whole_from_misaligned_dask_chunks(tmp_path):
    target = _sharded(tmp_path)
    assert write_unit(target) == (40, 30)
    data = np.arange(100 * 90, dtype="uint16").reshape(100, 90)
    arr = da.from_array(data, chunks=(10, 10))  # 10x10 tasks would share shards
    with dask.config.set(scheduler="threads", num_workers=8):
        store_array(arr, target, Runner(), "test")
    np.testing.assert_array_equal(target[:], data)


def test_the_guard_names_a_plan_that_splits_a_shard(tmp_path):
    target = _sharded(tmp_path)
    with pytest.raises(StoreError, match="start at pixel 10 on axis 0, inside a shard of 40 px"):
        check_alignment(((10,) * 10, (30,) * 3), target)
    check_alignment(((40, 40, 20), (30, 30, 30)), target)  # whole shards, short last ones


def test_unsharded_arrays_are_planned_by_chunk(tmp_path):
    target = zarr.create_array(
        str(tmp_path / "b.zarr"), shape=(50, 50), chunks=(16, 16), dtype="uint8"
    )
    assert write_unit(target) == (16, 16)
    with pytest.raises(StoreError, match="inside a chunk of 16 px"):
        check_alignment(((8,) * 6 + (2,), (50,)), target)
