"""The Maps-like tile grid every synthetic mode writes (tiles, FEI metadata, grid JSON) and its
ground-truth files (tile origins, particles table, label mosaic); see ``docs/GRID_FORMAT.md``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import tifffile
import zarr

from mosaicflow.errors import ConfigError
from mosaicflow.synth._pool import ordered_map
from mosaicflow.synth.noise import add_noise

__all__ = [
    "DTYPE_RANGE_FRACTION",
    "INTENSITY_RANGE",
    "STAGE_ORIGIN_M",
    "GridLayout",
    "GridTruth",
    "create_truth_labels",
    "grid_layout",
    "read_ground_truth",
    "tile_name",
    "truth_labels",
    "truth_measures",
    "write_tile",
    "write_tiles",
    "write_truth_table",
]

GRID_FORMAT = "mosaicflow-grid/1"
FEI_TAG = 34682
LABEL_CHUNKS = (1024, 1024)
STAGE_ORIGIN_M = (2.0e-3, 1.0e-3)  # (StageY0, StageX0): arbitrary, so readers cannot assume 0
# Clean intensities in [0, 1.6] cover substrate (~0.2) plus the brightest particle (1.2) with
# headroom for gain; they map to 10 %..90 % of the dtype range so little is ever clipped.
INTENSITY_RANGE = (0.0, 1.6)
DTYPE_RANGE_FRACTION = (0.10, 0.90)
# Distinct SeedSequence streams so adding a draw to one never shifts another.
_STREAM_STAGE = 0x57
_STREAM_TILE = 0x71


@dataclass(frozen=True)
class GridTruth:
    """Where a grid writer put things, and the size of the true mosaic."""

    folder: Path
    grid_json: Path
    ground_truth_dir: Path
    tile_origins_csv: Path
    particles_csv: Path
    labels_zarr: Path
    tiles: tuple[Path, ...]
    n_particles: int
    mosaic_shape: tuple[int, int]


class GridLayout(NamedTuple):
    """Tile size, tile pitch and true mosaic size of a grid, all ``(y, x)`` in pixels."""

    tile_shape: tuple[int, int]
    step: tuple[int, int]
    mosaic_shape: tuple[int, int]


def tile_name(row: int, col: int) -> str:
    """Maps file name of a tile.

    Parameters
    ----------
    row, col : int
        1-based grid position.

    Returns
    -------
    str
    """
    return f"Tile_{row:03d}-{col:03d}-000000_0-000.tif"


def grid_layout(
    rows: int, cols: int, tile_shape: tuple[int, int], overlap: float, bit_depth: int
) -> GridLayout:
    """Check the grid options every writer shares and work out the grid's geometry.

    Parameters
    ----------
    rows, cols : int
        Grid size (at least 1 each).
    tile_shape : tuple of int
        ``(height, width)`` of each tile.
    overlap : float
        Fractional overlap in ``[0, 1)``; the pitch is ``round(tile * (1 - overlap))`` per axis.
    bit_depth : {8, 16}
        Tile bit depth.

    Returns
    -------
    GridLayout

    Raises
    ------
    ConfigError
        An option is out of range.
    """
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if rows < 1 or cols < 1:
        raise ConfigError(f"rows and cols must be >= 1, got rows={rows}, cols={cols}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    tile_h, tile_w = (int(v) for v in tile_shape)
    if tile_h < 1 or tile_w < 1:
        raise ConfigError(f"tile_shape must be positive, got {tile_shape!r}")
    step_y = round(tile_h * (1.0 - overlap))
    step_x = round(tile_w * (1.0 - overlap))
    mosaic_shape = ((rows - 1) * step_y + tile_h, (cols - 1) * step_x + tile_w)
    return GridLayout((tile_h, tile_w), (step_y, step_x), mosaic_shape)


# --- Tiles ---------------------------------------------------------------------------------------


def _fei_ini(
    pixel_size_m: float, stage_y_m: float, stage_x_m: float, height: int, width: int
) -> str:
    return (
        "[User]\n"
        "User=mosaicflow.synth\n"
        "[System]\n"
        "Software=mosaicflow.synth\n"
        "[Scan]\n"
        f"PixelWidth={pixel_size_m!r}\n"
        f"PixelHeight={pixel_size_m!r}\n"
        "[Stage]\n"
        f"StageX={stage_x_m!r}\n"
        f"StageY={stage_y_m!r}\n"
        "StageZ=0\n"
        "StageR=0\n"
        "StageT=0\n"
        "[Image]\n"
        f"ResolutionX={width}\n"
        f"ResolutionY={height}\n"
    )


def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    """Multiplicative radial falloff: 1 at the tile centre, ``1 - strength`` at the corners."""
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ry = (np.arange(height) - cy)[:, None]
    rx = (np.arange(width) - cx)[None, :]
    r2 = (ry * ry + rx * rx) / max(cy * cy + cx * cx, 1e-12)
    return 1.0 - strength * r2


def _quantise(image: np.ndarray, bit_depth: int) -> np.ndarray:
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    top = float(np.iinfo(dtype).max)
    lo, hi = DTYPE_RANGE_FRACTION[0] * top, DTYPE_RANGE_FRACTION[1] * top
    v0, v1 = INTENSITY_RANGE
    scaled = lo + (image - v0) * ((hi - lo) / (v1 - v0))
    return np.clip(np.rint(scaled), 0, top).astype(dtype)


def write_tile(
    folder: Path,
    row: int,
    col: int,
    image: np.ndarray,
    *,
    origin_px: tuple[int, int],
    stage_error_px: Sequence[float],
    pixel_m: float,
    bit_depth: int,
) -> Path:
    """Quantise one tile and write it as ``Tile_RRR-CCC-*.tif`` with FEI/Thermo metadata.

    Parameters
    ----------
    folder : Path
        Acquisition folder.
    row, col : int
        1-based grid position.
    image : ndarray
        Tile in relative intensity units; ``INTENSITY_RANGE`` maps to 10 %..90 % of the dtype.
    origin_px : tuple of int
        True top-left pixel of the tile in the mosaic frame.
    stage_error_px : sequence of float
        ``(y, x)`` error added to the true tile centre in the stage position.
    pixel_m : float
        Pixel size in metres.
    bit_depth : {8, 16}
        Tile dtype ``uint8`` or ``uint16``.

    Returns
    -------
    Path
    """
    tile_h, tile_w = image.shape
    oy, ox = origin_px
    stage_y0, stage_x0 = STAGE_ORIGIN_M
    centre_y = oy + (tile_h - 1) / 2.0 + float(stage_error_px[0])
    centre_x = ox + (tile_w - 1) / 2.0 + float(stage_error_px[1])
    ini = _fei_ini(
        pixel_m, stage_y0 - centre_y * pixel_m, stage_x0 + centre_x * pixel_m, tile_h, tile_w
    )
    path = Path(folder) / tile_name(row, col)
    tifffile.imwrite(
        path,
        _quantise(image, bit_depth),
        photometric="minisblack",
        extratags=[(FEI_TAG, "s", 0, ini, True)],
    )
    return path


def write_tiles(
    folder: Path,
    render: Callable[[int, int], np.ndarray],
    *,
    rows: int,
    cols: int,
    tile_shape: tuple[int, int],
    overlap: float,
    missing: Iterable[tuple[int, int]] = (),
    pixel_size_nm: float,
    bit_depth: int,
    seed: int,
    stage_error_px: float,
    noise_sigma: float,
    mean_level: float,
    shot_fraction: float,
    gain_sigma: float,
    offset_sigma: float,
    vignetting: float,
    n_particles: int,
    progress: Callable[[int, int], None] | None = None,
) -> GridTruth:
    """Cut a clean field into a Maps-like grid: what every synthetic grid writer shares.

    Each tile gets vignetting, noise, its own gain and offset, a stage error and FEI metadata
    (:func:`write_tile`); ``tile_origins.csv`` and ``mosaicflow-grid.json`` are written too,
    ``particles.csv`` and ``labels.zarr`` are the caller's. Random streams are keyed by tile, so
    a missing tile changes no other, and tiles are written by a thread pool (same files).

    Parameters
    ----------
    folder : Path
        Acquisition folder.
    render : callable
        ``render(oy, ox)``: the clean tile at top-left pixel ``(oy, ox)``; called from threads.
    rows, cols, tile_shape, overlap, bit_depth
        Grid options (see :func:`grid_layout`).
    missing : iterable of (row, col)
        1-based tiles not written.
    pixel_size_nm : float
        Pixel size written to the metadata and the grid JSON.
    seed : int
        Seeds the stage errors and, per tile, gain, offset and noise.
    stage_error_px : float
        Standard deviation of the stage error per axis.
    noise_sigma, mean_level, shot_fraction
        Passed to :func:`add_noise` as ``sigma``, ``mean_level`` and ``shot_fraction``.
    gain_sigma, offset_sigma, vignetting : float
        Per-tile gain ``~ N(1, gain_sigma)``, offset ``~ N(0, offset_sigma)``; corner loss.
    n_particles : int
        Number of true particles, stored in the result.
    progress : callable, optional
        Called as ``progress(done, total)`` after each tile.

    Returns
    -------
    GridTruth
    """
    (tile_h, tile_w), (step_y, step_x), mosaic_shape = grid_layout(
        rows, cols, tile_shape, overlap, bit_depth
    )
    missing = set(missing)
    grid_tiles = [(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]
    origins = pd.DataFrame(
        {
            "row": [r for r, _ in grid_tiles],
            "col": [c for _, c in grid_tiles],
            "y_px": [float((r - 1) * step_y) for r, _ in grid_tiles],
            "x_px": [float((c - 1) * step_x) for _, c in grid_tiles],
        }
    )
    gt_dir = _truth_dir(folder)
    origins_csv = gt_dir / "tile_origins.csv"
    origins.to_csv(origins_csv, index=False)
    # Stage errors drawn for every tile, missing or not, so removing a tile changes no other.
    stage_err = np.random.default_rng([seed, _STREAM_STAGE]).normal(
        0.0, 1.0, size=(rows, cols, 2)
    ) * float(stage_error_px)
    pixel_m = pixel_size_nm * 1e-9
    vignette = _vignette(tile_h, tile_w, vignetting) if vignetting else None
    present = [rc for rc in grid_tiles if rc not in missing]
    tile_paths: list[Path] = []
    entries: list[dict[str, object]] = []

    def tile(rc: tuple[int, int]) -> Path:  # a pure function of the position: run in threads
        r, c = rc
        oy, ox = (r - 1) * step_y, (c - 1) * step_x
        rng = np.random.default_rng([seed, _STREAM_TILE, r, c])
        gain = 1.0 + gain_sigma * float(rng.normal())
        offset = offset_sigma * float(rng.normal())
        img = render(oy, ox)
        if vignette is not None:
            img = img * vignette
        img = add_noise(
            img, sigma=noise_sigma, rng=rng, shot_fraction=shot_fraction, mean_level=mean_level
        )
        return write_tile(
            Path(folder),
            r,
            c,
            img * gain + offset,
            origin_px=(oy, ox),
            stage_error_px=stage_err[r - 1, c - 1],
            pixel_m=pixel_m,
            bit_depth=bit_depth,
        )

    paths = ordered_map(tile, present)
    for done, ((r, c), path) in enumerate(zip(present, paths, strict=True), start=1):
        tile_paths.append(path)
        entries.append({"row": r, "col": c, "file": path.name})
        if progress is not None:
            progress(done, len(present))
    grid = {
        "format": GRID_FORMAT,
        "rows": rows,
        "cols": cols,
        "tile_height": tile_h,
        "tile_width": tile_w,
        "overlap": overlap,
        "pixel_size_nm": pixel_size_nm,
        "bit_depth": bit_depth,
        "tiles": entries,
        "missing": [[r, c] for r, c in sorted(missing)],
    }
    grid_json = Path(folder) / "mosaicflow-grid.json"
    grid_json.write_text(json.dumps(grid, indent=2) + "\n")
    return GridTruth(
        folder=Path(folder),
        grid_json=grid_json,
        ground_truth_dir=gt_dir,
        tile_origins_csv=origins_csv,
        particles_csv=gt_dir / "particles.csv",
        labels_zarr=gt_dir / "labels.zarr",
        tiles=tuple(tile_paths),
        n_particles=n_particles,
        mosaic_shape=mosaic_shape,
    )


# --- Ground truth --------------------------------------------------------------------------------


def _truth_dir(folder: str | Path) -> Path:
    """``folder/ground_truth``, created if needed."""
    gt_dir = Path(folder) / "ground_truth"
    gt_dir.mkdir(parents=True, exist_ok=True)
    return gt_dir


def create_truth_labels(folder: str | Path, mosaic_shape: tuple[int, int]) -> zarr.Array:
    """Create the empty true label mosaic ``ground_truth/labels.zarr`` (replacing any old one).

    Parameters
    ----------
    folder : str or Path
        Acquisition folder.
    mosaic_shape : tuple of int
        ``(height, width)`` of the true mosaic.

    Returns
    -------
    zarr.Array
        Zarr v3, uint32, chunks ``LABEL_CHUNKS``, filled with 0 (background).
    """
    return zarr.create_array(
        store=str(_truth_dir(folder) / "labels.zarr"),
        shape=mosaic_shape,
        chunks=LABEL_CHUNKS,
        shards=None,
        dtype="uint32",
        fill_value=0,
        zarr_format=3,
        overwrite=True,
    )


def truth_measures(
    area: np.ndarray, sum_y: np.ndarray, sum_x: np.ndarray, pixel_size_nm: float
) -> dict[str, np.ndarray]:
    """Centroid, area and equivalent circular diameter columns of a truth table.

    Parameters
    ----------
    area : ndarray of int
        Pixel count of each label.
    sum_y, sum_x : ndarray of float
        Sums of the row and column coordinates of each label's pixels.
    pixel_size_nm : float
        Pixel size.

    Returns
    -------
    dict of str to ndarray
        ``centroid_y_nm``, ``centroid_x_nm`` (pixel centres at integers), ``area_px``,
        ``area_nm2`` and ``ecd_nm``; a label without pixels gets NaN centroids.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = sum_y / area
        cx = sum_x / area
    return {
        "centroid_y_nm": cy * pixel_size_nm,
        "centroid_x_nm": cx * pixel_size_nm,
        "area_px": area,
        "area_nm2": area * pixel_size_nm**2,
        "ecd_nm": np.sqrt(4.0 * area / math.pi) * pixel_size_nm,
    }


def write_truth_table(folder: str | Path, truth: pd.DataFrame) -> Path:
    """Write ``ground_truth/particles.csv``.

    Parameters
    ----------
    folder : str or Path
        Acquisition folder.
    truth : pandas.DataFrame
        One row per true particle (columns as in ``docs/GRID_FORMAT.md``).

    Returns
    -------
    Path
    """
    path = _truth_dir(folder) / "particles.csv"
    truth.to_csv(path, index=False, float_format="%.6f")
    return path


def _gt_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder if folder.name == "ground_truth" else folder / "ground_truth"


def read_ground_truth(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``particles.csv`` and ``tile_origins.csv`` of a synthetic acquisition folder.

    Parameters
    ----------
    folder : str or Path
        The acquisition folder (or its ``ground_truth`` subfolder).

    Returns
    -------
    particles : pandas.DataFrame
        Columns as in ``docs/GRID_FORMAT.md``; ``label`` is uint32.
    origins : pandas.DataFrame
        ``row``, ``col`` (1-based) and true top-left ``y_px``, ``x_px``.
    """
    gt = _gt_dir(folder)
    particles = pd.read_csv(
        gt / "particles.csv",
        dtype={"label": np.uint32, "shape": str, "area_px": np.int64, "group": np.int64},
    )
    origins = pd.read_csv(
        gt / "tile_origins.csv",
        dtype={"row": np.int64, "col": np.int64, "y_px": np.float64, "x_px": np.float64},
    )
    return particles, origins


def truth_labels(folder: str | Path) -> zarr.Array:
    """Open the true label mosaic (``ground_truth/labels.zarr``) read-only.

    Parameters
    ----------
    folder : str or Path
        The acquisition folder (or its ``ground_truth`` subfolder).

    Returns
    -------
    zarr.Array
    """
    return zarr.open_array(str(_gt_dir(folder) / "labels.zarr"), mode="r")
