"""Nominal tile positions, pixel size and data-bar crop of a tile set, each taken from the first
source that gives it (options, layout, Maps project files, per-tile vendor metadata, a grid
model); the precedence is described in ``docs/GRID_FORMAT.md``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from mosaicflow.errors import TileReadError
from mosaicflow.io.images import metadata_float
from mosaicflow.io.layouts import Entry
from mosaicflow.io.maps_project import MapsMetadata, stitching_positions
from mosaicflow.io.vendor_metadata import (
    tem_pixel_size_nm,
    tem_stage_nm,
    zeiss_pixel_size_nm,
    zeiss_stage_nm,
    zeiss_store_height,
)

__all__ = [
    "OPTIONS_HINT",
    "STAGE_OUTLIER_FRACTION",
    "check_stage_grid",
    "crop_rows",
    "grid_model",
    "nominal_positions",
    "pixel_size",
    "tile_stage_nm",
]

OPTIONS_HINT = (
    "give pixel_size_nm (--pixel-size) and either a layout (--layout: a file,row,col CSV or a "
    "Fiji TileConfiguration.txt) or grid=(rows, cols) (--grid ROWSxCOLS) with overlap (--overlap)"
)
_TAGS = "FEI/Thermo TIFF tag 34682 or 34683, Zeiss tag 34118"
#: Relative difference tolerated between a tile's pixel size and the Maps project's.
PROJECT_RTOL = 1e-3
#: Position sources measured per tile, and so checked against the grid model.
STAGE_SOURCES = (
    "layout-stage",
    "maps-stitchingdata",
    "fei-stage",
    "tem-stage",
    "zeiss-stage",
    "stage-metadata",
)
#: A tile further than this fraction of the tile side (along either axis) from its grid-model
#: position is a stage outlier: beyond any stage error (which registration corrects), short of
#: the whole step a swapped or corrupted position makes.
STAGE_OUTLIER_FRACTION = 0.25
#: With more outliers than this share of the tiles the grid model itself is not trusted.
MAX_OUTLIER_SHARE = 1 / 3
_SHOWN = 5


def crop_rows(head: dict[str, Any], option: int | None, name: str) -> int:
    """Rows of data bar under the image: the option, else where the metadata's image height
    (FEI ``[Image] ResolutionY``, Zeiss ``DP_IMAGE_STORE``) is less than the stored height,
    else 0."""
    if option is not None:
        return int(option)
    res_y = 0
    if head["fei"]:
        try:
            res_y = int(float(head["fei"]["Image"]["ResolutionY"]))
        except (KeyError, ValueError):
            res_y = 0
    elif head.get("zeiss"):
        res_y = zeiss_store_height(head["zeiss"], source=name)
    return max(head["shape"][0] - res_y, 0) if 0 < res_y else 0


def tile_pixel_size_nm(head: dict[str, Any], name: str) -> tuple[float, float] | None:
    """``(y, x)`` pixel size from the tile's own metadata (FEI INI, else TEM XML, else Zeiss),
    None when it has none."""
    if head["fei"] is not None:
        py = metadata_float(head["fei"], "Scan", "PixelHeight", name) * 1e9
        return py, metadata_float(head["fei"], "Scan", "PixelWidth", name) * 1e9
    found = None
    if head.get("tem"):
        found = tem_pixel_size_nm(head["tem"], source=name)
    if found is None and head.get("zeiss"):
        found = zeiss_pixel_size_nm(head["zeiss"], source=name)
    return found


def tile_stage_nm(head: dict[str, Any], name: str) -> tuple[float, float, str] | None:
    """``(y, x, source)``: the stage position of the tile centre in nm with y up, and the
    position source it makes (``fei-stage``, ``tem-stage``, ``zeiss-stage``); None without
    one."""
    if head["fei"] is not None:
        if "Stage" not in head["fei"]:
            return None
        sy = metadata_float(head["fei"], "Stage", "StageY", name) * 1e9
        return sy, metadata_float(head["fei"], "Stage", "StageX", name) * 1e9, "fei-stage"
    readers = (("tem", tem_stage_nm, "tem-stage"), ("zeiss", zeiss_stage_nm, "zeiss-stage"))
    for key, read, source in readers:
        if head.get(key):
            found = read(head[key], source=name)
            if found is not None:
                return found[0], found[1], source
    return None


def pixel_size(
    entries: list[Entry],
    headers: list[dict[str, Any]],
    option: float | None,
    maps: MapsMetadata | None,
    width: int,
) -> tuple[float, float]:
    """The option, else the layout's ``pixel_size_nm`` column, else every tile's metadata, else
    the Maps project's ``pixelSize`` (or ``tileHfw / width``); tiles must agree."""
    if option is not None:
        return float(option), float(option)
    if all("pixel_size_nm" in e for e in entries):
        sizes = [(e["pixel_size_nm"], e["pixel_size_nm"]) for e in entries]
        return _agreeing(entries, sizes, sizes[0], repr(entries[0]["path"].name), 1e-6)
    own = [tile_pixel_size_nm(h, e["path"].name) for e, h in zip(entries, headers, strict=True)]
    if all(s is not None for s in own):
        sizes = [s for s in own if s is not None]
        return _agreeing(entries, sizes, sizes[0], repr(entries[0]["path"].name), 1e-6)
    layer = None if maps is None else maps.layer
    project = None if layer is None else layer.pixel_size_for(width)
    if layer is None or project is None:
        lacking = next(e for e, s in zip(entries, own, strict=True) if s is None)
        raise TileReadError(
            f"tile {lacking['path'].name!r}: no FEI/Thermo metadata ({_TAGS}) with a pixel size, "
            "no MapsProject.xml pixelSize/tileHfw and no pixel size from the options, so pixel "
            f"size and stage position are unknown: {OPTIONS_HINT}"
        )
    # tiles carrying their own pixel size must agree with the project (rounding allowed)
    pairs = [(e, s) for e, s in zip(entries, own, strict=True) if s is not None]
    return _agreeing(
        [e for e, _ in pairs],
        [s for _, s in pairs],
        (project, project),
        f"Maps project {str(layer.path)!r}",
        PROJECT_RTOL,
    )


def _agreeing(
    entries: list[Entry],
    sizes: list[tuple[float, float]],
    ref: tuple[float, float],
    ref_label: str,
    rtol: float,
) -> tuple[float, float]:
    """``ref`` after checking it and every tile's size are positive and agree within ``rtol``;
    ``ref_label`` names where ``ref`` comes from."""
    for e, size in zip(entries, sizes, strict=True):
        if min(size) <= 0:
            raise TileReadError(
                f"tile {e['path'].name!r}: non-positive pixel size {size[0]} x {size[1]} nm"
            )
        if not np.allclose(size, ref, rtol=rtol, atol=0):
            raise TileReadError(
                f"tile {e['path'].name!r}: pixel size {size} nm differs from {ref} nm of "
                f"{ref_label}"
            )
    if min(ref) <= 0:
        raise TileReadError(f"{ref_label}: non-positive pixel size {ref[0]} x {ref[1]} nm")
    return float(ref[0]), float(ref[1])


def _rotated(
    sy: np.ndarray, sx: np.ndarray, degrees: float, centre: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Stage positions (y up) rotated by ``-degrees`` about ``centre`` (``(y, x)``, default their
    mean): Maps' layer ``rotation`` is taken as the counterclockwise angle from the stage x axis
    to the image x axis, so this turns stage offsets into image-axis offsets."""
    cy, cx = centre if centre is not None else (float(sy.mean()), float(sx.mean()))
    t = math.radians(degrees)
    dy, dx = sy - cy, sx - cx
    return cy - math.sin(t) * dx + math.cos(t) * dy, cx + math.cos(t) * dx + math.sin(t) * dy


def nominal_positions(
    entries: list[Entry],
    headers: list[dict[str, Any]],
    shape: tuple[int, int],
    pixel: tuple[float, float],
    overlap: tuple[float, float] | None,
    kind: str,
    maps: MapsMetadata | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Nominal origins ``(y, x)`` in px, the stage columns (nm, as the source gives them) and
    the position source, by precedence: layout stage coordinates (``layout-stage``), Fiji pixel
    positions (``fiji``), ``StitchingData.xml`` (``maps-stitchingdata``), every tile's stage
    metadata (``fei-stage``, ``tem-stage``, ``zeiss-stage``; turned by the Maps layer's
    ``rotation``), the grid model with the ``overlap`` option (``grid-model``), the grid model
    with the Maps project's overlaps (``maps-project-grid``)."""
    n = len(entries)
    nan = np.full(n, np.nan)
    h, w = shape
    py, px = pixel
    if all("stage_y_nm" in e for e in entries):
        sy = np.array([e["stage_y_nm"] for e in entries], float)
        sx = np.array([e["stage_x_nm"] for e in entries], float)
        return sy / py, sx / px, sy, sx, "layout-stage"
    if kind == "fiji":
        y = np.array([e["y_px"] for e in entries], float)
        x = np.array([e["x_px"] for e in entries], float)
        return y, x, nan, nan, "fiji"
    unaligned = stitching_positions(maps, entries)
    if unaligned is not None:
        return unaligned[0], unaligned[1], nan, nan, "maps-stitchingdata"
    stages = [tile_stage_nm(hd, e["path"].name) for e, hd in zip(entries, headers, strict=True)]
    if all(s is not None for s in stages):
        sy = np.array([s[0] for s in stages if s is not None])
        sx = np.array([s[1] for s in stages if s is not None])
        kinds = {s[2] for s in stages if s is not None}
        ry, rx = sy, sx
        layer = None if maps is None else maps.layer
        if layer is not None and layer.rotation_deg:
            ry, rx = _rotated(sy, sx, layer.rotation_deg, layer.stage_nm)
        # pixel centres sit at integer coordinates, so a tile's centre is origin + (size - 1) / 2
        source = kinds.pop() if len(kinds) == 1 else "stage-metadata"
        return -ry / py - (h - 1) / 2, rx / px - (w - 1) / 2, sy, sx, source
    layer = None if maps is None else maps.layer
    vertical, horizontal = overlap or (0.0, 0.0)
    steps, source = (1.0 - vertical, 1.0 - horizontal), "grid-model"
    if overlap is None and layer is not None and layer.overlap is not None:
        steps, source = (1.0 - layer.overlap[0], 1.0 - layer.overlap[1]), "maps-project-grid"
    elif overlap is None and n > 1:
        lacking = next(e for e, s in zip(entries, stages, strict=True) if s is None)
        project = (
            f"; Maps project {str(layer.path)!r} gives no overlapHorizontal/overlapVertical"
            if layer is not None
            else ""
        )
        raise TileReadError(
            f"tile {lacking['path'].name!r}: no stage position (no stage in its metadata, "
            f"{_TAGS}; no StitchingData.xml; no stage_y_nm/stage_x_nm in a layout{project}): "
            "give overlap (--overlap) for the grid model, or a layout with positions"
        )
    y = np.array([(e["row"] - 1) * h * steps[0] for e in entries], float)
    x = np.array([(e["col"] - 1) * w * steps[1] for e in entries], float)
    return y, x, nan, nan, source


def _median_step(
    group: np.ndarray, index: np.ndarray, pos: np.ndarray, use: np.ndarray
) -> np.ndarray | None:
    """Median ``(dy, dx)`` per unit of ``index`` over every pair of used tiles that share
    ``group`` (a row for the column step, a column for the row step); None without a pair."""
    steps = []
    for g in np.unique(group[use]):
        members = np.flatnonzero(use & (group == g))
        i, j = np.triu_indices(len(members), k=1)
        i, j = members[i], members[j]
        di = (index[j] - index[i]).astype(float)
        keep = di != 0
        steps.append((pos[j[keep]] - pos[i[keep]]) / di[keep, None])
    found = np.concatenate(steps) if steps else np.empty((0, 2))
    return np.median(found, axis=0) if len(found) else None


def grid_model(
    rows: np.ndarray, cols: np.ndarray, y: np.ndarray, x: np.ndarray, use: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The grid model of tile positions: ``offset + row * row_step + col * col_step``.

    Each step is a ``(dy, dx)`` vector (a small stage rotation is allowed for), the median of
    the position differences per index unit over every pair of tiles sharing a row (the column
    step) or a column (the row step); the offset is the median over the tiles. Medians keep a
    minority of wrong positions from moving the model.

    Parameters
    ----------
    rows, cols : numpy.ndarray
        Grid indices of the tiles.
    y, x : numpy.ndarray
        Their positions (px).
    use : numpy.ndarray of bool, optional
        The tiles the model is fitted on (default: all); it is evaluated for all.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray) or None
        The model's ``y``, ``x`` of every tile; None when a step cannot be measured (several
        rows but no two tiles in one column, or the same for columns).
    """
    rows, cols = np.asarray(rows, int), np.asarray(cols, int)
    pos = np.column_stack([np.asarray(y, float), np.asarray(x, float)])
    use = np.ones(len(pos), bool) if use is None else np.asarray(use, bool)
    steps = []
    for group, index in ((cols, rows), (rows, cols)):
        step = _median_step(group, index, pos, use)
        if step is None and len(np.unique(index[use])) > 1:
            return None
        steps.append(np.zeros(2) if step is None else step)
    row_step, col_step = steps
    base = rows[:, None] * row_step + cols[:, None] * col_step
    model = base + np.median(pos[use] - base[use], axis=0)
    return model[:, 0], model[:, 1]


def check_stage_grid(
    entries: list[Entry],
    y: np.ndarray,
    x: np.ndarray,
    shape: tuple[int, int],
    pixel: tuple[float, float],
    source: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check measured tile positions against the grid model; replace the outliers.

    A tile further than :data:`STAGE_OUTLIER_FRACTION` of the tile side (along either axis)
    from its :func:`grid_model` position (fitted on all tiles, then again without the
    outliers) is a stage outlier: a ``UserWarning`` names it with its distance, and its
    position becomes the grid model's. Two outliers each at the other's grid position are
    reported as swapped. Only positions of the :data:`STAGE_SOURCES` are checked; with fewer
    than 3 tiles, without a measurable step, or when more than :data:`MAX_OUTLIER_SHARE` of the
    tiles are outliers (the tiles do not follow their rows and columns: the grid model is
    not trusted), the positions are kept, the last with a warning.

    Parameters
    ----------
    entries : list of dict
        The tiles (``row``, ``col``, ``path``), in the order of ``y`` and ``x``.
    y, x : numpy.ndarray
        Nominal origins (px).
    shape : tuple of int
        ``(height, width)`` of a tile (px).
    pixel : tuple of float
        ``(y, x)`` pixel size (nm), for the distances in the message.
    source : str
        The position source (``TileSet.position_source``).

    Returns
    -------
    y, x : numpy.ndarray
        The origins, outliers replaced.
    outlier : numpy.ndarray of bool
        Which tiles were replaced.
    """
    y, x = np.asarray(y, float).copy(), np.asarray(x, float).copy()
    outlier = np.zeros(len(y), bool)
    if source not in STAGE_SOURCES or len(y) < 3 or not np.isfinite(y).all():
        return y, x, outlier
    rows = np.array([e["row"] for e in entries], int)
    cols = np.array([e["col"] for e in entries], int)
    tol = STAGE_OUTLIER_FRACTION * np.asarray(shape, float)
    model = None
    for _ in range(2):  # fit on all tiles, then on the tiles that fit
        fitted = grid_model(rows, cols, y, x, use=~outlier if outlier.any() else None)
        if fitted is None:
            return y, x, np.zeros(len(y), bool)
        model = np.column_stack(fitted)
        dev = np.column_stack([y, x]) - model
        outlier = (np.abs(dev) > tol).any(axis=1)
    assert model is not None
    names = [e["path"].name for e in entries]
    if outlier.sum() > MAX_OUTLIER_SHARE * len(y):
        warnings.warn(
            f"tile set {source}: {int(outlier.sum())} of {len(y)} tiles are more than "
            f"{STAGE_OUTLIER_FRACTION:.0%} of a tile from the row/col grid model; the positions "
            "do not follow a grid and are kept as they are (check the layout or metadata)",
            UserWarning,
            stacklevel=3,
        )
        return y, x, np.zeros(len(y), bool)
    if not outlier.any():
        return y, x, outlier
    pos = np.column_stack([y, x])
    warnings.warn(
        _outlier_message(names, rows, cols, pos, model, outlier, tol, pixel, source),
        UserWarning,
        stacklevel=3,
    )
    y[outlier], x[outlier] = model[outlier, 0], model[outlier, 1]
    return y, x, outlier


def _outlier_message(
    names: list[str],
    rows: np.ndarray,
    cols: np.ndarray,
    pos: np.ndarray,
    model: np.ndarray,
    outlier: np.ndarray,
    tol: np.ndarray,
    pixel: tuple[float, float],
    source: str,
) -> str:
    """Names the outliers (swapped pairs first), with their distances in px and µm."""

    def label(i: int) -> str:
        return f"{names[i]!r} (row {rows[i]}, col {cols[i]})"

    def distance(d: np.ndarray) -> str:
        um = float(np.hypot(d[0] * pixel[0], d[1] * pixel[1])) / 1000
        return f"{float(np.hypot(d[0], d[1])):.0f} px ({um:.4g} µm)"

    left = [int(i) for i in np.flatnonzero(outlier)]
    parts = []
    for i in list(left):
        for j in left:
            if j <= i or i not in left:
                continue
            if (np.abs(pos[i] - model[j]) <= tol).all() and (
                np.abs(pos[j] - model[i]) <= tol
            ).all():
                parts.append(
                    f"{label(i)} and {label(j)} look swapped: each sits at the other's grid "
                    f"position, {distance(pos[i] - model[i])} from its own"
                )
                left = [k for k in left if k not in (i, j)]
                break
    parts += [f"{label(i)} is {distance(pos[i] - model[i])} from its grid position" for i in left]
    more = f"; and {len(parts) - _SHOWN} more" if len(parts) > _SHOWN else ""
    return (
        f"tile set {source}: {int(outlier.sum())} of {len(pos)} tiles have a stage position more "
        f"than {STAGE_OUTLIER_FRACTION:.0%} of a tile from the row/col grid model (median step per "
        f"axis): {'; '.join(parts[:_SHOWN])}{more}. Their grid-model positions are used instead "
        "(column stage_outlier of the tiles table); check the stage metadata"
    )
