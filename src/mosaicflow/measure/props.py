"""Per-particle tables of a chunked label image: a halo, an owner rule, and a path for giants.

Each chunk is read with a ``halo`` of its neighbours' pixels. A particle is measured by exactly
one chunk, its *owner*: the chunk holding the particle's first pixel in raster order (a pixel of
the particle, so every particle has an owner). The owner measures the particle from its extended
block when the particle lies wholly inside it; whether it does is decided from what the block
shows (the particle does not reach a side of the block that is not the image border), and every
other chunk that sees the whole particle can predict that decision exactly.

A particle the owner cannot see whole (larger than the halo allows) is never truncated: every
chunk holding some of its pixels sends the piece inside its own core (mask and intensities), and
one task assembles the pieces of each such particle and measures it like any other. The table is
therefore exact whatever the chunking: it equals ``skimage.measure.regionprops_table`` on the
whole image (tested), with the halo deciding only how much work goes through the giant path.

The rule assumes every label is one 8-connected region, as :func:`mosaicflow.measure.label`
produces; a label split into distant pieces is measured from one piece only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.ndimage as ndi
import xarray as xr
from dask.delayed import Delayed, delayed
from dask.graph_manipulation import clone
from dask.highlevelgraph import HighLevelGraph
from dask.tokenize import tokenize

from mosaicflow import dispatch
from mosaicflow._arrays import as_dask, check_2d
from mosaicflow.errors import ConfigError
from mosaicflow.measure._kernel import (
    SHAPE_COLUMNS,
    empty_table,
    measure,
    table_columns,
)
from mosaicflow.restoration._halo import assemble, edge_bundle, neighbour_pieces

#: Default halo (pixels per side): particles up to about this size are measured by their owner
#: chunk alone; larger ones take the assembly path.
DEFAULT_HALO = 64

PROPERTY_GROUPS = ("basic", "shape", "intensity", "features", "flags")


def _near_uncovered(coverage: np.ndarray) -> np.ndarray:
    """True where a pixel is uncovered or 8-touches an uncovered pixel."""
    return ndi.binary_dilation(~coverage, structure=np.ones((3, 3), bool))


def _fits(bbox: np.ndarray, box: Any, shape: tuple[int, int]) -> np.ndarray:
    """Rows of ``bbox`` (y0, x0, y1, x1; global, end exclusive) that a view of the image through
    ``box`` (one box, or one per row) shows whole: inside it and clear of every side of it that
    is not the image border."""
    box = np.asarray(box)
    by0, bx0, by1, bx1 = (box[..., i] for i in range(4))
    h, w = shape
    y0, x0, y1, x1 = (bbox[:, i] for i in range(4))
    top = (y0 > by0) | ((by0 == 0) & (y0 >= 0))
    left = (x0 > bx0) | ((bx0 == 0) & (x0 >= 0))
    bottom = (y1 < by1) | ((by1 == h) & (y1 <= h))
    right = (x1 < bx1) | ((bx1 == w) & (x1 <= w))
    return top & left & bottom & right


class _Grid:
    """Chunk boundaries, the halo, and each chunk's core and extended box."""

    def __init__(self, chunks: tuple[tuple[int, ...], tuple[int, ...]], halo: int) -> None:
        self.ys = np.cumsum((0, *chunks[0]))
        self.xs = np.cumsum((0, *chunks[1]))
        self.shape = (int(self.ys[-1]), int(self.xs[-1]))
        self.halo = halo

    def core(self, i: int, j: int) -> tuple[int, int, int, int]:
        return (int(self.ys[i]), int(self.xs[j]), int(self.ys[i + 1]), int(self.xs[j + 1]))

    def ext(self, i: int, j: int) -> tuple[int, int, int, int]:
        y0, x0, y1, x1 = self.core(i, j)
        h, w, d = self.shape[0], self.shape[1], self.halo
        return (max(0, y0 - d), max(0, x0 - d), min(h, y1 + d), min(w, x1 + d))

    def owner(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.searchsorted(self.ys, y, side="right") - 1
        j = np.searchsorted(self.xs, x, side="right") - 1
        return i, j

    def ext_of(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        d = self.halo
        h, w = self.shape
        return np.stack(
            [
                np.maximum(0, self.ys[i] - d),
                np.maximum(0, self.xs[j] - d),
                np.minimum(h, self.ys[i + 1] + d),
                np.minimum(w, self.xs[j + 1] + d),
            ],
            axis=1,
        )


def _chunk_table(
    blocks: dict[str, Any],
    i: int,
    j: int,
    grid: _Grid,
    settings: dict[str, Any],
) -> tuple[pd.DataFrame, list[tuple[Any, ...]], np.ndarray]:
    """Kernel of one chunk: (rows it owns, pieces of giant particles, labels it measured)."""
    lab = np.asarray(dispatch.to_host(blocks["labels"]))
    ey0, ex0, ey1, ex1 = ext = grid.ext(i, j)
    cy0, cx0, cy1, cx1 = grid.core(i, j)
    if lab.shape != (ey1 - ey0, ex1 - ex0):
        raise AssertionError(f"chunk ({i}, {j}): block {lab.shape} != extended box {ext}")
    images = {k: np.asarray(dispatch.to_host(v)) for k, v in blocks.items() if k != "labels"}
    coverage = images.pop("coverage", None)
    near = None if coverage is None else _near_uncovered(coverage.astype(bool))
    columns = settings["columns"]
    fg = np.flatnonzero(lab.ravel())
    if fg.size == 0:
        return empty_table(columns), [], np.empty(0, np.uint32)
    ids, first_idx, inverse = np.unique(lab.ravel()[fg], return_index=True, return_inverse=True)
    local = np.zeros(lab.size, dtype=np.int32)
    local[fg] = inverse + 1
    slices = ndi.find_objects(local.reshape(lab.shape))
    bbox = np.array(
        [(s[0].start + ey0, s[1].start + ex0, s[0].stop + ey0, s[1].stop + ex0) for s in slices],
        dtype=np.int64,
    )
    fy, fx = np.divmod(fg[first_idx], lab.shape[1])
    fy = fy + ey0
    fx = fx + ex0
    whole = _fits(bbox, ext, grid.shape)
    # The first raster pixel seen is the particle's own first pixel when the view is whole.
    in_core_first = (fy >= cy0) & (fy < cy1) & (fx >= cx0) & (fx < cx1)
    owned = whole & in_core_first
    # Whole here but not owned: will the owner see it whole? If not, it is a giant, and every
    # chunk holding a piece of it sends that piece.
    oi, oj = grid.owner(fy, fx)
    owner_sees = _fits(bbox, grid.ext_of(oi, oj), grid.shape)
    core_lab = lab[cy0 - ey0 : cy1 - ey0, cx0 - ex0 : cx1 - ex0]
    core_local = local.reshape(lab.shape)[cy0 - ey0 : cy1 - ey0, cx0 - ex0 : cx1 - ex0]
    in_core = np.bincount(core_local.ravel(), minlength=len(ids) + 1)[1:] > 0
    giant_piece = in_core & ((~whole) | (whole & ~in_core_first & ~owner_sees))
    table = measure(
        lab,
        ids[owned],
        origin_px=(ey0, ex0),
        image_shape=grid.shape,
        spacing=settings["spacing"],
        origin=settings["origin"],
        columns=columns,
        intensity=images.get("intensity"),
        extras={k[len("extra:") :]: v for k, v in images.items() if k.startswith("extra:")},
        near_uncovered=near,
        chunk_starts=(grid.ys, grid.xs),
    )
    pieces = []
    core_near = None if near is None else near[cy0 - ey0 : cy1 - ey0, cx0 - ex0 : cx1 - ex0]
    core_images = {k: v[cy0 - ey0 : cy1 - ey0, cx0 - ex0 : cx1 - ex0] for k, v in images.items()}
    for k in np.flatnonzero(giant_piece):
        value = ids[k]
        rows, cols_ = np.nonzero(core_lab == value)
        py0, px0, py1, px1 = rows.min(), cols_.min(), rows.max() + 1, cols_.max() + 1
        mask = core_lab[py0:py1, px0:px1] == value
        crops = {name: img[py0:py1, px0:px1].copy() for name, img in core_images.items()}
        near_crop = None if core_near is None else core_near[py0:py1, px0:px1].copy()
        pieces.append((int(value), int(py0 + cy0), int(px0 + cx0), mask, crops, near_crop))
    return table, pieces, ids[owned].astype(np.uint32)


def _chunk_task(
    names: list[str],
    blocks: list[Any],
    neighbours: list[list[list[Any]]],
    i: int,
    j: int,
    grid: _Grid,
    settings: dict[str, Any],
) -> tuple[pd.DataFrame, list[tuple[Any, ...]], np.ndarray]:
    """Assemble each image's extended block from its neighbours' edges, then measure."""
    extended = {
        name: assemble(block, around, grid.halo, grid.halo)[0]
        for name, block, around in zip(names, blocks, neighbours, strict=True)
    }
    return _chunk_table(extended, i, j, grid, settings)


def _rows_of(result: tuple[pd.DataFrame, Any, Any]) -> pd.DataFrame:
    return result[0]


def _giant_inputs_of(
    result: tuple[pd.DataFrame, list[tuple[Any, ...]], np.ndarray],
) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    return result[1], result[2]


def _giants_from(
    inputs: list[tuple[list[tuple[Any, ...]], np.ndarray]], grid: _Grid, settings: dict[str, Any]
) -> pd.DataFrame:
    return _giants([p for p, _ in inputs], [m for _, m in inputs], grid, settings)


def _giants(
    pieces: list[list[tuple[Any, ...]]],
    measured: list[np.ndarray],
    grid: _Grid,
    settings: dict[str, Any],
) -> pd.DataFrame:
    """Assemble the pieces of particles no owner measured, and measure each whole."""
    flat = [p for chunk in pieces for p in chunk]
    columns = settings["columns"]
    if not flat:
        return empty_table(columns)
    done = np.concatenate(
        [np.asarray(m, dtype=np.uint32) for m in measured] or [np.empty(0, np.uint32)]
    )
    by_label: dict[int, list[tuple[Any, ...]]] = {}
    for p in flat:
        by_label.setdefault(p[0], []).append(p)
    todo = sorted(set(by_label) - set(done.tolist()))
    tables = []
    for value in todo:
        parts = by_label[value]
        y0 = min(p[1] for p in parts)
        x0 = min(p[2] for p in parts)
        y1 = max(p[1] + p[3].shape[0] for p in parts)
        x1 = max(p[2] + p[3].shape[1] for p in parts)
        lab = np.zeros((y1 - y0, x1 - x0), dtype=np.uint32)
        images: dict[str, np.ndarray] = {}
        near = None if parts[0][5] is None else np.zeros(lab.shape, dtype=bool)
        for _, py, px, mask, crops, near_crop in parts:
            sl = (slice(py - y0, py - y0 + mask.shape[0]), slice(px - x0, px - x0 + mask.shape[1]))
            lab[sl][mask] = value
            for name, crop in crops.items():
                if name not in images:
                    images[name] = np.zeros(lab.shape, dtype=crop.dtype)
                images[name][sl][mask] = crop[mask]
            if near is not None:
                near[sl] |= near_crop & mask
        tables.append(
            measure(
                lab,
                np.array([value], dtype=np.uint32),
                origin_px=(y0, x0),
                image_shape=grid.shape,
                spacing=settings["spacing"],
                origin=settings["origin"],
                columns=columns,
                intensity=images.get("intensity"),
                extras={k[6:]: v for k, v in images.items() if k.startswith("extra:")},
                near_uncovered=near,
                chunk_starts=(grid.ys, grid.xs),
            )
        )
    return pd.concat(tables, ignore_index=True) if tables else empty_table(columns)


def _spacing_origin(
    label_image: Any, spacing: float | Sequence[float] | None
) -> tuple[float, tuple[float, float]]:
    origin = (0.0, 0.0)
    if isinstance(label_image, xr.DataArray):
        if spacing is None and "pixel_size_nm" in label_image.attrs:
            spacing = tuple(label_image.attrs["pixel_size_nm"])
        if label_image.sizes["y"] and label_image.sizes["x"] and "y" in label_image.coords:
            origin = (float(label_image["y"][0]), float(label_image["x"][0]))
    if spacing is None:
        return 1.0, origin
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.size not in (1, 2) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(
            f"regionprops_table: spacing must be 1 or 2 positive numbers, got {spacing!r}"
        )
    if values.size == 2 and not np.isclose(values[0], values[1], rtol=1e-9, atol=0):
        raise ConfigError(
            f"regionprops_table: anisotropic pixels {tuple(values)} are not supported (perimeter, "
            "Feret and moment invariants need square pixels); resample the image first"
        )
    return float(values[0]), origin


def _columns(properties: Sequence[str] | None, intensity: bool, extras: Sequence[str]) -> list[str]:
    groups = set(PROPERTY_GROUPS if properties is None else properties)
    unknown = groups - set(PROPERTY_GROUPS)
    if unknown:
        raise ConfigError(
            f"regionprops_table: unknown property group(s) {sorted(unknown)}; "
            f"choose from {list(PROPERTY_GROUPS)}"
        )
    cols = table_columns(
        shape="shape" in groups,
        intensity=intensity and "intensity" in groups,
        extras=list(extras),
        features="features" in groups,
    )
    if "intensity" not in groups:
        cols = [c for c in cols if not c.startswith("intensity_") or c.count("_") > 1]
    return cols


def regionprops_table(
    label_image: Any,
    intensity_image: Any = None,
    *,
    properties: Sequence[str] | None = None,
    spacing: float | Sequence[float] | None = None,
    extra_intensity: Mapping[str, Any] | None = None,
    coverage: Any = None,
    halo: int = DEFAULT_HALO,
) -> Any:
    """One row per particle of a label image, with scikit-image's column names.

    Parameters
    ----------
    label_image : dask.array.Array, xarray.DataArray or numpy.ndarray
        Integer labels, 0 = background; each label one connected region (as
        :func:`mosaicflow.measure.label` gives).
    intensity_image : same shape, optional
        Intensities for ``intensity_mean/std/min/max`` and the Fourier features.
    properties : sequence of {"basic", "shape", "intensity", "features", "flags"}, optional
        Column groups (default: all). ``basic`` (label, num_pixels, area,
        equivalent_diameter_area, centroid-0/1, bbox-0..3) and the flags are always present.
    spacing : float or (float, float), optional
        Pixel size (square pixels). Defaults to a DataArray's ``pixel_size_nm`` attribute (the
        table is then in nm, nm^2 and, for centroids, the image's own coordinates) or 1 (pixels,
        as scikit-image).
    extra_intensity : mapping of str to image, optional
        More intensity images: ``name`` adds ``intensity_mean_<name>`` and std/min/max.
    coverage : boolean image, optional
        True where the mosaic was acquired; sets ``touches_uncovered`` for particles that touch
        (8-connected) an uncovered pixel.
    halo : int
        Pixels read from each neighbour per side. Particles up to about this size are measured
        by one chunk; larger ones are assembled from pieces (exact, but one task does them).

    Returns
    -------
    pandas.DataFrame for NumPy input, else dask.dataframe.DataFrame
        Columns ``label``, ``num_pixels``, ``area``, ``equivalent_diameter_area``,
        ``centroid-0/1``, ``bbox-0..3`` (pixels, end exclusive), shape columns (``perimeter``,
        ``feret_diameter_max/min``, ``axis_major/minor_length``, ``orientation``,
        ``eccentricity``, ``solidity``, ``area_convex``, ``circularity`` (ImageJ: 4 pi A / P^2,
        capped at 1), ``aspect_ratio`` (major / minor axis), ``roundness`` (4 A / (pi major^2)),
        ``boundary_area_ratio`` (P / A), ``moments_hu-0..6``), intensity statistics, Fourier
        features (``fft_mean``, ``fft_std``, ``fft_com``, ``real_mean``, ``real_std``, see
        :mod:`mosaicflow.classify.features`) and the flags ``touches_edge``,
        ``touches_uncovered``, ``touches_chunk`` (diagnostic). The Dask DataFrame has one
        partition per chunk (the particles it owns, by label) plus one for assembled giants.

    Notes
    -----
    Memory per task: one chunk plus its halo, for each image. The giant task holds the pieces
    of the particles larger than the halo allows.
    """
    check_2d(label_image, "regionprops_table")
    raw = label_image.data if isinstance(label_image, xr.DataArray) else label_image
    dtype = np.dtype(getattr(raw, "dtype", np.asarray(raw).dtype))
    if not np.issubdtype(dtype, np.integer) or dtype == np.dtype(bool):
        raise TypeError(
            f"regionprops_table: label_image must have an integer dtype (labels), got {dtype}; "
            "threshold a probability or intensity image and label it first"
        )
    s, origin = _spacing_origin(label_image, spacing)
    extras = dict(extra_intensity or {})
    columns = _columns(properties, intensity_image is not None, list(extras))
    settings = {"spacing": s, "origin": origin, "columns": columns}
    images: dict[str, Any] = {"labels": label_image}
    if intensity_image is not None:
        images["intensity"] = intensity_image
    for name, img in extras.items():
        if not name.isidentifier():
            raise ConfigError(f"regionprops_table: extra intensity name {name!r} is not a word")
        images[f"extra:{name}"] = img
    if coverage is not None:
        images["coverage"] = coverage
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in images.items()}
    for k, shp in shapes.items():
        if shp != shapes["labels"]:
            raise ValueError(
                f"regionprops_table: {k.replace('extra:', '')} image shape {shp} != label_image "
                f"shape {shapes['labels']}"
            )
    if not isinstance(raw, da.Array):
        in_memory = {
            k: np.asarray(v.data if isinstance(v, xr.DataArray) else v) for k, v in images.items()
        }
        grid = _Grid(((in_memory["labels"].shape[0],), (in_memory["labels"].shape[1],)), 0)
        table, pieces, measured = _chunk_table(in_memory, 0, 0, grid, settings)
        giants = _giants([pieces], [measured], grid, settings)
        out = pd.concat([table, giants], ignore_index=True) if len(giants) else table
        return out.sort_values("label", ignore_index=True)
    if int(halo) < 1:
        raise ConfigError(f"regionprops_table: halo must be >= 1 px, got {halo!r}")
    labels = as_dask(label_image)
    depth = int(min(int(halo), *labels.chunks[0], *labels.chunks[1]))
    grid = _Grid(labels.chunks, depth)
    arrays = {k: as_dask(img).rechunk(labels.chunks) for k, img in images.items()}
    names = list(arrays)
    # A stencil holds every input chunk from its edge task until its own measuring task: a band
    # of chunk rows, growing with the mosaic's width. Where an input is a plain read (its chunk
    # tasks and one source key, e.g. a stored image), the edge tasks read their own copy, so
    # each read is released at once and worker memory stays a few chunks per worker.
    sources = {
        k: clone(a, assume_layers=False) if len(a.__dask_graph__()) <= a.npartitions + 1 else a
        for k, a in arrays.items()
    }
    token = tokenize(*(arrays[k].name for k in names), depth, settings)
    ny, nx = labels.numblocks
    dsk: dict[Any, Any] = {}
    for k in names:
        for i in range(ny):
            for j in range(nx):
                dsk[(f"props-edges-{k}-{token}", i, j)] = (
                    edge_bundle,
                    (sources[k].name, i, j),
                    depth,
                    depth,
                )
    parts, pieces = [], []
    for i in range(ny):
        for j in range(nx):
            key = (f"props-chunk-{token}", i, j)
            dsk[key] = (
                _chunk_task,
                names,
                [(arrays[k].name, i, j) for k in names],
                [neighbour_pieces(f"props-edges-{k}-{token}", i, j, ny, nx) for k in names],
                i,
                j,
                grid,
                settings,
            )
            parts.append(key)
    graph = HighLevelGraph.from_collections(
        f"props-chunk-{token}",
        dsk,
        dependencies=[arrays[k] for k in names] + [sources[k] for k in names],
    )
    tables = []
    for key in parts:
        result: Any = Delayed(key, graph, layer=key[0])
        tables.append(delayed(_rows_of, pure=True)(result))
        # The giant task waits for every chunk: it must hold only the small part of each
        # chunk's result, never the chunk's rows (which go to their partition at once).
        pieces.append(delayed(_giant_inputs_of, pure=True)(result))
    giants = delayed(_giants_from, pure=True)(pieces, grid, settings)
    return dd.from_delayed([*tables, giants], meta=empty_table(columns), verify_meta=False)


__all__ = ["DEFAULT_HALO", "PROPERTY_GROUPS", "SHAPE_COLUMNS", "regionprops_table"]
