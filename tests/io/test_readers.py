"""Reading real acquisitions of any format: layouts, the grid model, Maps names with suffixes,
the data-bar crop, and each bad input named in the error (``mosaicflow.io.read_tileset``)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from mosaicflow import Pipeline
from mosaicflow.config import Config, TilesConfig
from mosaicflow.errors import ConfigError, TileReadError, TileSetError
from mosaicflow.io import read_tile, read_tileset

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
STITCH2D = REAL_DATA / "sem_bse_2x3_stitch2d"
VEM = REAL_DATA / "ssem_3x3_vemstitch"
needs_real = pytest.mark.skipif(
    not (STITCH2D.is_dir() and VEM.is_dir()),
    reason=f"real data not found at {REAL_DATA} (clone ../shared next to the project)",
)


def _stitch2d_layout(tmp_path: Path, *, stage: bool) -> Path:
    """A layout CSV from the file names: ``Grid@a b`` is column a, row b (0-based)."""
    ref = pd.read_csv(STITCH2D / "reference_positions.csv").set_index("filename")
    lines = ["file,row,col" + (",stage_y_nm,stage_x_nm" if stage else "")]
    for path in sorted(STITCH2D.glob("*.jpg")):
        a, b = re.search(r"Grid@(\d+) (\d+)", path.name).groups()  # type: ignore[union-attr]
        line = f"{path},{int(b) + 1},{int(a) + 1}"
        if stage:
            line += f",{ref.loc[path.name, 'y_px'] * 10},{ref.loc[path.name, 'x_px'] * 10}"
        lines.append(line)
    layout = tmp_path / "layout.csv"
    layout.write_text("\n".join(lines) + "\n")
    return layout


@needs_real
def test_stitch2d_jpegs_with_a_layout_csv(tmp_path):
    tiles = read_tileset(STITCH2D, layout=_stitch2d_layout(tmp_path, stage=True), pixel_size_nm=10)
    assert (tiles.rows, tiles.cols, tiles.tile_shape) == (3, 2, (442, 512))
    assert tiles.dtype == np.uint8 and tiles.position_source == "layout-stage"
    ref = pd.read_csv(STITCH2D / "reference_positions.csv")
    ref["name"] = ref["filename"]
    got = tiles.tiles.assign(name=[Path(p).name for p in tiles.tiles["path"]])
    merged = got.merge(ref, on="name", suffixes=("", "_ref"))
    for axis in ("y_px", "x_px"):
        expected = merged[f"{axis}_ref"] - merged[f"{axis}_ref"].min()
        np.testing.assert_allclose(merged[axis], expected, atol=1e-6)
    # Grid@0 1 is column 1, row 2 (1-based)
    row = got[got["name"] == "stitch2d_ex[Grid@0 1].jpg"].iloc[0]
    assert (row["row"], row["col"]) == (2, 1)
    pixels = read_tile(row["path"], shape=tiles.tile_shape, dtype=tiles.dtype)
    assert pixels.shape == (442, 512)


@needs_real
def test_stitch2d_with_row_col_layout_and_grid_options(tmp_path):
    layout = _stitch2d_layout(tmp_path, stage=False)
    tiles = read_tileset(layout, pixel_size_nm=10, overlap=0.1)
    assert tiles.position_source == "grid-model"
    last = tiles.tiles.iloc[-1]
    assert (last["row"], last["col"]) == (3, 2)
    assert (last["y_px"], last["x_px"]) == pytest.approx((2 * 442 * 0.9, 512 * 0.9))
    # the layout names files outside its folder, so "file" is the path itself
    assert list(tiles.tiles["file"]) == list(tiles.tiles["path"])
    # this grid's overlaps differ: about 10 % vertically and 25 % across
    two = read_tileset(layout, pixel_size_nm=10, overlap=(0.1, 0.25)).tiles.iloc[-1]
    assert (two["y_px"], two["x_px"]) == pytest.approx((2 * 442 * 0.9, 512 * 0.75))
    # without a layout: sorted name order, row by row (these names run column first)
    by_grid = read_tileset(STITCH2D, grid=(3, 2), overlap=0.1, pixel_size_nm=10)
    names = [Path(p).name for p in by_grid.tiles["path"]]
    assert names == sorted(p.name for p in STITCH2D.glob("*.jpg"))
    assert len(by_grid.tiles) == 6 and by_grid.missing == ()


@needs_real
def test_vemstitch_bmps_with_grid_options():
    tiles = read_tileset(VEM, grid=(3, 3), overlap=0.1, pixel_size_nm=4.0)
    assert (tiles.rows, tiles.cols, tiles.tile_shape) == (3, 3, (1768, 2048))
    assert tiles.pixel_size_nm == (4.0, 4.0)
    assert Path(tiles.tiles["path"].iloc[5]).name == "165_2_3.bmp"
    assert tiles.tiles["x_px"].iloc[5] == pytest.approx(2 * 2048 * 0.9)


@needs_real
def test_pipeline_mosaic_from_real_jpegs(tmp_path):
    layout = _stitch2d_layout(tmp_path, stage=True)
    config = Config(
        input=str(STITCH2D), tiles=TilesConfig(layout=str(layout), pixel_size_nm=10.0)
    ).replace("store", chunk=256)
    store = Pipeline(config, str(tmp_path / "run.zarr")).run(stop_after="mosaic")
    ref = pd.read_csv(STITCH2D / "reference_positions.csv")
    y, x = ref["y_px"] - ref["y_px"].min(), ref["x_px"] - ref["x_px"].min()
    mosaic = store.read_image("mosaic")
    # integer origins: the round() of each nominal position (within one pixel of the extent)
    assert abs(mosaic.shape[0] - (y.max() + 442)) <= 1
    assert abs(mosaic.shape[1] - (x.max() + 512)) <= 1
    assert mosaic.dtype == np.uint8 and float(mosaic.max()) > 0


# -- Maps names, missing tiles, data bar --------------------------------------------------------


def _fei(py_m: float, sy_m: float, sx_m: float, h: int, w: int) -> str:
    return (
        f"[Scan]\nPixelWidth={py_m!r}\nPixelHeight={py_m!r}\n[Stage]\nStageX={sx_m!r}\n"
        f"StageY={sy_m!r}\n[Image]\nResolutionX={w}\nResolutionY={h}\n"
    )


def _maps_tile(
    folder: Path, name: str, row: int, col: int, *, h=40, w=50, bar=0, px_m=2e-9, value=0
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = np.full((h + bar, w), value, np.uint8)
    data[h:] = 255  # the data bar
    sy, sx = -(row - 1) * 36 * px_m, (col - 1) * 45 * px_m
    ini = _fei(px_m, sy, sx, h, w)
    tifffile.imwrite(folder / name, data, extratags=[(34682, "s", 0, ini, True)])
    return folder / name


def test_maps_suffix_names_and_groups(tmp_path):
    for r in (1, 2):
        for c in (1, 2):
            _maps_tile(tmp_path, f"Tile_{r:03d}-{c:03d}-000000_0-000.s0001_e00.tif", r, c)
            _maps_tile(tmp_path, f"Tile_{r:03d}-{c:03d}-000001_0-000.s0001_e00.tif", r, c)
    with pytest.warns(UserWarning, match="2 Maps tile groups.*z=1"):
        tiles = read_tileset(tmp_path)
    assert len(tiles.tiles) == 4 and tiles.position_source == "fei-stage"
    assert all("-000000_0-000.s0001_e00.tif" in p for p in tiles.tiles["path"])
    np.testing.assert_allclose(tiles.tiles["x_px"], [0, 45, 0, 45])
    np.testing.assert_allclose(tiles.tiles["y_px"], [0, 0, 36, 36])


def test_missing_maps_tile_is_an_error_unless_blank(tmp_path):
    for r, c in [(1, 1), (1, 2), (2, 1), (2, 3), (1, 3)]:
        _maps_tile(tmp_path, f"Tile_{r:03d}-{c:03d}-000000_0-000.tif", r, c)
    with pytest.raises(TileSetError, match=r"1 of 6 grid positions.*row 2 col 2.*--missing-tiles"):
        read_tileset(tmp_path)
    with pytest.warns(UserWarning, match="left uncovered"):
        tiles = read_tileset(tmp_path, missing_tiles="blank")
    assert tiles.missing == ((2, 2),) and len(tiles.tiles) == 5


def test_fei_data_bar_is_cropped(tmp_path):
    for c in (1, 2):
        _maps_tile(tmp_path, f"Tile_001-{c:03d}-000000_0-000.tif", 1, c, bar=12, value=7)
    tiles = read_tileset(tmp_path)
    assert tiles.tile_shape == (40, 50) and tiles.crop_bottom == 12
    pixels = read_tile(tiles.tiles["path"][0], shape=(40, 50), dtype=np.uint8, crop_bottom=12)
    assert pixels.shape == (40, 50) and pixels.max() == 7
    from mosaicflow.stitch import fuse

    mosaic = fuse(tiles, chunks=32).data.compute(scheduler="sync")
    assert mosaic.shape == (40, 95) and mosaic.max() == 7  # no data-bar pixel in the mosaic
    assert read_tileset(tmp_path, crop_bottom=2).tile_shape == (50, 50)


# -- other formats and layouts -----------------------------------------------------------------


def _pngs(folder: Path, n: int, shape=(30, 40), mode="L") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = np.full((*shape, 3) if mode == "RGB" else shape, 10 * i, np.uint8)
        paths.append(folder / f"t{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def test_rgb_png_becomes_grey_by_luminance(tmp_path):
    path = tmp_path / "one.png"
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    Image.fromarray(rgb).save(path)
    tiles = read_tileset(path, pixel_size_nm=1.5)  # a single image is a 1x1 grid
    assert (tiles.rows, tiles.cols, tiles.tile_shape, tiles.dtype) == (1, 1, (20, 30), np.uint8)
    grey = read_tile(path, shape=(20, 30), dtype=np.uint8)
    assert grey.shape == (20, 30) and int(grey[0, 0]) == round(0.299 * 100 + 0.587 * 200 + 5.7)


def test_fiji_tile_configuration(tmp_path):
    _pngs(tmp_path, 4)
    (tmp_path / "TileConfiguration.txt").write_text(
        "# Define the number of dimensions we are working on\ndim = 2\n\n"
        "# Define the image coordinates\nt0.png; ; (0.0, 0.0)\nt1.png; ; (36.5, 1.0)\n"
        "t2.png; ; (0.0, 27.0)\nt3.png; ; (36.0, 27.5)\n"
    )
    tiles = read_tileset(tmp_path / "TileConfiguration.txt", pixel_size_nm=2)
    assert tiles.position_source == "fiji"
    assert list(zip(tiles.tiles["row"], tiles.tiles["col"], strict=True)) == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert tiles.tiles["x_px"].tolist() == [0.0, 36.5, 0.0, 36.0]


# -- bad input -------------------------------------------------------------------------------


def test_no_metadata_and_no_options_names_them(tmp_path):
    _pngs(tmp_path, 4)
    with pytest.raises(TileSetError, match=r"--pixel-size.*--layout.*--grid ROWSxCOLS.*--overlap"):
        read_tileset(tmp_path)
    with pytest.raises(TileReadError, match=r"t0\.png.*no FEI.*--pixel-size"):
        read_tileset(tmp_path, grid=(2, 2), overlap=0.1)
    with pytest.raises(TileReadError, match=r"t0\.png.*no stage position.*--overlap"):
        read_tileset(tmp_path, grid=(2, 2), pixel_size_nm=1.0)


def test_duplicate_row_col(tmp_path):
    _pngs(tmp_path, 2)
    (tmp_path / "l.csv").write_text("file,row,col\nt0.png,1,1\nt1.png,1,1\n")
    with pytest.raises(TileSetError, match=r"'t0\.png' and 't1\.png' are both at row 1, col 1"):
        read_tileset(tmp_path / "l.csv", pixel_size_nm=1, overlap=0.1)


def test_layout_naming_absent_file(tmp_path):
    _pngs(tmp_path, 1)
    (tmp_path / "l.csv").write_text("file,row,col\nt0.png,1,1\nnope.png,1,2\n")
    with pytest.raises(TileSetError, match=r"line 3 names 'nope\.png'.*absent"):
        read_tileset(tmp_path, layout=tmp_path / "l.csv", pixel_size_nm=1, overlap=0.1)


def test_mixed_shapes_and_dtypes(tmp_path):
    _pngs(tmp_path, 2)
    Image.fromarray(np.zeros((31, 40), np.uint8)).save(tmp_path / "t1.png")
    with pytest.raises(TileReadError, match=r"t1\.png.*size 31x40 px, expected 30x40"):
        read_tileset(tmp_path, grid=(1, 2), overlap=0.1, pixel_size_nm=1)
    Image.fromarray(np.zeros((30, 40), np.uint16)).save(tmp_path / "t1.png")
    with pytest.raises(TileReadError, match=r"t1\.png.*pixel type uint16, expected uint8"):
        read_tileset(tmp_path, grid=(1, 2), overlap=0.1, pixel_size_nm=1)


def test_disagreeing_pixel_sizes(tmp_path):
    _pngs(tmp_path, 2)
    (tmp_path / "l.csv").write_text(
        "file,row,col,stage_y_nm,stage_x_nm,pixel_size_nm\nt0.png,1,1,0,0,2\nt1.png,1,2,0,70,3\n"
    )
    with pytest.raises(TileReadError, match=r"t1\.png.*pixel size.*differs"):
        read_tileset(tmp_path / "l.csv")
    _maps_tile(tmp_path / "m", "Tile_001-001-000000_0-000.tif", 1, 1)
    _maps_tile(tmp_path / "m", "Tile_001-002-000000_0-000.tif", 1, 2, px_m=3e-9)
    with pytest.raises(TileReadError, match=r"Tile_001-002.*pixel size.*differs"):
        read_tileset(tmp_path / "m")


def test_overlap_outside_range_warns(tmp_path):
    _pngs(tmp_path, 2)
    with pytest.warns(UserWarning, match=r"horizontal overlap .* 60\.0%"):
        read_tileset(tmp_path, grid=(1, 2), overlap=0.6, pixel_size_nm=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_tileset(tmp_path, grid=(1, 2), overlap=0.1, pixel_size_nm=1)


def test_corrupt_tile(tmp_path):
    _pngs(tmp_path, 2)
    (tmp_path / "t1.png").write_bytes(b"not an image at all")
    with pytest.raises(TileReadError, match=r"t1\.png.*not a readable image"):
        read_tileset(tmp_path, grid=(1, 2), overlap=0.1, pixel_size_nm=1)


def test_truncated_jpeg_fails_when_read(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:300])  # the header cut: refused before any heavy work
    with pytest.raises(TileReadError, match=r"a\.jpg.*not a readable image"):
        read_tileset(path, pixel_size_nm=1)
    path.write_bytes(data[: len(data) // 2])  # the header whole: found when the pixels are read
    tiles = read_tileset(path, pixel_size_nm=1)
    with pytest.raises(TileReadError, match=r"a\.jpg.*cannot decode"):
        read_tile(path, shape=tiles.tile_shape, dtype=tiles.dtype)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"grid": (0, 2)}, "option grid"),
        ({"overlap": 1.5}, "option overlap"),
        ({"pixel_size_nm": -1.0}, "option pixel_size_nm"),
        ({"crop_bottom": -3}, "option crop_bottom"),
        ({"missing_tiles": "ignore"}, "option missing_tiles"),
        ({"layout": "/nonexistent/l.csv"}, "option layout"),
    ],
)
def test_bad_options(tmp_path, options, match):
    _pngs(tmp_path, 1)
    with pytest.raises(TileSetError, match=match):
        read_tileset(tmp_path, **options)


def test_tiles_config_section():
    config = Config.from_dict(
        {"tiles": {"grid": "3x4", "overlap": "0.1", "pixel_size_nm": 2, "crop_bottom": 5}}
    )
    options = config.tiles.reader_options()
    assert options["grid"] == (3, 4) and options["overlap"] == (0.1, 0.1)
    two = Config.from_dict({"tiles": {"overlap": "0.1,0.25"}}).tiles.reader_options()
    assert two["overlap"] == (0.1, 0.25)
    assert options["crop_bottom"] == 5 and options["missing_tiles"] == "error"
    with pytest.raises(ConfigError, match=r"tiles\.grid.*ROWSxCOLS"):
        Config.from_dict({"tiles": {"grid": "3 by 4"}})
    with pytest.raises(ConfigError, match=r"tiles\.missing_tiles"):
        Config.from_dict({"tiles": {"missing_tiles": "skip"}})
    for bad in (2, "0.1,0.2,0.3", "a,b", "0.1,1.5"):
        with pytest.raises(ConfigError, match=r"tiles\.overlap"):
            Config.from_dict({"tiles": {"overlap": bad}})
