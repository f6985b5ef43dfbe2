"""Reading a microscope tile set of any common image format into one :class:`TileSet`:
which file is which tile, nominal positions, pixel size, data-bar crop, and validation.

The inputs accepted, the precedence of position sources and the options are described in
``docs/GRID_FORMAT.md``. Only headers are read here; pixels are read lazily, tile by tile, by the
fusion graph (:func:`read_tile`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.errors import TileReadError, TileSetError
from mosaicflow.io.images import (
    FEI_TAG,
    is_image,
    parse_fei_metadata,
    read_image_header,
    read_tile,
)
from mosaicflow.io.layouts import (
    GRID_FILE,
    TILE_PATTERN,
    Entry,
    assign_rows_cols,
    image_files,
    is_layout_file,
    maps_entries,
    read_fiji,
    read_grid_file,
    read_layout_csv,
    sorted_entries,
)
from mosaicflow.io.maps_project import read_maps_metadata
from mosaicflow.io.positions import (
    OPTIONS_HINT,
    check_stage_grid,
    crop_rows,
    nominal_positions,
    pixel_size,
)
from mosaicflow.io.remote import RemotePath, as_path, check_access, is_url

__all__ = [
    "FEI_TAG",
    "GRID_FILE",
    "MISSING_POLICIES",
    "TILE_PATTERN",
    "TileSet",
    "parse_fei_metadata",
    "read_tile",
    "read_tileset",
]

MISSING_POLICIES = ("error", "blank")
#: Overlaps between neighbours outside this range are warned about.
OVERLAP_RANGE = (0.02, 0.5)


@dataclass(frozen=True)
class TileSet:
    """A grid of tiles with nominal positions.

    Attributes
    ----------
    folder : Path or RemotePath
        The acquisition folder (a :class:`~mosaicflow.io.remote.RemotePath` for a URL).
    tiles : pandas.DataFrame
        One row per present tile: ``row``, ``col`` (1-based), ``path``, ``stage_x_nm``,
        ``stage_y_nm`` (as the source gives them: FEI tile centre with y up, or a layout CSV's
        values; NaN where the source has none), ``y_px``, ``x_px`` (nominal top-left in mosaic
        pixels, the smallest being 0), ``stage_outlier`` (the tile's measured position was off
        the row/col grid model and was replaced by the model's; ``docs/GRID_FORMAT.md``).
    tile_shape : tuple of int
        ``(height, width)`` of every tile after the data-bar crop.
    pixel_size_nm : tuple of float
        ``(y, x)`` pixel size in nanometres.
    dtype : numpy.dtype
        Pixel type of the tiles.
    rows, cols : int
        Grid size (including missing tiles).
    missing : tuple of (int, int)
        Grid positions without a tile (1-based ``(row, col)``), left uncovered.
    crop_bottom : int
        Rows cut from the bottom of every stored tile (the SEM data bar) by :func:`read_tile`.
    position_source : str
        Where the nominal positions come from: ``layout-stage``, ``fiji``,
        ``maps-stitchingdata``, ``fei-stage``, ``tem-stage``, ``zeiss-stage``, ``grid-model`` or
        ``maps-project-grid`` (``docs/GRID_FORMAT.md``).
    storage_options : dict
        fsspec options (endpoint, credentials) of tiles at URLs. Every URL in ``tiles.path``
        becomes a :class:`~mosaicflow.io.remote.RemotePath` carrying them, so the tasks that
        read tiles on the workers open them the same way; never written by :meth:`to_meta`.
    """

    folder: Path
    tiles: pd.DataFrame
    tile_shape: tuple[int, int]
    pixel_size_nm: tuple[float, float]
    dtype: np.dtype
    rows: int
    cols: int
    missing: tuple[tuple[int, int], ...] = ()
    crop_bottom: int = 0
    position_source: str = "fei-stage"
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.folder, RemotePath) and not self.storage_options:
            object.__setattr__(self, "storage_options", dict(self.folder.storage_options))
        if "path" not in self.tiles or not any(is_url(p) for p in self.tiles["path"]):
            return  # local tiles: the table is kept as given
        options = self.storage_options or None
        paths = [RemotePath(p, options) if is_url(p) else p for p in self.tiles["path"]]
        # object dtype: a string column would turn the paths back into plain text
        column = pd.Series(paths, index=self.tiles.index, dtype=object)
        object.__setattr__(self, "tiles", self.tiles.assign(path=column))

    def to_meta(self) -> dict[str, Any]:
        """Everything but the tiles table and the storage options, as JSON-ready values (the
        run store keeps it)."""
        folder = self.folder
        return {
            "folder": folder.as_posix() if isinstance(folder, RemotePath) else str(folder),
            "tile_shape": list(self.tile_shape),
            "pixel_size_nm": list(self.pixel_size_nm),
            "dtype": str(self.dtype),
            "rows": self.rows,
            "cols": self.cols,
            "missing": [list(m) for m in self.missing],
            "crop_bottom": self.crop_bottom,
            "position_source": self.position_source,
        }

    @classmethod
    def from_meta(
        cls,
        info: dict[str, Any],
        tiles: pd.DataFrame,
        storage_options: dict[str, Any] | None = None,
    ) -> TileSet:
        """The tile set :meth:`to_meta` described, with its tiles table; tiles at URLs open
        with ``storage_options``, by default those registered for the folder
        (:func:`mosaicflow.io.remote.register_options`)."""
        folder = info["folder"]
        return cls(
            folder=RemotePath(folder, storage_options) if is_url(folder) else Path(folder),
            tiles=tiles,
            tile_shape=(int(info["tile_shape"][0]), int(info["tile_shape"][1])),
            pixel_size_nm=(float(info["pixel_size_nm"][0]), float(info["pixel_size_nm"][1])),
            dtype=np.dtype(info["dtype"]),
            rows=int(info["rows"]),
            cols=int(info["cols"]),
            missing=tuple((int(m[0]), int(m[1])) for m in info["missing"]),
            crop_bottom=int(info.get("crop_bottom", 0)),
            position_source=str(info.get("position_source", "fei-stage")),
            storage_options=dict(storage_options or {}),
        )

    @property
    def n_pixels(self) -> int:
        """Number of acquired pixels (all tiles, overlaps counted twice)."""
        return int(len(self.tiles) * self.tile_shape[0] * self.tile_shape[1])


def _check_options(
    pixel_size_nm: float | None,
    grid: tuple[int, int] | None,
    overlap: tuple[float, float] | None,
    crop_bottom: int | None,
    missing_tiles: str,
) -> None:
    if pixel_size_nm is not None and not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise TileSetError(f"option pixel_size_nm must be a number > 0, got {pixel_size_nm!r}")
    if grid is not None and (len(grid) != 2 or min(int(g) for g in grid) < 1):
        raise TileSetError(f"option grid must be (rows, cols) with both >= 1, got {grid!r}")
    if overlap is not None and not all(0 <= v < 1 for v in overlap):
        raise TileSetError(f"option overlap must be in [0, 1), got {overlap!r}")
    if crop_bottom is not None and crop_bottom < 0:
        raise TileSetError(f"option crop_bottom must be >= 0 px, got {crop_bottom!r}")
    if missing_tiles not in MISSING_POLICIES:
        raise TileSetError(
            f"option missing_tiles must be one of {MISSING_POLICIES}, got {missing_tiles!r}"
        )


def _entries(
    path: Path, layout: Path | None, grid: tuple[int, int] | None
) -> tuple[Path, list[Entry], dict[str, Any], str]:
    """The folder, the tile entries, a grid description (JSON) and the kind of layout."""
    if layout is None and is_layout_file(path):
        layout = path
    if layout is not None:
        if not layout.is_file():
            raise TileSetError(f"option layout: {str(layout)!r} is not a file")
        folder = path if path.is_dir() else layout.parent
        if layout.suffix.lower() == ".csv":
            return folder, read_layout_csv(layout), {}, "csv"
        return folder, read_fiji(layout), {}, "fiji"
    if path.is_file():
        if not is_image(path):
            raise TileSetError(
                f"input {str(path)!r} is neither an image (TIFF, PNG, JPEG, BMP), a layout "
                "(.csv, TileConfiguration.txt) nor a folder"
            )
        return path.parent, [{"row": 1, "col": 1, "path": path}], {}, "single"
    if (path / GRID_FILE).exists():
        entries, desc = read_grid_file(path, path / GRID_FILE)
        return path, entries, desc, "grid-file"
    entries = maps_entries(path)
    if entries:
        return path, entries, {}, "maps"
    if grid is not None:
        return path, sorted_entries(path, grid), {}, "sorted"
    files = image_files(path)
    if len(files) == 1:
        return path, [{"row": 1, "col": 1, "path": files[0]}], {}, "single"
    if not files:
        raise TileSetError(
            f"acquisition folder {str(path)!r} holds no tiles (expected Maps tiles "
            f"Tile_RRR-CCC-*.tif, a {GRID_FILE}, or image files with a layout or grid option)"
        )
    raise TileSetError(
        f"acquisition folder {str(path)!r} holds {len(files)} image files but no Maps tile names: "
        f"{OPTIONS_HINT}"
    )


def _relative_name(path: Path, folder: Path) -> str:
    """The tile's file name relative to the acquisition folder (its absolute path if outside)."""
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _warn_overlap(table: pd.DataFrame, shape: tuple[int, int], source: str) -> None:
    """Warn when the median overlap of row or column neighbours is outside 2-50 %."""
    by_rc = {
        (int(r), int(c)): (y, x) for r, c, y, x in table[["row", "col", "y_px", "x_px"]].values
    }
    for axis, (dr, dc), size in (("vertical", (1, 0), shape[0]), ("horizontal", (0, 1), shape[1])):
        steps = [
            abs(by_rc[(r + dr, c + dc)][axis == "horizontal"] - pos[axis == "horizontal"])
            for (r, c), pos in by_rc.items()
            if (r + dr, c + dc) in by_rc
        ]
        if not steps:
            continue
        ov = 1.0 - float(np.median(steps)) / size
        if not OVERLAP_RANGE[0] <= ov <= OVERLAP_RANGE[1]:
            warnings.warn(
                f"tile set {source}: {axis} overlap between neighbours is {ov:.1%}, outside "
                f"{OVERLAP_RANGE[0]:.0%}-{OVERLAP_RANGE[1]:.0%}: check the layout or overlap",
                UserWarning,
                stacklevel=3,
            )


def read_tileset(
    path: str | os.PathLike[str],
    *,
    layout: str | os.PathLike[str] | None = None,
    pixel_size_nm: float | None = None,
    grid: tuple[int, int] | None = None,
    overlap: float | tuple[float, float] | None = None,
    crop_bottom: int | None = None,
    missing_tiles: str = "error",
    storage_options: dict[str, Any] | None = None,
) -> TileSet:
    """Read a tile set's layout and per-tile headers (pixels are not decoded).

    Parameters
    ----------
    path : path or str
        A local path or an fsspec URL (``s3://bucket/acq``) of an acquisition folder (Maps
        tiles ``Tile_{row}-{col}-{z}_{c}-{t}*.tif``, a ``mosaicflow-grid.json``, or image
        files with ``grid``), a layout file, or one image (a 1x1 grid).
    layout : path, optional
        A CSV ``file,row,col[,stage_y_nm,stage_x_nm,pixel_size_nm]`` or a Fiji
        ``TileConfiguration.txt``; file names relative to the layout.
    pixel_size_nm : float, optional
        Pixel size; overrides the layout's column, the tile metadata and a Maps project.
    grid : (rows, cols), optional
        Grid size; without a layout or Maps names the image files are taken in sorted name
        order, row by row.
    overlap : float or (float, float), optional
        Fraction of a tile shared with its neighbour, for the grid model (origins = grid index
        x tile size x (1 - overlap)) when no stage position is known; a pair gives the vertical
        (tile below) and horizontal (tile to the right) overlaps.
    crop_bottom : int, optional
        Rows of data bar to cut from the bottom of every tile (default: where FEI
        ``[Image] ResolutionY`` is less than the stored height, else none).
    missing_tiles : {"error", "blank"}
        A grid position without a tile (not declared missing by a grid description) is an error
        naming the first ones, or, with ``"blank"``, recorded in ``missing`` and left uncovered.
    storage_options : dict, optional
        fsspec options (``endpoint_url``, ``key``, ``secret``, ...) for a ``path`` or
        ``layout`` at a URL; the tile set carries them to the tasks reading its tiles.

    Raises
    ------
    TileSetError
        Bad options, a missing path, no tiles, a layout naming absent files, duplicate
        (row, col), missing tiles under ``missing_tiles="error"``.
    TileReadError
        A tile unreadable, truncated, of another size or type than the others, pixel sizes that
        disagree, or no metadata and no options that replace it.

    Notes
    -----
    FEI stage positions are tile centres with y up: ``x = StageX / PixelWidth - (width - 1) / 2``,
    ``y = -StageY / PixelHeight - (height - 1) / 2``. Layout stage coordinates increase along
    image rows and columns: ``y = stage_y_nm / pixel``. Zeiss (tag 34118) and TEM XML (tag
    34683) stage positions are read like FEI's. For Maps raw tiles, ``MapsProject.xml`` and
    ``StitchingData.xml`` beside the folder add positions, a layer rotation, the grid size and a
    pixel size (precedence in ``docs/GRID_FORMAT.md``). All origins are shifted so the smallest
    is 0. A median neighbour overlap outside 2-50 % is warned about. Measured positions (stage,
    ``StitchingData.xml``) more than a quarter tile from the row/col grid model are warned about
    and replaced by the model's (:func:`~mosaicflow.io.positions.check_stage_grid`).
    """
    if overlap is not None:
        overlap = (overlap, overlap) if np.ndim(overlap) == 0 else tuple(overlap)
        if len(overlap) != 2:
            raise TileSetError(f"option overlap must be one fraction or two, got {overlap!r}")
        overlap = (float(overlap[0]), float(overlap[1]))
    _check_options(pixel_size_nm, grid, overlap, crop_bottom, missing_tiles)
    path = as_path(path, storage_options)
    if isinstance(path, RemotePath):
        found = check_access(
            path.fs, path.fs_path, path.as_posix(), "acquisition folder", TileSetError
        )
    else:
        found = path.exists()
    if not found:
        raise TileSetError(f"acquisition folder {str(path)!r} does not exist")
    grid = None if grid is None else (int(grid[0]), int(grid[1]))
    layout_path = None if layout is None else as_path(layout, storage_options)
    folder, entries, desc, kind = _entries(path, layout_path, grid)
    headers = [read_image_header(e["path"]) for e in entries]
    ref = headers[0]
    expected = ref["shape"]
    crop = crop_rows(ref, crop_bottom, entries[0]["path"].name)
    if "tile_height" in desc and "tile_width" in desc:
        expected = (int(desc["tile_height"]) + crop, int(desc["tile_width"]))
    for e, head in zip(entries, headers, strict=True):
        name = e["path"].name
        if head["shape"] != expected:
            raise TileReadError(
                f"tile {name!r}: size {head['shape'][0]}x{head['shape'][1]} px, expected "
                f"{expected[0]}x{expected[1]} px like the rest of the grid"
            )
        if head["dtype"] != ref["dtype"]:
            raise TileReadError(
                f"tile {name!r}: pixel type {head['dtype']}, expected {ref['dtype']}"
            )
        if (bar := crop_rows(head, crop_bottom, name)) != crop:
            raise TileReadError(f"tile {name!r}: data bar of {bar} rows, expected {crop}")
    if crop >= expected[0]:
        raise TileSetError(
            f"option crop_bottom: {crop} rows leave nothing of {expected[0]}-row tiles"
        )
    shape = (expected[0] - crop, expected[1])
    if kind == "fiji":
        assign_rows_cols(entries, shape)
    seen: dict[tuple[int, int], Path] = {}
    for e in entries:
        rc = (e["row"], e["col"])
        if rc in seen:
            raise TileSetError(
                f"tile set {str(path)!r}: tiles {seen[rc].name!r} and {e['path'].name!r} are "
                f"both at row {rc[0]}, col {rc[1]}"
            )
        seen[rc] = e["path"]
    maps = read_maps_metadata(entries)
    pixel = pixel_size(entries, headers, pixel_size_nm, maps, expected[1])
    y, x, sy, sx, source = nominal_positions(entries, headers, shape, pixel, overlap, kind, maps)
    y, x, stage_outlier = check_stage_grid(entries, y, x, shape, pixel, source)
    table = pd.DataFrame(
        {
            "file": [_relative_name(e["path"], folder) for e in entries],
            "row": [e["row"] for e in entries],
            "col": [e["col"] for e in entries],
            "path": [str(e["path"]) for e in entries],
            "stage_x_nm": sx,
            "stage_y_nm": sy,
            "y_px": y - y.min(),
            "x_px": x - x.min(),
            "stage_outlier": stage_outlier,
        }
    ).sort_values(["row", "col"], ignore_index=True)
    layer = None if maps is None else maps.layer
    rows = int(grid[0] if grid else desc.get("rows", (layer and layer.rows) or table["row"].max()))
    cols = int(grid[1] if grid else desc.get("cols", (layer and layer.cols) or table["col"].max()))
    outside = table[(table["row"] > rows) | (table["col"] > cols)]
    if len(outside):
        raise TileSetError(
            f"tile {Path(outside['path'].iloc[0]).name!r} is at row {outside['row'].iloc[0]}, "
            f"col {outside['col'].iloc[0]}, outside the {rows}x{cols} grid"
        )
    missing = tuple(
        (r, c) for r in range(1, rows + 1) for c in range(1, cols + 1) if (r, c) not in seen
    )
    declared = {tuple(int(v) for v in m) for m in desc.get("missing", [])}
    undeclared = [m for m in missing if m not in declared]
    if undeclared and missing_tiles == "error":
        shown = ", ".join(f"row {r} col {c}" for r, c in undeclared[:5])
        more = f" and {len(undeclared) - 5} more" if len(undeclared) > 5 else ""
        raise TileSetError(
            f"tile set {str(path)!r}: {len(undeclared)} of {rows * cols} grid positions have no "
            f"tile ({shown}{more}); give missing_tiles='blank' (--missing-tiles blank) to leave "
            "them uncovered"
        )
    if undeclared:
        warnings.warn(
            f"tile set {str(path)!r}: {len(undeclared)} grid positions have no tile and are left "
            "uncovered",
            UserWarning,
            stacklevel=2,
        )
    _warn_overlap(table, shape, repr(str(path)))
    return TileSet(
        folder=folder,
        tiles=table,
        tile_shape=shape,
        pixel_size_nm=pixel,
        dtype=np.dtype(ref["dtype"]),
        rows=rows,
        cols=cols,
        missing=missing,
        crop_bottom=crop,
        position_source=source,
        storage_options=dict(getattr(path, "storage_options", {})),
    )
