"""Reading a microscope tile grid (Thermo Fisher Maps layout) and its per-tile metadata.

The folder layout and metadata keys are described in ``docs/GRID_FORMAT.md``. Only headers are
read here; pixels are read lazily, tile by tile, by the fusion graph.
"""

from __future__ import annotations

import configparser
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

from mosaicflow.errors import TileReadError, TileSetError

GRID_FILE = "mosaicflow-grid.json"
FEI_TAG = 34682
TILE_PATTERN = re.compile(r"^Tile_(\d{3})-(\d{3})-.*\.tiff?$", re.IGNORECASE)


@dataclass(frozen=True)
class TileSet:
    """A grid of tiles with nominal positions.

    Attributes
    ----------
    folder : Path
        The acquisition folder.
    tiles : pandas.DataFrame
        One row per present tile: ``row``, ``col`` (1-based), ``path``, ``stage_x_nm``,
        ``stage_y_nm`` (tile centre), ``y_px``, ``x_px`` (nominal top-left in mosaic pixels,
        the smallest being 0).
    tile_shape : tuple of int
        ``(height, width)`` of every tile.
    pixel_size_nm : tuple of float
        ``(y, x)`` pixel size in nanometres.
    dtype : numpy.dtype
        Pixel type of the tiles.
    rows, cols : int
        Grid size (including missing tiles).
    missing : tuple of (int, int)
        Grid positions without a tile (1-based ``(row, col)``).
    """

    folder: Path
    tiles: pd.DataFrame
    tile_shape: tuple[int, int]
    pixel_size_nm: tuple[float, float]
    dtype: np.dtype
    rows: int
    cols: int
    missing: tuple[tuple[int, int], ...] = ()

    @property
    def n_pixels(self) -> int:
        """Number of acquired pixels (all tiles, overlaps counted twice)."""
        return int(len(self.tiles) * self.tile_shape[0] * self.tile_shape[1])


def parse_fei_metadata(text: str, *, source: str) -> dict[str, dict[str, str]]:
    """Parse the FEI/Thermo INI block of TIFF tag 34682 into ``{section: {key: value}}``."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text.strip("\x00"))
    except configparser.Error as exc:
        raise TileReadError(f"tile {source!r}: unreadable FEI metadata (tag 34682): {exc}") from exc
    return {s: dict(parser[s]) for s in parser.sections()}


def _metadata_float(meta: dict[str, dict[str, str]], section: str, key: str, source: str) -> float:
    try:
        value = float(meta[section][key])
    except KeyError:
        raise TileReadError(
            f"tile {source!r}: FEI metadata (tag 34682) has no [{section}] {key}"
        ) from None
    except ValueError:
        raise TileReadError(
            f"tile {source!r}: FEI metadata [{section}] {key}={meta[section][key]!r} "
            "is not a number"
        ) from None
    if not np.isfinite(value):
        raise TileReadError(f"tile {source!r}: FEI metadata [{section}] {key} is {value}")
    return value


def _check_complete(tif: tifffile.TiffFile, path: Path) -> None:
    size = path.stat().st_size
    page = tif.pages.first
    end = max(
        (int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)),
        default=0,
    )
    if end > size:
        raise TileReadError(
            f"tile {path.name!r}: truncated TIFF (file is {size} bytes, its image data "
            f"needs {end} bytes)"
        )


def read_tile_header(path: Path) -> dict[str, Any]:
    """Read one tile's shape, dtype, pixel size and stage position without decoding pixels."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape = tuple(int(s) for s in page.shape)
            dtype = np.dtype(page.dtype)
            tag = page.tags.get(FEI_TAG)
            value = None if tag is None else tag.value
            _check_complete(tif, path)
    except TileReadError:
        raise
    except FileNotFoundError:
        raise TileReadError(f"tile {path.name!r}: file not found at {path}") from None
    except Exception as exc:
        raise TileReadError(f"tile {path.name!r}: not a readable TIFF ({exc})") from exc
    if len(shape) != 2:
        raise TileReadError(f"tile {path.name!r}: expected a 2-D greyscale image, got {shape}")
    if value is None:
        raise TileReadError(
            f"tile {path.name!r}: no FEI/Thermo metadata (TIFF tag 34682), so pixel size and "
            "stage position are unknown"
        )
    if isinstance(value, dict):  # tifffile already parsed the INI block
        meta = {
            str(k): {str(a): str(b) for a, b in v.items()}
            for k, v in value.items()
            if isinstance(v, dict)
        }
    else:
        text = value if isinstance(value, str) else bytes(value).decode("latin-1")
        meta = parse_fei_metadata(text, source=path.name)
    px = _metadata_float(meta, "Scan", "PixelWidth", path.name) * 1e9
    py = _metadata_float(meta, "Scan", "PixelHeight", path.name) * 1e9
    if px <= 0 or py <= 0:
        raise TileReadError(f"tile {path.name!r}: non-positive pixel size {py} x {px} nm")
    return {
        "shape": shape,
        "dtype": dtype,
        "pixel_size_nm": (py, px),
        "stage_x_nm": _metadata_float(meta, "Stage", "StageX", path.name) * 1e9,
        "stage_y_nm": _metadata_float(meta, "Stage", "StageY", path.name) * 1e9,
    }


def _tiles_from_grid_file(
    folder: Path, grid_path: Path
) -> tuple[list[tuple[int, int, Path]], dict[str, Any]]:
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
        entries.append((row, col, path))
    return entries, grid


def _tiles_from_names(folder: Path) -> list[tuple[int, int, Path]]:
    entries = []
    for name in sorted(os.listdir(folder)):
        match = TILE_PATTERN.match(name)
        if match:
            entries.append((int(match.group(1)), int(match.group(2)), folder / name))
    return entries


def read_tileset(folder: str | os.PathLike[str]) -> TileSet:
    """Read a tile grid's layout and per-tile metadata (headers only).

    Parameters
    ----------
    folder : path
        A Maps-style acquisition folder: ``Tile_RRR-CCC-*.tif`` files with FEI/Thermo metadata
        in TIFF tag 34682, optionally with a ``mosaicflow-grid.json`` description.

    Returns
    -------
    TileSet

    Raises
    ------
    TileSetError
        The folder does not exist, holds no tiles, or its grid description is inconsistent
        (for example it names a tile file that is missing).
    TileReadError
        A tile is truncated, of another size or type than the others, or lacks the metadata.

    Notes
    -----
    Nominal tile origins come from the stage position of each tile centre:
    ``x = StageX / PixelWidth - (width - 1) / 2`` and, as the stage y axis points up while image
    rows grow down, ``y = -StageY / PixelHeight - (height - 1) / 2``; both are shifted so the
    smallest is 0.
    """
    folder = Path(folder)
    if not folder.exists():
        raise TileSetError(f"acquisition folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise TileSetError(f"acquisition path {str(folder)!r} is not a folder")
    grid_path = folder / GRID_FILE
    grid: dict[str, Any] = {}
    if grid_path.exists():
        entries, grid = _tiles_from_grid_file(folder, grid_path)
    else:
        entries = _tiles_from_names(folder)
    if not entries:
        raise TileSetError(
            f"acquisition folder {str(folder)!r} holds no tiles (expected files named "
            f"Tile_RRR-CCC-*.tif or a {GRID_FILE})"
        )
    seen: dict[tuple[int, int], Path] = {}
    for row, col, path in entries:
        if (row, col) in seen:
            raise TileSetError(
                f"acquisition folder {str(folder)!r}: tiles {seen[(row, col)].name!r} and "
                f"{path.name!r} are both at row {row}, col {col}"
            )
        seen[(row, col)] = path

    headers = [read_tile_header(path) for _, _, path in entries]
    ref = headers[0]
    expected_shape = ref["shape"]
    if "tile_height" in grid and "tile_width" in grid:
        expected_shape = (int(grid["tile_height"]), int(grid["tile_width"]))
    for (_, _, path), head in zip(entries, headers, strict=True):
        if head["shape"] != expected_shape:
            raise TileReadError(
                f"tile {path.name!r}: size {head['shape'][0]}x{head['shape'][1]} px, expected "
                f"{expected_shape[0]}x{expected_shape[1]} px like the rest of the grid"
            )
        if head["dtype"] != ref["dtype"]:
            raise TileReadError(
                f"tile {path.name!r}: pixel type {head['dtype']}, expected {ref['dtype']}"
            )
        if not np.allclose(head["pixel_size_nm"], ref["pixel_size_nm"], rtol=1e-6):
            raise TileReadError(
                f"tile {path.name!r}: pixel size {head['pixel_size_nm']} nm differs from "
                f"{ref['pixel_size_nm']} nm of {entries[0][2].name!r}"
            )
    py, px = ref["pixel_size_nm"]
    h, w = expected_shape
    table = pd.DataFrame(
        {
            "row": [e[0] for e in entries],
            "col": [e[1] for e in entries],
            "path": [str(e[2]) for e in entries],
            "stage_x_nm": [hd["stage_x_nm"] for hd in headers],
            "stage_y_nm": [hd["stage_y_nm"] for hd in headers],
        }
    )
    # pixel centres sit at integer coordinates, so a tile's centre is origin + (size - 1) / 2
    y = -table["stage_y_nm"] / py - (h - 1) / 2
    x = table["stage_x_nm"] / px - (w - 1) / 2
    table["y_px"] = y - y.min()
    table["x_px"] = x - x.min()
    table = table.sort_values(["row", "col"], ignore_index=True)
    rows = int(grid.get("rows", table["row"].max()))
    cols = int(grid.get("cols", table["col"].max()))
    present = set(seen)
    missing = tuple(
        (r, c) for r in range(1, rows + 1) for c in range(1, cols + 1) if (r, c) not in present
    )
    return TileSet(
        folder=folder,
        tiles=table,
        tile_shape=(h, w),
        pixel_size_nm=(py, px),
        dtype=np.dtype(ref["dtype"]),
        rows=rows,
        cols=cols,
        missing=missing,
    )


def read_tile(path: str | os.PathLike[str], *, shape: tuple[int, int], dtype: Any) -> np.ndarray:
    """Decode one tile's pixels, checking its size and type; errors name the tile."""
    path = Path(path)
    try:
        data = tifffile.imread(path, key=0)
    except FileNotFoundError:
        raise TileReadError(f"tile {path.name!r}: file not found at {path}") from None
    except Exception as exc:
        raise TileReadError(f"tile {path.name!r}: cannot decode pixels ({exc})") from exc
    if data.shape != tuple(shape):
        raise TileReadError(f"tile {path.name!r}: size {data.shape}, expected {tuple(shape)}")
    if data.dtype != np.dtype(dtype):
        raise TileReadError(f"tile {path.name!r}: pixel type {data.dtype}, expected {dtype}")
    return data
