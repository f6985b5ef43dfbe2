"""Thermo Fisher Maps project files beside a folder of raw tiles: the layer's grid, overlap,
pixel size and rotation from ``MapsProject.xml``, and each tile's unaligned position from
``StitchingData.xml``.

``MapsProject.xml`` is looked for in the tile folder and up to :data:`PROJECT_LEVELS` folders
above it, ``StitchingData.xml`` in the tile folder or its parent. Tag names are matched without
namespace and case; documents declaring a DTD or entities are refused
(:func:`mosaicflow.io.safe_xml.parse_xml`). No public sample of these files exists: the field
names follow the description in ``docs/GRID_FORMAT.md``.
"""

from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mosaicflow.errors import TileReadError
from mosaicflow.io.layouts import TILE_PATTERN
from mosaicflow.io.remote import as_path, listdir
from mosaicflow.io.safe_xml import child, child_text, iter_named, parse_xml
from mosaicflow.io.vendor_metadata import length_nm

__all__ = [
    "PROJECT_FILE",
    "PROJECT_LEVELS",
    "STITCHING_FILE",
    "MapsLayer",
    "MapsMetadata",
    "StitchedTile",
    "find_upwards",
    "read_maps_metadata",
    "read_project_layer",
    "read_stitching_data",
    "stitching_positions",
]

PROJECT_FILE = "MapsProject.xml"
STITCHING_FILE = "StitchingData.xml"
#: Folders above the tile folder searched for ``MapsProject.xml``.
PROJECT_LEVELS = 3
#: Children (or attributes) of a ``TileLayer`` that may hold its name or folder.
_LAYER_NAMES = ("name", "displayname", "layername", "folder", "foldername", "datafolder", "path")
_FILE_NAMES = ("filename", "file", "imagename", "tilename", "name", "path")


@dataclass(frozen=True)
class MapsLayer:
    """One ``TileLayer`` of a ``MapsProject.xml``; None where the project lacks a field.

    Attributes
    ----------
    path : Path
        The ``MapsProject.xml``.
    name : str
        The layer's name (or ``""``).
    rows, cols : int or None
        Grid size.
    overlap : (float, float) or None
        ``(vertical, horizontal)`` overlap as fractions (the file gives percent).
    pixel_size_nm : float or None
        ``pixelSize`` in nm.
    tile_hfw_nm : float or None
        ``tileHfw``, the horizontal field width of one tile, in nm.
    rotation_deg : float
        ``rotation`` in degrees (0 when absent).
    stage_nm : (float, float) or None
        ``StagePosition`` ``(y, x)`` in nm (y up, like FEI stage coordinates).
    """

    path: Path
    name: str
    rows: int | None = None
    cols: int | None = None
    overlap: tuple[float, float] | None = None
    pixel_size_nm: float | None = None
    tile_hfw_nm: float | None = None
    rotation_deg: float = 0.0
    stage_nm: tuple[float, float] | None = None

    def pixel_size_for(self, width: int) -> float | None:
        """``pixelSize``, else ``tileHfw / width`` (stored tile width in px), else None."""
        if self.pixel_size_nm is not None:
            return self.pixel_size_nm
        return None if self.tile_hfw_nm is None else self.tile_hfw_nm / width


@dataclass(frozen=True)
class StitchedTile:
    """One tile of ``StitchingData.xml``: its row/col as written and/or file name, and its
    ``UnalignedPosition`` in px (x right, y down)."""

    row: int | None
    col: int | None
    file: str | None
    y_px: float
    x_px: float


@dataclass(frozen=True)
class MapsMetadata:
    """What the Maps project files beside a tile folder say (either may be absent)."""

    layer: MapsLayer | None = None
    stitching: tuple[StitchedTile, ...] = ()
    stitching_path: Path | None = None


def find_upwards(folder: Path, name: str, levels: int) -> Path | None:
    """``name`` (case-insensitive) in ``folder`` or up to ``levels`` folders above it (a local
    folder or a :class:`~mosaicflow.io.remote.RemotePath`, up to its bucket)."""
    here = folder.resolve()
    for _ in range(levels + 1):
        try:
            found = [n for n in listdir(here) if n.lower() == name.lower()]
        except OSError:
            found = []
        if found and (here / sorted(found)[0]).is_file():
            return here / sorted(found)[0]
        if here.parent == here:
            break
        here = here.parent
    return None


def _read(path: Path) -> ET.Element:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TileReadError(f"Maps file {str(path)!r}: unreadable ({exc})") from exc
    return parse_xml(data, where=f"Maps file {str(path)!r}")


def _number(text: str | None, where: str, field: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TileReadError(f"{where} field {field}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise TileReadError(f"{where} field {field} is {value}")
    return value


def _length(element: ET.Element, field: str, where: str) -> float | None:
    """A child length in metres (unless its ``unit`` attribute says otherwise), as nm."""
    found = child(element, field.lower())
    if found is None:
        return None
    value = _number((found.text or "").strip(), where, field)
    unit = next((v for k, v in found.attrib.items() if k.lower() == "unit"), "m")
    return length_nm(float(value or 0.0), unit, where=f"{where} field {field}")


def _layer_name(layer: ET.Element) -> str:
    text = child_text(layer, *_LAYER_NAMES) or ""
    return re.split(r"[\\/]", text.rstrip("\\/"))[-1]


def read_project_layer(path: Path, folder_name: str) -> MapsLayer | None:
    """The ``TileLayer`` of ``MapsProject.xml`` for the tile folder ``folder_name``: the one so
    named, else the only one; None (with a warning when there are several) otherwise."""
    layers = list(iter_named(_read(path), "tilelayer"))
    if not layers:
        return None
    named = [e for e in layers if _layer_name(e).lower() == folder_name.lower()]
    if named:
        layer = named[0]
    elif len(layers) == 1:
        layer = layers[0]
    else:
        shown = ", ".join(repr(_layer_name(e)) for e in layers)
        warnings.warn(
            f"Maps project {str(path)!r} holds {len(layers)} tile layers ({shown}), none named "
            f"like the tile folder {folder_name!r}: the project is not used",
            UserWarning,
            stacklevel=4,
        )
        return None
    name = _layer_name(layer)
    where = f"Maps project {str(path)!r}: TileLayer {name!r}"
    grid = {}
    for field, names in (("rows", ("rows",)), ("columns", ("columns", "cols"))):
        value = _number(child_text(layer, *names), where, field)
        if value is not None and (value < 1 or value != int(value)):
            raise TileReadError(f"{where} field {field}={value} is not a whole number >= 1")
        grid[field] = None if value is None else int(value)
    overlap: list[float] = []
    for field in ("overlapVertical", "overlapHorizontal"):
        value = _number(child_text(layer, field.lower()), where, field)
        if value is not None and not 0 <= value < 100:
            raise TileReadError(f"{where} field {field}={value} is not a percentage in [0, 100)")
        if value is not None:
            overlap.append(value / 100)
    stage = child(layer, "stageposition")
    stage_nm = None
    if stage is not None:
        sx, sy = _length(stage, "X", where), _length(stage, "Y", where)
        if sx is None or sy is None:
            raise TileReadError(f"{where} field StagePosition lacks {'X' if sx is None else 'Y'}")
        stage_nm = (sy, sx)
    sizes = {f: _length(layer, f, where) for f in ("pixelSize", "tileHfw")}
    for field, value in sizes.items():
        if value is not None and value <= 0:
            raise TileReadError(f"{where} field {field}={value * 1e-9} m is not > 0")
    return MapsLayer(
        path=path,
        name=name,
        rows=grid["rows"],
        cols=grid["columns"],
        overlap=(overlap[0], overlap[1]) if len(overlap) == 2 else None,
        pixel_size_nm=sizes["pixelSize"],
        tile_hfw_nm=sizes["tileHfw"],
        rotation_deg=_number(child_text(layer, "rotation"), where, "rotation") or 0.0,
        stage_nm=stage_nm,
    )


def read_stitching_data(path: Path) -> tuple[StitchedTile, ...]:
    """Every element of ``StitchingData.xml`` holding an ``UnalignedPosition`` (``X``, ``Y`` in
    px), with its row/col (children or attributes ``Row``, ``Column``) and/or file name."""
    tiles = []
    for element in _read(path).iter():
        position = child(element, "unalignedposition")
        if position is None:
            continue
        file = child_text(element, *_FILE_NAMES) or None
        where = f"StitchingData {str(path)!r}: tile {file or '(no file name)'}"
        x = _number(child_text(position, "x"), where, "UnalignedPosition/X")
        y = _number(child_text(position, "y"), where, "UnalignedPosition/Y")
        if x is None or y is None:
            lacking = "UnalignedPosition/X" if x is None else "UnalignedPosition/Y"
            raise TileReadError(f"{where} lacks field {lacking}")
        row = _number(child_text(element, "row"), where, "Row")
        col = _number(child_text(element, "column", "col"), where, "Column")
        if (row is None or col is None) and file is None:
            raise TileReadError(f"{where} has neither Row and Column nor a file name")
        tiles.append(
            StitchedTile(
                row=None if row is None else int(row),
                col=None if col is None else int(col),
                file=file,
                y_px=y,
                x_px=x,
            )
        )
    return tuple(tiles)


def read_maps_metadata(entries: list[dict[str, Any]]) -> MapsMetadata | None:
    """The Maps project files of a set of Maps raw tiles (every name ``Tile_RRR-CCC...``); None
    for other tiles or when neither file is found."""
    if not entries or not all(TILE_PATTERN.match(e["path"].name) for e in entries):
        return None
    folder = as_path(entries[0]["path"]).parent
    project = find_upwards(folder, PROJECT_FILE, PROJECT_LEVELS)
    stitching = find_upwards(folder, STITCHING_FILE, 1)
    if project is None and stitching is None:
        return None
    layer = None if project is None else read_project_layer(project, folder.resolve().name)
    tiles = () if stitching is None else read_stitching_data(stitching)
    return MapsMetadata(layer=layer, stitching=tiles, stitching_path=stitching)


def stitching_positions(
    maps: MapsMetadata | None, entries: list[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(y, x)`` unaligned positions in px of every entry, matched by file name, else by
    row/col (0-based in the file when any row or column is 0); None, with a warning naming a
    tile, when the file does not cover every tile."""
    if maps is None or not maps.stitching:
        return None
    by_name: dict[str, StitchedTile] = {}
    for t in maps.stitching:
        if t.file:
            base = re.split(r"[\\/]", t.file)[-1].lower()
            by_name.setdefault(base, t)
            by_name.setdefault(base.rsplit(".", 1)[0], t)
    numbered = [t for t in maps.stitching if t.row is not None and t.col is not None]
    base = 1 if any(t.row == 0 or t.col == 0 for t in numbered) else 0
    by_rc = {(int(t.row) + base, int(t.col) + base): t for t in reversed(numbered)}  # type: ignore[arg-type]
    found = []
    for e in entries:
        name = e["path"].name.lower()
        hit = (
            by_name.get(name)
            or by_name.get(name.rsplit(".", 1)[0])
            or by_rc.get((e["row"], e["col"]))
        )
        if hit is None:
            warnings.warn(
                f"StitchingData {str(maps.stitching_path)!r} has no position for tile "
                f"{e['path'].name!r} (row {e['row']}, col {e['col']}): positions come from the "
                "next source",
                UserWarning,
                stacklevel=4,
            )
            return None
        found.append((hit.y_px, hit.x_px))
    arr = np.asarray(found, float)
    return arr[:, 0], arr[:, 1]
