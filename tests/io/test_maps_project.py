"""Thermo Fisher Maps project files read by ``read_tileset``: ``StitchingData.xml`` positions,
the layer rotation applied to stage positions, the project grid model and pixel size, the
precedence between them, and bad project files named in the error.

No public sample of these files exists: the fixtures follow the field names of
``docs/GRID_FORMAT.md``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mosaicflow.errors import TileReadError, TileSetError
from mosaicflow.io import read_tileset

H, W = 40, 50
PIXEL_M = 2e-9


def _name(row: int, col: int) -> str:
    return f"Tile_{row:03d}-{col:03d}-000000_0-000.tif"


def _tile(
    folder: Path,
    row: int,
    col: int,
    stage_m: tuple[float, float] | None = None,
    *,
    pixel_m: float | None = PIXEL_M,
) -> Path:
    """A Maps raw tile; FEI INI metadata with a pixel size and, if given, a stage ``(y, x)``."""
    folder.mkdir(parents=True, exist_ok=True)
    ini = "" if pixel_m is None else f"[Scan]\nPixelWidth={pixel_m!r}\nPixelHeight={pixel_m!r}\n"
    if stage_m is not None:
        ini += f"[Stage]\nStageX={stage_m[1]!r}\nStageY={stage_m[0]!r}\n"
    tags = [(34682, "s", 0, ini, True)] if ini else []
    tifffile.imwrite(folder / _name(row, col), np.full((H, W), 5, np.uint8), extratags=tags)
    return folder / _name(row, col)


def _layer_xml(name: str, **fields: object) -> str:
    body = f"<Name>{name}</Name>"
    for key, value in fields.items():
        if key == "StagePosition":
            y, x = value  # type: ignore[misc]
            body += f"<StagePosition><X>{x!r}</X><Y>{y!r}</Y></StagePosition>"
        else:
            body += f"<{key}>{value}</{key}>"
    return f"<TileLayer>{body}</TileLayer>"


def _project(path: Path, *layers: str, ns: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    xmlns = ' xmlns="http://schemas.example/maps"' if ns else ""
    path.write_text(
        f'<?xml version="1.0" encoding="utf-8"?><MapsProject{xmlns}><Layers>'
        f"{''.join(layers)}</Layers></MapsProject>"
    )
    return path


def _stitching(path: Path, tiles: list[tuple[dict[str, object], float, float]]) -> Path:
    """``tiles``: (identifying children, x px, y px) per tile."""
    items = ""
    for ident, x, y in tiles:
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in ident.items())
        items += (
            f"<Tile>{inner}<UnalignedPosition><X>{x!r}</X><Y>{y!r}</Y></UnalignedPosition></Tile>"
        )
    path.write_text(f"<StitchingData><Tiles>{items}</Tiles></StitchingData>")
    return path


def _layer_folder(root: Path) -> Path:
    """``root/MapsProject.xml`` two folders above the tiles of layer ``Layer 1``."""
    return root / "LayersData" / "Layer 1"


# -- StitchingData.xml ---------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["rowcol0", "rowcol1", "file"])
def test_stitching_data_positions_beat_stage(tmp_path, by):
    folder = _layer_folder(tmp_path)
    rng = np.random.default_rng(3)
    truth = {}
    for r in (1, 2):
        for c in (1, 2, 3):
            # stage metadata deliberately wrong: StitchingData must win
            _tile(folder, r, c, (-r * 1e-6, c * 1e-6))
            truth[(r, c)] = (r * 35 + rng.uniform(-3, 3), c * 44 + rng.uniform(-3, 3))
    base = 0 if by == "rowcol0" else 1
    records = [
        (
            {"FileName": _name(r, c)}
            if by == "file"
            else {"Row": r - 1 + base, "Column": c - 1 + base},
            x,
            y,
        )
        for (r, c), (y, x) in truth.items()
    ]
    _stitching(folder / "StitchingData.xml", records)
    tiles = read_tileset(folder)
    assert tiles.position_source == "maps-stitchingdata"
    expected = np.array(
        [truth[(r, c)] for r, c in zip(tiles.tiles["row"], tiles.tiles["col"], strict=True)]
    )
    np.testing.assert_allclose(
        tiles.tiles[["y_px", "x_px"]].to_numpy(), expected - expected.min(0), atol=1e-9
    )
    assert tiles.tiles["stage_x_nm"].isna().all()


def test_stitching_data_in_parent_folder_and_incomplete(tmp_path):
    folder = _layer_folder(tmp_path)
    for c in (1, 2):
        _tile(folder, 1, c, (0.0, (c - 1) * 45 * PIXEL_M))
    # the parent folder holds it, listing only one tile: a warning, then FEI stage positions
    _stitching(folder.parent / "StitchingData.xml", [({"Row": 1, "Column": 1}, 0.0, 0.0)])
    with pytest.warns(UserWarning, match=rf"no position for tile '{_name(1, 2)}'"):
        tiles = read_tileset(folder)
    assert tiles.position_source == "fei-stage"
    np.testing.assert_allclose(tiles.tiles["x_px"], [0, 45])


def test_explicit_layout_beats_stitching_data(tmp_path):
    folder = _layer_folder(tmp_path)
    for c in (1, 2):
        _tile(folder, 1, c)
    _stitching(
        folder / "StitchingData.xml", [({"Row": 1, "Column": c}, c * 40.0, 0.0) for c in (1, 2)]
    )
    layout = folder / "layout.csv"
    layout.write_text(
        f"file,row,col,stage_y_nm,stage_x_nm\n{_name(1, 1)},1,1,0,0\n{_name(1, 2)},1,2,0,90\n"
    )
    tiles = read_tileset(folder, layout=layout)
    assert tiles.position_source == "layout-stage"
    np.testing.assert_allclose(tiles.tiles["x_px"], [0, 90 / (PIXEL_M * 1e9)])


# -- MapsProject.xml: rotation, grid model, pixel size ---------------------------------------


def test_rotation_90_degrees_turns_stage_offsets(tmp_path):
    """Layer rotation 90: the image x axis points along stage +y (counterclockwise, y up), so a
    tile one column right has a larger StageY and a tile one row down a larger StageX."""
    folder = _layer_folder(tmp_path)
    step_y, step_x = 36, 45
    for r in (1, 2):
        for c in (1, 2, 3):
            _tile(folder, r, c, ((c - 1) * step_x * PIXEL_M, (r - 1) * step_y * PIXEL_M))
    _project(tmp_path / "MapsProject.xml", _layer_xml("Layer 1", rotation=90))
    tiles = read_tileset(folder)
    assert tiles.position_source == "fei-stage"
    rows, cols = tiles.tiles["row"].to_numpy(), tiles.tiles["col"].to_numpy()
    np.testing.assert_allclose(tiles.tiles["y_px"], (rows - 1) * step_y, atol=1e-6)
    np.testing.assert_allclose(tiles.tiles["x_px"], (cols - 1) * step_x, atol=1e-6)
    # the raw stage values are kept, unrotated
    np.testing.assert_allclose(tiles.tiles["stage_y_nm"], (cols - 1) * step_x * PIXEL_M * 1e9)


@pytest.mark.parametrize("centre", [None, (3e-4, -2e-4)])
def test_small_rotation_about_the_grid_centre(tmp_path, centre):
    folder = _layer_folder(tmp_path)
    angle, step_y, step_x = 7.0, 36.0, 45.0
    t = math.radians(angle)
    for r in (1, 2, 3):
        for c in (1, 2):
            # image-axis offset (x right, y up) turned counterclockwise by the layer rotation
            ix, iy = (c - 1) * step_x * PIXEL_M, -(r - 1) * step_y * PIXEL_M
            sx, sy = math.cos(t) * ix - math.sin(t) * iy, math.sin(t) * ix + math.cos(t) * iy
            _tile(folder, r, c, (sy + 1e-3, sx - 2e-3))
    fields: dict[str, object] = {"rotation": angle}
    if centre is not None:
        fields["StagePosition"] = centre
    _project(tmp_path / "MapsProject.xml", _layer_xml("Layer 1", **fields))
    tiles = read_tileset(folder)
    rows, cols = tiles.tiles["row"].to_numpy(), tiles.tiles["col"].to_numpy()
    np.testing.assert_allclose(tiles.tiles["y_px"], (rows - 1) * step_y, atol=1e-6)
    np.testing.assert_allclose(tiles.tiles["x_px"], (cols - 1) * step_x, atol=1e-6)
    # without the project the same tiles come out turned by the angle
    (tmp_path / "MapsProject.xml").unlink()
    turned = read_tileset(folder).tiles
    last = turned[(turned["row"] == 1) & (turned["col"] == 2)].iloc[0]
    first = turned[(turned["row"] == 1) & (turned["col"] == 1)].iloc[0]
    assert last["y_px"] - first["y_px"] == pytest.approx(-math.sin(t) * step_x, abs=1e-6)


def test_project_grid_model_pixel_size_and_missing_tile(tmp_path):
    folder = _layer_folder(tmp_path)
    for r, c in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3)]:
        _tile(folder, r, c, pixel_m=None)
    pixel_m, ov_h, ov_v = 4e-9, 12.0, 20.0
    layer = _layer_xml(
        "Layer 1",
        rows=2,
        columns=3,
        overlapHorizontal=ov_h,
        overlapVertical=ov_v,
        pixelSize=pixel_m,
    )
    _project(tmp_path / "MapsProject.xml", layer, ns=True)
    with pytest.raises(TileSetError, match=r"1 of 6 grid positions.*row 2 col 2"):
        read_tileset(folder)
    with pytest.warns(UserWarning, match="left uncovered"):
        tiles = read_tileset(folder, missing_tiles="blank")
    assert tiles.position_source == "maps-project-grid"
    assert tiles.pixel_size_nm == pytest.approx((pixel_m * 1e9,) * 2)
    assert (tiles.rows, tiles.cols, tiles.missing) == (2, 3, ((2, 2),))
    rows, cols = tiles.tiles["row"].to_numpy(), tiles.tiles["col"].to_numpy()
    np.testing.assert_allclose(tiles.tiles["y_px"], (rows - 1) * H * (1 - ov_v / 100))
    np.testing.assert_allclose(tiles.tiles["x_px"], (cols - 1) * W * (1 - ov_h / 100))
    # the overlap option wins over the project's overlaps
    with pytest.warns(UserWarning, match="left uncovered"):
        opt = read_tileset(folder, missing_tiles="blank", overlap=0.1)
    assert opt.position_source == "grid-model"
    np.testing.assert_allclose(opt.tiles["x_px"], (cols - 1) * W * 0.9)


def test_project_grid_size_keeps_absent_last_column(tmp_path):
    folder = _layer_folder(tmp_path)
    for c in (1, 2):
        _tile(folder, 1, c, pixel_m=None)
    layer = _layer_xml(
        "Layer 1", rows=1, columns=3, overlapHorizontal=10, overlapVertical=10, tileHfw=W * 3e-9
    )
    _project(tmp_path / "MapsProject.xml", layer)
    with pytest.warns(UserWarning, match="left uncovered"):
        tiles = read_tileset(folder, missing_tiles="blank")
    assert tiles.missing == ((1, 3),)
    assert tiles.pixel_size_nm == pytest.approx((3.0, 3.0))  # tileHfw / tile width


def test_layer_chosen_by_folder_name(tmp_path):
    folder = _layer_folder(tmp_path)
    for c in (1, 2):
        _tile(folder, 1, c, pixel_m=None)
    other = _layer_xml(
        "Layer 2", rows=1, columns=2, overlapHorizontal=30, overlapVertical=30, pixelSize=9e-9
    )
    mine = _layer_xml(
        "Layer 1", rows=1, columns=2, overlapHorizontal=10, overlapVertical=10, pixelSize=3e-9
    )
    _project(tmp_path / "MapsProject.xml", other, mine)
    tiles = read_tileset(folder)
    assert tiles.pixel_size_nm == pytest.approx((3.0, 3.0))
    np.testing.assert_allclose(tiles.tiles["x_px"], [0, W * 0.9])
    _project(tmp_path / "MapsProject.xml", other, other.replace("Layer 2", "Layer 3"))
    with pytest.warns(UserWarning, match=r"2 tile layers.*none named like.*'Layer 1'"):
        with pytest.raises(TileReadError, match=r"no FEI.*MapsProject\.xml"):
            read_tileset(folder)


def test_project_searched_up_three_folders_only(tmp_path):
    folder = tmp_path / "a" / "b" / "c" / "Layer 1"
    for c in (1, 2):
        _tile(folder, 1, c, pixel_m=None)
    layer = _layer_xml(
        "Layer 1", rows=1, columns=2, overlapHorizontal=10, overlapVertical=10, pixelSize=3e-9
    )
    _project(tmp_path / "a" / "MapsProject.xml", layer)  # three folders up: found
    assert read_tileset(folder).position_source == "maps-project-grid"
    (tmp_path / "a" / "MapsProject.xml").rename(tmp_path / "MapsProject.xml")  # four: not
    with pytest.raises(TileReadError, match="no FEI"):
        read_tileset(folder)


def test_tile_metadata_beats_project_pixel_size_and_must_agree(tmp_path):
    folder = _layer_folder(tmp_path)
    _tile(folder, 1, 1, (0.0, 0.0))
    _tile(folder, 1, 2, (0.0, 45 * PIXEL_M))
    layer = _layer_xml("Layer 1", pixelSize=PIXEL_M * 2)
    _project(tmp_path / "MapsProject.xml", layer)
    assert read_tileset(folder).pixel_size_nm == pytest.approx((PIXEL_M * 1e9,) * 2)
    _tile(folder, 1, 2, pixel_m=None)  # one tile without metadata: the project's size is used
    with pytest.raises(TileReadError, match=rf"{_name(1, 1)}.*differs.*MapsProject\.xml"):
        read_tileset(folder)


# -- bad project files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            '<!DOCTYPE p [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><MapsProject>&b;'
            "</MapsProject>",
            r"MapsProject\.xml.*refused.*DTD",
        ),
        ("<MapsProject><TileLayer></MapsProject>", r"MapsProject\.xml.*malformed XML"),
        (
            "<MapsProject><TileLayer><overlapHorizontal>ten</overlapHorizontal></TileLayer>"
            "</MapsProject>",
            r"MapsProject\.xml.*field overlapHorizontal='ten' is not a number",
        ),
        (
            "<MapsProject><TileLayer><Rows>0</Rows></TileLayer></MapsProject>",
            r"MapsProject\.xml.*field rows=0",
        ),
        (
            "<MapsProject><TileLayer><StagePosition><X>0</X></StagePosition></TileLayer>"
            "</MapsProject>",
            r"MapsProject\.xml.*StagePosition lacks Y",
        ),
    ],
)
def test_bad_project_file_is_named(tmp_path, text, match):
    folder = _layer_folder(tmp_path)
    _tile(folder, 1, 1, (0.0, 0.0))
    (tmp_path / "MapsProject.xml").write_text(text)
    with pytest.raises(TileReadError, match=match):
        read_tileset(folder)


def test_bad_stitching_data_is_named(tmp_path):
    folder = _layer_folder(tmp_path)
    _tile(folder, 1, 1, (0.0, 0.0))
    path = folder / "StitchingData.xml"
    path.write_text(
        "<StitchingData><Tile><Row>1</Row><Column>1</Column>"
        "<UnalignedPosition><X>3</X></UnalignedPosition></Tile></StitchingData>"
    )
    with pytest.raises(TileReadError, match=r"StitchingData\.xml.*UnalignedPosition/Y"):
        read_tileset(folder)
    path.write_text(
        "<StitchingData><Tile><UnalignedPosition><X>1</X><Y>2</Y>"
        "</UnalignedPosition></Tile></StitchingData>"
    )
    with pytest.raises(TileReadError, match=r"StitchingData\.xml.*neither Row and Column"):
        read_tileset(folder)
    path.write_text('<!DOCTYPE s SYSTEM "http://example.invalid/s.dtd"><StitchingData/>')
    with pytest.raises(TileReadError, match=r"StitchingData\.xml.*refused"):
        read_tileset(folder)


def test_plain_folders_ignore_a_project_above(tmp_path):
    folder = _layer_folder(tmp_path)
    folder.mkdir(parents=True)
    for i in range(2):
        tifffile.imwrite(folder / f"img{i}.tif", np.zeros((H, W), np.uint8))
    _project(tmp_path / "MapsProject.xml", "<TileLayer><pixelSize>oops</pixelSize></TileLayer>")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiles = read_tileset(folder, grid=(1, 2), overlap=0.1, pixel_size_nm=1.0)
    assert tiles.position_source == "grid-model"
