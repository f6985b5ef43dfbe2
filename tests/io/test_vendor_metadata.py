"""Zeiss SEM (tag 34118) and FEI/Thermo TEM XML (tag 34683) tiles read by ``read_tileset``:
pixel size and stage position in every unit, the Zeiss data bar, and bad metadata named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from mosaicflow.errors import TileReadError
from mosaicflow.io import read_tile, read_tileset
from mosaicflow.io.vendor_metadata import length_nm

H, W = 48, 64
STEP = (40, 52)  # (y, x) px between neighbouring tile origins
NM_PER = {"nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9}


def _name(row: int, col: int) -> str:
    return f"Tile_{row:03d}-{col:03d}-000000_0-000.tif"


def _zeiss_text(
    pixel_nm: float,
    pixel_unit: str,
    stage_nm: tuple[float, float] | None,
    stage_units: tuple[str, str],
    store: str | None,
) -> str:
    """A CZ_SEM block as tifffile's ``read_cz_sem`` parses it: an upper-case key line, then
    ``Label = value unit`` (a space between number and unit) on the next line."""
    lines = [
        "0",
        "0",
        "AP_IMAGE_PIXEL_SIZE",
        f"Image Pixel Size = {pixel_nm / NM_PER[pixel_unit]!r} {pixel_unit}",
    ]
    if stage_nm is not None:
        (y, x), (uy, ux) = stage_nm, stage_units
        lines += ["AP_STAGE_AT_X", f"Stage at X = {x / NM_PER[ux]!r} {ux}"]
        lines += ["AP_STAGE_AT_Y", f"Stage at Y = {y / NM_PER[uy]!r} {uy}"]
    if store is not None:
        lines += ["DP_IMAGE_STORE", f"Store resolution = {store}"]
    lines += ["AP_WD", "WD = 5.0 mm"]
    return "\r\n".join(lines) + "\r\n"


def _write(path: Path, extratags: list, *, bar: int = 0, value: int = 9) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full((H + bar, W), value, np.uint8)
    data[H:] = 255  # the data bar
    tifffile.imwrite(path, data, extratags=extratags)
    return path


def _zeiss_tag(text: str) -> tuple:
    # tifffile writes "s" tags as 7-bit ASCII only; raw bytes carry the micro sign
    raw = text.encode("utf-8")
    return (34118, "B", len(raw), raw, True)


def _zeiss_grid(folder: Path, pixel_nm: float, units: tuple[str, str, str], *, bar: int = 0):
    for r in (1, 2):
        for c in (1, 2):
            y0, x0 = (r - 1) * STEP[0] * pixel_nm, (c - 1) * STEP[1] * pixel_nm
            store = f"{W} * {H}"
            text = _zeiss_text(pixel_nm, units[0], (-y0, x0), units[1:], store)
            _write(folder / _name(r, c), [_zeiss_tag(text)], bar=bar)


@pytest.mark.parametrize(
    ("pixel_unit", "uy", "ux"),
    [("nm", "mm", "mm"), ("µm", "µm", "m"), ("um", "um", "nm"), ("nm", "μm", "mm")],
)
def test_zeiss_units_positions_and_data_bar(tmp_path, pixel_unit, uy, ux):
    pixel = 2.5
    _zeiss_grid(tmp_path, pixel, (pixel_unit, uy, ux), bar=17)
    tiles = read_tileset(tmp_path)
    assert tiles.position_source == "zeiss-stage"
    assert tiles.pixel_size_nm == pytest.approx((pixel, pixel))
    assert tiles.tile_shape == (H, W) and tiles.crop_bottom == 17
    np.testing.assert_allclose(tiles.tiles["y_px"], [0, 0, STEP[0], STEP[0]], atol=1e-6)
    np.testing.assert_allclose(tiles.tiles["x_px"], [0, STEP[1], 0, STEP[1]], atol=1e-6)
    pixels = read_tile(tiles.tiles["path"][0], shape=(H, W), dtype=np.uint8, crop_bottom=17)
    assert pixels.max() == 9  # no data-bar row left


def test_zeiss_metadata_round_trips_through_tifffile(tmp_path):
    text = _zeiss_text(2.5, "nm", (0.0, 1e6), ("µm", "mm"), f"{W} * {H}")
    path = _write(tmp_path / "z.tif", [_zeiss_tag(text)])
    with tifffile.TiffFile(path) as tif:
        meta = tif.sem_metadata
    assert meta["ap_image_pixel_size"] == ("Image Pixel Size", 2.5, "nm")
    assert meta["ap_stage_at_x"] == ("Stage at X", 1.0, "mm")
    assert meta["dp_image_store"] == ("Store resolution", f"{W} * {H}")


def test_length_units():
    for unit, factor in NM_PER.items():
        assert length_nm(3.0, unit, where="x") == pytest.approx(3.0 * factor)
    assert length_nm(5.0, "pm", where="x") == pytest.approx(5e-3)
    with pytest.raises(TileReadError, match="furlong"):
        length_nm(1.0, "furlong", where="x")


def test_zeiss_bad_fields_are_named(tmp_path):
    good = _zeiss_text(2.5, "nm", (0.0, 0.0), ("mm", "mm"), f"{W} * {H}")
    path = _write(tmp_path / "a" / _name(1, 1), [_zeiss_tag(good.replace("2.5 nm", "2.5 furlong"))])
    with pytest.raises(TileReadError, match=rf"{path.name}.*AP_IMAGE_PIXEL_SIZE.*furlong"):
        read_tileset(path)
    bad_store = good.replace(f"{W} * {H}", "big")
    path = _write(tmp_path / "b" / _name(1, 1), [_zeiss_tag(bad_store)])
    with pytest.raises(TileReadError, match=rf"{path.name}.*DP_IMAGE_STORE='big'"):
        read_tileset(path)
    no_y = good.replace("AP_STAGE_AT_Y", "AP_SOMETHING_ELSE")
    paths = [_write(tmp_path / "c" / _name(1, c), [_zeiss_tag(no_y)]) for c in (1, 2)]
    with pytest.raises(TileReadError, match=rf"{paths[0].name}.*without AP_STAGE_AT_Y"):
        read_tileset(tmp_path / "c")


def test_zeiss_disagreeing_pixel_sizes(tmp_path):
    for c, pixel in ((1, 2.5), (2, 3.0)):
        text = _zeiss_text(pixel, "nm", (0.0, c * 1e3), ("mm", "mm"), None)
        _write(tmp_path / _name(1, c), [_zeiss_tag(text)])
    with pytest.raises(TileReadError, match=rf"{_name(1, 2)}.*pixel size.*differs"):
        read_tileset(tmp_path)


# -- FEI/Thermo TEM XML (tag 34683) -----------------------------------------------------------


def _tem_xml(pixel_m: tuple[float, float], stage_m: tuple[float, float], *, ns: bool) -> str:
    """A TEM metadata block; with ``ns`` a default namespace and other tag cases."""
    (py, px), (sy, sx) = pixel_m, stage_m
    if ns:
        return (
            '<?xml version="1.0"?><metadata xmlns="http://schemas.example/tem">'
            "<binaryresult><PIXELSIZE><width>"
            f"{px * 1e9!r}</width><height>{py * 1e9!r}</height></PIXELSIZE>"
            "<PixelUnitX>nm</PixelUnitX><PixelUnitY>nm</PixelUnitY></binaryresult>"
            f"<stage><position><x>{sx!r}</x><y>{sy!r}</y><z>0</z></position></stage></metadata>"
        )
    return (
        "<Metadata><Optics><Magnification>1e5</Magnification></Optics><BinaryResult>"
        f"<PixelSize><Width>{px!r}</Width><Height>{py!r}</Height></PixelSize></BinaryResult>"
        f"<Stage><Position><X>{sx!r}</X><Y>{sy!r}</Y></Position></Stage></Metadata>"
    )


def _tem_grid(folder: Path, pixel_m: tuple[float, float], *, ns: bool) -> None:
    for r in (1, 2):
        for c in (1, 2):
            y0, x0 = (r - 1) * STEP[0] * pixel_m[0], (c - 1) * STEP[1] * pixel_m[1]
            xml = _tem_xml(pixel_m, (-y0, x0), ns=ns)
            _write(folder / _name(r, c), [(34683, "s", 0, xml, True)])


@pytest.mark.parametrize("ns", [False, True])
def test_tem_xml_pixel_size_and_stage(tmp_path, ns):
    pixel_m = (1.5e-10, 1.25e-10)
    _tem_grid(tmp_path, pixel_m, ns=ns)
    tiles = read_tileset(tmp_path)
    assert tiles.position_source == "tem-stage"
    assert tiles.pixel_size_nm == pytest.approx((pixel_m[0] * 1e9, pixel_m[1] * 1e9))
    np.testing.assert_allclose(tiles.tiles["y_px"], [0, 0, STEP[0], STEP[0]], atol=1e-6)
    np.testing.assert_allclose(tiles.tiles["x_px"], [0, STEP[1], 0, STEP[1]], atol=1e-6)
    assert tiles.crop_bottom == 0


def test_tem_xml_ignored_when_fei_ini_present(tmp_path):
    ini = "[Scan]\nPixelWidth=2e-09\nPixelHeight=2e-09\n"
    xml = _tem_xml((5e-9, 5e-9), (0.0, 0.0), ns=False)
    path = _write(tmp_path / "a.tif", [(34682, "s", 0, ini, True), (34683, "s", 0, xml, True)])
    assert read_tileset(path).pixel_size_nm == pytest.approx((2.0, 2.0))


@pytest.mark.parametrize(
    ("xml", "match"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
            '"&lol;&lol;&lol;">]><Metadata><x>&lol2;</x></Metadata>',
            r"34683.*refused.*DTD",
        ),
        ("<Metadata><BinaryResult></Metadata>", r"34683.*malformed XML"),
        (
            "<Metadata><BinaryResult><PixelSize><Width>wide</Width></PixelSize></BinaryResult>"
            "</Metadata>",
            r"34683.*PixelSize/Width='wide' is not a number",
        ),
        (
            "<Metadata><BinaryResult><PixelSize><Width>1e-9</Width></PixelSize></BinaryResult>"
            "<Stage><Position><X>1e-6</X></Position></Stage></Metadata>",
            r"34683.*without Stage/Position/Y",
        ),
    ],
)
def test_tem_bad_metadata_is_named(tmp_path, xml, match):
    for c in (1, 2):
        _write(tmp_path / _name(1, c), [(34683, "s", 0, xml, True)])
    with pytest.raises(TileReadError, match=rf"{_name(1, 1)}.*{match}"):
        read_tileset(tmp_path)


def test_tem_without_pixel_size_names_every_source(tmp_path):
    path = _write(tmp_path / "a.tif", [(34683, "s", 0, "<Metadata/>", True)])
    with pytest.raises(TileReadError, match=r"a\.tif.*34683.*34118.*--pixel-size"):
        read_tileset(path)
