"""Reading a window of a tile: equal to the whole tile read and sliced, for strip and tiled
TIFFs (uncompressed, LZW, deflate; grey and RGB; with a data bar), and for the formats decoded
whole; a TIFF window decodes only the segments it touches."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from mosaicflow.errors import TileReadError
from mosaicflow.io.images import read_tile
from mosaicflow.io.regions import read_tile_region, segments_for

SHAPE = (90, 130)  # after the crop
BAR = 11  # data-bar rows below the tile
WINDOWS = [
    (slice(0, 20), slice(None)),  # a top strip, whole width
    (slice(None), slice(100, 130)),  # a right strip, whole height
    (slice(33, 61), slice(47, 99)),  # inside, crossing segment borders
    (slice(85, 200), slice(-20, None)),  # clipped at the bottom (above the bar) and right
    (slice(5, 5), slice(0, 10)),  # empty
]
TIFFS = {
    "strips-raw-grey": ({"rowsperstrip": 8}, False, np.uint8),
    "strips-lzw-rgb": ({"rowsperstrip": 7, "compression": "lzw"}, True, np.uint8),
    "strips-deflate-grey16": (
        {"rowsperstrip": 16, "compression": "zlib", "predictor": True},
        False,
        np.uint16,
    ),
    "tiles-deflate-grey": ({"tile": (32, 48), "compression": "zlib"}, False, np.uint8),
    "tiles-raw-rgb": ({"tile": (16, 32)}, True, np.uint8),
    "one-strip-raw-grey": ({}, False, np.uint8),  # contiguous: read by row range
    "strips-raw-bigendian-rgb16": ({"rowsperstrip": 5, "byteorder": ">"}, True, np.uint16),
}


def _pixels(rgb: bool, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(7)
    stored = (SHAPE[0] + BAR, SHAPE[1]) + ((3,) if rgb else ())
    return rng.integers(0, np.iinfo(dtype).max, size=stored, dtype=dtype)


@pytest.mark.parametrize("name", list(TIFFS))
def test_tiff_window_equals_the_sliced_tile(tmp_path, name):
    options, rgb, dtype = TIFFS[name]
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, _pixels(rgb, dtype), photometric="rgb" if rgb else None, **options)
    meta = {"shape": SHAPE, "dtype": dtype, "crop_bottom": BAR}
    whole = read_tile(path, **meta)
    for rows, cols in WINDOWS:
        region = read_tile_region(path, rows, cols, **meta)
        assert region.dtype == whole.dtype
        np.testing.assert_array_equal(region, whole[rows, cols])
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        needed = segments_for(page, slice(0, 20), slice(0, SHAPE[1]))
        total = len(page.dataoffsets)
    # a 20-row strip decodes a fraction of the tile's segments
    assert needed is not None and 0 < len(needed) <= max(1, total / 3)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg"])
def test_other_formats_are_sliced_after_a_whole_decode(tmp_path, suffix):
    path = tmp_path / f"tile{suffix}"
    Image.fromarray(_pixels(True, np.uint8)).save(path)
    meta = {"shape": SHAPE, "dtype": np.uint8, "crop_bottom": BAR}
    whole = read_tile(path, **meta)
    for rows, cols in WINDOWS:
        np.testing.assert_array_equal(read_tile_region(path, rows, cols, **meta), whole[rows, cols])


def test_wrong_size_names_the_tile(tmp_path):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, np.zeros((40, 50), np.uint8), rowsperstrip=8)
    with pytest.raises(TileReadError, match=r"small\.tif"):
        read_tile_region(path, slice(0, 10), slice(0, 10), shape=SHAPE, dtype=np.uint8)


def test_a_truncated_tiff_is_refused_not_read_short(tmp_path):
    """Whole rows cut from the end of an uncompressed TIFF: the window that needs them is an
    error naming the tile, never a shorter array."""
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.arange(30 * 40, dtype=np.uint8).reshape(30, 40))
    data = path.read_bytes()
    offset = tifffile.TiffFile(path).pages.first.dataoffsets[0]
    end = offset + 30 * 40
    path.write_bytes(data[: end - 5 * 40] + data[end:])  # the last 5 rows gone
    with pytest.raises(TileReadError, match=r"t\.tif.*truncated"):
        read_tile_region(path, slice(0, 30), slice(0, 10), shape=(30, 40), dtype=np.uint8)


def test_raw_layout_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    """An uncompressed contiguous TIFF is parsed once per process: later windows read its rows
    without tifffile; a file rewritten since (another size or time) is parsed again."""
    from mosaicflow.io import regions

    path = tmp_path / "tile.tif"
    first = _pixels(False, np.uint8)
    tifffile.imwrite(path, first)
    meta = {"shape": SHAPE, "dtype": np.uint8, "crop_bottom": BAR}
    np.testing.assert_array_equal(
        read_tile_region(path, slice(0, 20), slice(None), **meta), first[:20]
    )
    parsed = []

    class Counting(tifffile.TiffFile):
        def __init__(self, *args, **kwargs):
            parsed.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(regions.tifffile, "TiffFile", Counting)
    np.testing.assert_array_equal(
        read_tile_region(path, slice(33, 61), slice(47, 99), **meta), first[33:61, 47:99]
    )
    assert parsed == []  # remembered
    second = first[::-1].copy()
    tifffile.imwrite(path, second, description="x" * 500)  # pixels further into the file
    np.testing.assert_array_equal(
        read_tile_region(path, slice(33, 61), slice(47, 99), **meta), second[33:61, 47:99]
    )
    assert len(parsed) == 1
