"""Whole chunks read and written directly (mosaicflow.io.chunk_io): the files are those Zarr
writes, byte for byte, and the reads equal Zarr's; everything else goes through Zarr."""

from __future__ import annotations

import filecmp
import os

import dask.array as da
import numpy as np
import pytest
import zarr
from numcodecs import Zstd
from zarr.codecs import BloscCodec, ZstdCodec

from mosaicflow._shared.halo import store_source
from mosaicflow.errors import StoreError
from mosaicflow.io.chunk_io import ChunkReader, _layout, lazy, read_region, set_flag, write_region

SHAPE, CHUNKS = (37, 50), (16, 16)


def _pair(tmp_path, dtype, compressors, fill=7, shape=SHAPE, chunks=CHUNKS, **kw):
    """Two empty arrays of the same layout: one written by Zarr, one here."""
    made = [
        zarr.create_array(
            str(tmp_path / name),
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill,
            compressors=compressors,
            config={"write_empty_chunks": True},
            **kw,
        )
        for name in ("by_zarr.zarr", "here.zarr")
    ]
    return made


def _chunk_regions(shape, chunks):
    for i in range(-(-shape[0] // chunks[0])):
        for j in range(-(-shape[1] // chunks[1])):
            y0, x0 = i * chunks[0], j * chunks[1]
            yield (
                (i, j),
                (
                    slice(y0, min(y0 + chunks[0], shape[0])),
                    slice(x0, min(x0 + chunks[1], shape[1])),
                ),
            )


def _files(root):
    out = set()
    for folder, _, names in os.walk(root):
        out.update(os.path.relpath(os.path.join(folder, n), root) for n in names)
    return out


@pytest.mark.parametrize(
    ("dtype", "compressors"),
    [
        ("uint8", ZstdCodec(level=1)),
        ("uint16", ZstdCodec(level=1)),
        ("uint32", ZstdCodec(level=0)),
        ("int16", ZstdCodec(level=3, checksum=True)),
        ("float32", ZstdCodec(level=1)),
        ("uint16", None),
    ],
)
def test_chunk_files_are_zarrs_own_bytes(tmp_path, dtype, compressors):
    by_zarr, here = _pair(tmp_path, dtype, compressors)
    assert _layout(here) is not None
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 200, SHAPE) * (rng.random(SHAPE) < 0.3)).astype(dtype)
    for _, region in _chunk_regions(SHAPE, CHUNKS):  # edge chunks included: padded with 7
        by_zarr[region] = data[region]
        write_region(here, region, data[region])
    names = _files(by_zarr.store_path.store.root)
    assert names == _files(here.store_path.store.root)
    chunk_files = [n for n in names if n.startswith("c")]
    assert len(chunk_files) == 3 * 4
    for name in chunk_files:
        assert filecmp.cmp(
            os.path.join(str(by_zarr.store_path.store.root), name),
            os.path.join(str(here.store_path.store.root), name),
            shallow=False,
        ), name
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "here.zarr"))[...], data)


def test_reads_equal_zarrs(tmp_path):
    arr, _ = _pair(tmp_path, "uint16", ZstdCodec(level=1))
    rng = np.random.default_rng(1)
    data = rng.integers(0, 60000, SHAPE).astype("uint16")
    arr[:, :40] = data[:, :40]  # the chunks right of column 48 are never written: fill 7
    expected = arr[...]
    assert (expected[:, 48:] == 7).all()
    for region in [
        (slice(0, 16), slice(16, 32)),  # one whole chunk
        (slice(32, 37), slice(48, 50)),  # the corner chunk, clipped
        (slice(3, 35), slice(5, 49)),  # a chunk and its halo: nine chunks
        (slice(None), slice(None)),
        (slice(-5, None), slice(10, -3)),
        (slice(4, 4), slice(0, 9)),  # empty
    ]:
        got = read_region(arr, region)
        np.testing.assert_array_equal(got, expected[region])
        assert got.dtype == expected.dtype


def test_flags_and_arrays_opened_without_write_empty_chunks(tmp_path):
    flags = zarr.create_array(
        str(tmp_path / "flags.zarr"), shape=(3, 4), chunks=(1, 1), dtype="uint8", fill_value=0
    )
    assert not flags.async_array.config.write_empty_chunks
    set_flag(flags, (2, 1))
    assert os.path.exists(os.path.join(str(flags.store_path.store.root), "c", "2", "1"))
    assert flags[...].sum() == 1 and flags[2, 1] == 1
    # an all-fill block of such an array goes through Zarr, which stores no chunk for it
    write_region(flags, (slice(0, 1), slice(0, 1)), np.zeros((1, 1), np.uint8))
    assert not os.path.exists(os.path.join(str(flags.store_path.store.root), "c", "0", "0"))
    big = zarr.create_array(
        str(tmp_path / "big.zarr"), shape=(32, 32), chunks=(16, 16), dtype="uint8", fill_value=0
    )
    write_region(big, (slice(0, 16), slice(0, 16)), np.zeros((16, 16), np.uint8))
    write_region(big, (slice(16, 32), slice(0, 16)), np.ones((16, 16), np.uint8))
    assert _files(str(big.store_path.store.root)) >= {os.path.join("c", "1", "0")}
    assert os.path.join("c", "0", "0") not in _files(str(big.store_path.store.root))
    np.testing.assert_array_equal(big[16:, :16], 1)


def test_what_is_not_handled_here_goes_through_zarr(tmp_path):
    data = np.arange(32 * 32, dtype="uint16").reshape(32, 32)
    sharded = zarr.create_array(
        str(tmp_path / "sharded.zarr"),
        shape=(32, 32),
        chunks=(8, 8),
        shards=(16, 16),
        dtype="uint16",
    )
    blosc = zarr.create_array(
        str(tmp_path / "blosc.zarr"),
        shape=(32, 32),
        chunks=(16, 16),
        dtype="uint16",
        compressors=BloscCodec(),
    )
    memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(32, 32), chunks=(16, 16), dtype="uint16"
    )
    for arr in (sharded, blosc, memory):
        assert _layout(arr) is None
        write_region(arr, (slice(0, 16), slice(16, 32)), data[:16, 16:])
        np.testing.assert_array_equal(
            read_region(arr, (slice(0, 20), slice(10, 32))), arr[:20, 10:]
        )
        np.testing.assert_array_equal(arr[:16, 16:], data[:16, 16:])
    plain, _ = _pair(tmp_path, "uint16", ZstdCodec(level=1), shape=(32, 32))
    # not a whole chunk, or another dtype: Zarr writes it (and casts as it always does)
    write_region(plain, (slice(3, 9), slice(0, 16)), data[3:9, :16])
    write_region(plain, (slice(16, 32), slice(16, 32)), data[16:, 16:].astype("int64"))
    np.testing.assert_array_equal(plain[3:9, :16], data[3:9, :16])
    np.testing.assert_array_equal(plain[16:, 16:], data[16:, 16:])
    reader = zarr.open_array(str(tmp_path / "here.zarr"), mode="r")
    with pytest.raises(ValueError, match="read-only"):
        write_region(reader, (slice(0, 16), slice(0, 16)), data[:16, :16])


def test_a_damaged_chunk_file_is_named(tmp_path):
    arr, _ = _pair(tmp_path, "uint8", ZstdCodec(level=1))
    arr[:16, :16] = 1
    path = os.path.join(str(arr.store_path.store.root), "c", "0", "0")
    with open(path, "wb") as fh:
        fh.write(b"not a zstd frame")
    with pytest.raises(StoreError, match=r"c.0.0"):
        read_region(arr, (slice(0, 16), slice(0, 16)))
    # a valid frame of the wrong size: it would fill only part of the chunk
    with open(path, "wb") as fh:
        fh.write(Zstd(level=1).encode(np.ones(16 * 15, np.uint8)))
    with pytest.raises(StoreError, match=r"c.0.0.*240 bytes"):
        read_region(arr, (slice(0, 16), slice(0, 16)))
    arr[:16, :16] = 2  # Zarr's own write replaces it
    np.testing.assert_array_equal(read_region(arr, (slice(0, 16), slice(0, 16))), 2)


def test_dask_reads_through_the_chunk_reader(tmp_path):
    arr, _ = _pair(tmp_path, "uint8", ZstdCodec(level=1))
    arr[...] = np.arange(np.prod(SHAPE), dtype=np.int64).reshape(SHAPE) % 251
    for chunks in (None, (32, 32)):
        lazily = lazy(arr, chunks)
        assert lazily.chunks == da.from_zarr(arr, chunks=chunks or arr.chunks).chunks
        np.testing.assert_array_equal(lazily.compute(), arr[...])
        # one plain getter per block: halo tasks can read a chunk and its halo in one read
        assert store_source(lazily) is not None
        source = lazily.dask[store_source(lazily)]
        assert isinstance(getattr(source, "value", source), ChunkReader)
