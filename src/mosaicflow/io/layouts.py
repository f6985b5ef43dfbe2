"""Which file is which tile: layout CSVs, Fiji ``TileConfiguration.txt``, the
``mosaicflow-grid.json`` description, Maps raw tile names, and plain folders in name order.

Each reader returns a list of entries ``{"row", "col", "path", ...}`` (1-based row and column)
plus, where the source gives them, ``stage_y_nm``/``stage_x_nm``/``pixel_size_nm`` (CSV) or
``y_px``/``x_px`` (Fiji). ``docs/GRID_FORMAT.md`` describes every input.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

from mosaicflow.errors import TileSetError
from mosaicflow.io.images import is_image
from mosaicflow.io.remote import as_path, is_url, listdir

GRID_FILE = "mosaicflow-grid.json"
#: Maps raw tile names: ``Tile_{row}-{col}-{z}_{c}-{t}`` and any suffix (``.s0001_e00``).
TILE_PATTERN = re.compile(
    r"^Tile_(\d+)-(\d+)(?:-(\d+)(?:_(\d+))?(?:-(\d+))?)?(.*?)\.tiff?$", re.IGNORECASE
)
CSV_OPTIONAL = ("stage_y_nm", "stage_x_nm", "pixel_size_nm")

Entry = dict[str, Any]


def is_layout_file(path: Path) -> bool:
    """A layout CSV or a Fiji tile configuration, told by the name."""
    return path.is_file() and (
        path.suffix.lower() == ".csv" or path.name.lower().startswith("tileconfiguration")
    )


def _tile_path(base: Path, name: str, layout: Path, where: str) -> Path:
    if is_url(name):  # a URL opens with the options of the layout's own storage
        path = as_path(name, getattr(base, "storage_options", None))
    else:
        path = Path(name) if Path(name).is_absolute() else base / name
    if not path.is_file():
        raise TileSetError(f"layout {str(layout)!r} {where} names {name!r}, but {path} is absent")
    return path


def _number(text: str, layout: Path, line: int, column: str, kind: type = float) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise TileSetError(
            f"layout {str(layout)!r} line {line}: {column}={text!r} is not a number"
        ) from None
    if kind is float and not math.isfinite(value):
        raise TileSetError(f"layout {str(layout)!r} line {line}: {column} is {value}")
    return value


def read_layout_csv(layout: Path) -> list[Entry]:
    """A CSV with header ``file,row,col`` and optional ``stage_y_nm,stage_x_nm,pixel_size_nm``;
    paths relative to the CSV, row and col 1-based."""
    try:
        with layout.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TileSetError(f"layout {str(layout)!r}: unreadable CSV ({exc})") from exc
    need = {"file", "row", "col"}
    if not need <= set(header):
        raise TileSetError(
            f"layout {str(layout)!r}: header {header} lacks {sorted(need - set(header))} "
            "(expected file,row,col[,stage_y_nm,stage_x_nm,pixel_size_nm])"
        )
    if ("stage_y_nm" in header) != ("stage_x_nm" in header):
        raise TileSetError(f"layout {str(layout)!r}: give both stage_y_nm and stage_x_nm or none")
    entries = []
    for i, r in enumerate(rows, start=2):
        entry: Entry = {
            "row": _number(r["row"], layout, i, "row", int),
            "col": _number(r["col"], layout, i, "col", int),
            "path": _tile_path(layout.parent, r["file"], layout, f"line {i}"),
        }
        if entry["row"] < 1 or entry["col"] < 1:
            raise TileSetError(f"layout {str(layout)!r} line {i}: row and col are 1-based")
        for key in CSV_OPTIONAL:
            if key in header and r.get(key, "") != "":
                entry[key] = _number(r[key], layout, i, key)
        entries.append(entry)
    if not entries:
        raise TileSetError(f"layout {str(layout)!r} lists no tiles")
    return entries


_FIJI_LINE = re.compile(r"^(.+?)\s*;\s*[^;]*;\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)\s*$")


def read_fiji(layout: Path) -> list[Entry]:
    """A Fiji/ImageJ ``TileConfiguration.txt`` (``dim = 2``; ``file; ; (x, y)`` in pixels).

    Rows and columns are assigned afterwards from the positions (:func:`assign_rows_cols`).
    """
    try:
        lines = layout.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TileSetError(f"layout {str(layout)!r}: unreadable ({exc})") from exc
    entries = []
    for i, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.replace(" ", "").lower().startswith("dim="):
            if line.split("=", 1)[1].strip() != "2":
                raise TileSetError(f"layout {str(layout)!r} line {i}: only dim = 2 is read")
            continue
        match = _FIJI_LINE.match(line)
        if match is None:
            raise TileSetError(
                f"layout {str(layout)!r} line {i}: expected 'file; ; (x, y)', got {line!r}"
            )
        entries.append(
            {
                "path": _tile_path(layout.parent, match.group(1), layout, f"line {i}"),
                "x_px": _number(match.group(2), layout, i, "x"),
                "y_px": _number(match.group(3), layout, i, "y"),
            }
        )
    if not entries:
        raise TileSetError(f"layout {str(layout)!r} lists no tiles")
    return entries


def _ranks(values: list[float], gap: float) -> list[int]:
    """1-based cluster index of each value: a new cluster starts after a gap over ``gap``."""
    order = sorted(set(values))
    index, rank, last = {}, 0, -math.inf
    for v in order:
        if v - last > gap:
            rank += 1
        index[v], last = rank, v
    return [index[v] for v in values]


def assign_rows_cols(entries: list[Entry], tile_shape: tuple[int, int]) -> None:
    """Rows and columns of pixel-positioned tiles: positions closer than half a tile share one."""
    rows = _ranks([e["y_px"] for e in entries], tile_shape[0] / 2)
    cols = _ranks([e["x_px"] for e in entries], tile_shape[1] / 2)
    for e, r, c in zip(entries, rows, cols, strict=True):
        e["row"], e["col"] = r, c


def read_grid_file(folder: Path, grid_path: Path) -> tuple[list[Entry], dict[str, Any]]:
    """The tiles listed by a ``mosaicflow-grid.json`` and the description itself."""
    try:
        grid = json.loads(grid_path.read_text())
    except (OSError, ValueError) as exc:
        raise TileSetError(f"grid description {str(grid_path)!r}: unreadable JSON ({exc})") from exc
    for key in ("rows", "cols", "tiles"):
        if key not in grid:
            raise TileSetError(f"grid description {str(grid_path)!r}: missing key {key!r}")
    entries = []
    for item in grid["tiles"]:
        try:
            row, col, name = int(item["row"]), int(item["col"]), str(item["file"])
        except (KeyError, TypeError, ValueError):
            raise TileSetError(
                f"grid description {str(grid_path)!r}: tile entry {item!r} needs row, col, file"
            ) from None
        path = folder / name
        if not path.is_file():
            raise TileSetError(
                f"grid description {str(grid_path)!r} names tile {name!r} (row {row}, col {col}) "
                f"but {str(path)!r} does not exist"
            )
        entries.append({"row": row, "col": col, "path": path})
    return entries, grid


def maps_entries(folder: Path) -> list[Entry]:
    """Maps raw tiles by name; of several z/channel/time/suffix groups the first (sorted) is
    read and a warning names the others."""
    groups: dict[tuple[int, int, int, str], list[Entry]] = {}
    for name in sorted(listdir(folder)):
        match = TILE_PATTERN.match(name)
        if match is None:
            continue
        z, c, t = (int(g) if g is not None else 0 for g in match.group(3, 4, 5))
        key = (z, c, t, match.group(6))
        groups.setdefault(key, []).append(
            {"row": int(match.group(1)), "col": int(match.group(2)), "path": folder / name}
        )
    if not groups:
        return []
    keys = sorted(groups)
    if len(keys) > 1:
        shown = ", ".join(f"z={z} c={c} t={t} suffix={s!r}" for z, c, t, s in keys)
        warnings.warn(
            f"acquisition folder {str(folder)!r} holds {len(keys)} Maps tile groups ({shown}); "
            f"reading the first only (z={keys[0][0]} c={keys[0][1]} t={keys[0][2]} "
            f"suffix={keys[0][3]!r}): give a layout to choose another",
            UserWarning,
            stacklevel=3,
        )
    return groups[keys[0]]


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder in sorted name order."""
    return [folder / n for n in sorted(listdir(folder)) if is_image(folder / n)]


def sorted_entries(folder: Path, grid: tuple[int, int]) -> list[Entry]:
    """Image files in sorted name order, assigned row by row to a ``rows x cols`` grid."""
    rows, cols = grid
    files = image_files(folder)
    if len(files) != rows * cols:
        raise TileSetError(
            f"acquisition folder {str(folder)!r} holds {len(files)} image files, but grid "
            f"{rows}x{cols} needs {rows * cols} (taken in sorted name order, row by row); give a "
            "layout (CSV or TileConfiguration.txt) for an incomplete or differently ordered grid"
        )
    return [
        {"row": i // cols + 1, "col": i % cols + 1, "path": path} for i, path in enumerate(files)
    ]
