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
exact whatever the chunking: it equals ``skimage.measure.regionprops_table`` on the whole image
(tested), the halo deciding only how much work goes through the giant path. The rule assumes
every label is one 8-connected region, as :func:`mosaicflow.measure.label` produces; a label
split into distant pieces is measured from one piece only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import scipy.ndimage as ndi
import xarray as xr
from dask.delayed import Delayed, delayed
from dask.graph_manipulation import clone
from dask.highlevelgraph import HighLevelGraph
from dask.tokenize import tokenize

from mosaicflow import dispatch
from mosaicflow._shared import halo as _halo
from mosaicflow._shared.arrays import as_dask, check_2d, pixel_grid
from mosaicflow.errors import ConfigError
from mosaicflow.measure._kernel import boxes, foreground, measure
from mosaicflow.measure.columns import (
    PROPERTY_GROUPS,
    SHAPE_COLUMNS,
    empty_table,
    property_columns,
)

#: Default halo (pixels per side): particles up to about this size are measured by their owner
#: chunk alone; larger ones take the assembly path.
DEFAULT_HALO = 64

# Prefix of the names under which the extra intensity images travel with the labels.
_EXTRA = "extra:"


def _near_uncovered(coverage: np.ndarray) -> np.ndarray:
    """True where a pixel is uncovered or 8-touches an uncovered pixel (most blocks: none)."""
    near = np.zeros(coverage.shape, dtype=bool)
    return near if coverage.all() else ndi.binary_dilation(~coverage, np.ones((3, 3), bool))


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


def _measure(
    labels: np.ndarray,
    keep: np.ndarray,
    origin_px: tuple[int, int],
    images: Mapping[str, np.ndarray],
    near: np.ndarray | None,
    grid: _Grid,
    settings: dict[str, Any],
) -> pd.DataFrame:
    """The kernel on a window of the label image at ``origin_px``, with its images cut alike."""
    return measure(
        labels,
        keep,
        origin_px=origin_px,
        image_shape=grid.shape,
        spacing=settings["spacing"],
        origin=settings["origin"],
        columns=settings["columns"],
        frame=settings["frame"],
        intensity=images.get("intensity"),
        extras={k[len(_EXTRA) :]: v for k, v in images.items() if k.startswith(_EXTRA)},
        near_uncovered=near,
        chunk_starts=(grid.ys, grid.xs),
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
    fg = foreground(lab)
    if fg.size == 0:
        return empty_table(columns, frame=settings["frame"]), [], np.empty(0, np.uint32)
    ids, first_idx, inverse = np.unique(lab.ravel()[fg], return_index=True, return_inverse=True)
    bbox = boxes(fg, inverse, len(ids), lab.shape[1]) + np.array([ey0, ex0, ey0, ex0])
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
    # a particle is in the core when one of its pixels is
    py, px = np.divmod(fg, lab.shape[1])
    py += ey0
    px += ex0
    in_core = np.zeros(len(ids), dtype=bool)
    in_core[inverse[(py >= cy0) & (py < cy1) & (px >= cx0) & (px < cx1)]] = True
    giant_piece = in_core & ((~whole) | (whole & ~in_core_first & ~owner_sees))
    table = _measure(lab, ids[owned], (ey0, ex0), images, near, grid, settings)
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


def _block_task(array: da.Array, source: str | None, grid: _Grid, i: int, j: int) -> Any:
    """Chunk ``(i, j)``'s input: its extended box read from the store, or the chunk's key."""
    return (array.name, i, j) if source is None else _halo.read_box_task(source, grid.ext(i, j))


def _chunk_task(
    names: list[str],
    blocks: list[Any],
    neighbours: list[list[list[Any]] | None],
    i: int,
    j: int,
    grid: _Grid,
    settings: dict[str, Any],
) -> tuple[pd.DataFrame, list[tuple[Any, ...]], np.ndarray]:
    """Each image's extended block (read whole, or a chunk joined with its neighbours' edges),
    then measure."""
    extended = {
        name: block if around is None else _halo.assemble(block, around, grid.halo, grid.halo)[0]
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
        return empty_table(columns, frame=settings["frame"])
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
        keep = np.array([value], dtype=np.uint32)
        tables.append(_measure(lab, keep, (y0, x0), images, near, grid, settings))
    if not tables:
        return empty_table(columns, frame=settings["frame"])
    return pd.concat(tables, ignore_index=True)


def _spacing_origin(
    label_image: Any, spacing: float | Sequence[float] | None
) -> tuple[float, tuple[float, float]]:
    """The isotropic pixel size and the physical position of pixel (0, 0)."""
    origin = (0.0, 0.0)
    if isinstance(label_image, xr.DataArray):
        stored, origin = pixel_grid(label_image)
        if spacing is None:
            spacing = stored
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


def regionprops_table(
    label_image: Any,
    intensity_image: Any = None,
    properties: Sequence[str] | None = PROPERTY_GROUPS,
    *,
    spacing: float | Sequence[float] | None = None,
    extra_intensity: Mapping[str, Any] | None = None,
    coverage: Any = None,
    halo: int = DEFAULT_HALO,
) -> Any:
    """One row per particle of a label image, with scikit-image's column names.

    The chunked counterpart of ``skimage.measure.regionprops_table``: for the properties both
    compute, the same columns in the same order with the same values (integers identical,
    floats to about 1e-15), whatever the chunking.

    Parameters
    ----------
    label_image : dask.array.Array, xarray.DataArray or numpy.ndarray
        Integer labels, 0 = background; each label one connected region (as
        :func:`mosaicflow.measure.label` gives).
    intensity_image : same shape, optional
        Intensities for ``intensity_mean/std/min/max`` and the Fourier features.
    properties : sequence of str, optional
        What to measure (``None``: the default), each name one of:

        * a scikit-image property the kernel computes (``label``, ``num_pixels``, ``area``,
          ``equivalent_diameter_area``, ``centroid``, ``bbox``, ``perimeter``,
          ``feret_diameter_max``, ``axis_major_length``, ``axis_minor_length``,
          ``orientation``, ``eccentricity``, ``solidity``, ``area_convex``, ``moments_hu``,
          ``intensity_mean``, ``intensity_std``, ``intensity_min``, ``intensity_max``),
          expanded into its columns exactly as scikit-image does (``centroid`` into
          ``centroid-0``, ``centroid-1``; ``bbox`` into ``bbox-0..3``; ``moments_hu`` into
          ``moments_hu-0..6``);
        * one of mosaicflow's own columns (``feret_diameter_min``, ``circularity``,
          ``aspect_ratio``, ``roundness``, ``boundary_area_ratio``, the Fourier features, the
          flags, ``intensity_<stat>_<name>`` of an ``extra_intensity`` image; for a DataArray
          ``centroid_px`` and ``bbox_px``) or any single column of the table (``centroid-0``);
        * a column group of :data:`PROPERTY_GROUPS`: ``basic`` (``label`` to ``bbox-3``, and
          for a DataArray ``centroid_px-0`` to ``bbox_px-3``), ``shape``, ``intensity`` (with
          the ``extra_intensity`` statistics), ``features``, ``flags``.

        The columns come in the order named, each once, as in scikit-image. A list of group
        names only keeps the groups' own rule: the columns in table order, ``basic``, the
        ``extra_intensity`` statistics and the flags always in, ``intensity`` and ``features``
        only with an ``intensity_image``. The default, every group, is the whole table.
    spacing : float or (float, float), optional
        Pixel size (square pixels; default 1): lengths, areas and centroids scaled as by
        scikit-image's ``spacing`` (``bbox`` stays in pixels). For a DataArray it defaults to
        its ``pixel_size_nm``, and positions are in its own coordinates (nm in the mosaic
        frame): centroids ``origin + px * spacing``, ``bbox-*`` the box's outer pixel edges
        ``origin + (index - 0.5) * spacing``, with ``centroid_px-*`` / ``bbox_px-*`` in pixels.
    extra_intensity : mapping of str to image, optional
        More intensity images: ``name`` adds ``intensity_mean_<name>`` and std/min/max.
    coverage : boolean image, optional
        True where the mosaic was acquired; sets ``touches_uncovered`` for particles that touch
        (8-connected) an uncovered pixel.
    halo : int
        Pixels read from each neighbour per side. Particles up to about this size are measured
        by one chunk; larger ones are assembled from pieces (exact, but one task does them).
        Memory per task: one chunk plus its halo, for each image (the giant task: the pieces).

    Returns
    -------
    pandas.DataFrame for NumPy input, else dask.dataframe.DataFrame
        One row per particle, sorted by label for NumPy input; the Dask DataFrame has one
        partition per chunk (the particles it owns, by label) plus one for assembled giants.
        The whole table (definitions: ``docs/MEASURE.md``; units:
        :func:`mosaicflow.measure.columns.column_units`): ``label`` to ``bbox-3`` (and the
        pixel positions), the shape columns (scikit-image's, the Feret minimum, ImageJ's
        ``circularity``, ``aspect_ratio``, ``roundness``, ``boundary_area_ratio``,
        ``moments_hu-0..6``), the intensity statistics, the Fourier features of
        :mod:`mosaicflow.measure.features` and the flags ``touches_edge``,
        ``touches_uncovered``, ``touches_chunk`` (diagnostic).

    Raises
    ------
    ConfigError
        A property name that is none of the above (the message lists the valid ones), an
        intensity column without ``intensity_image``, anisotropic ``spacing``, images of
        different shapes, ``halo`` below 1.
    TypeError
        A label image without an integer dtype.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((6, 8), dtype=np.uint32)
    >>> labels[1:4, 1:3] = 1
    >>> labels[2:5, 4:8] = 2
    >>> regionprops_table(labels, properties=["label", "area", "centroid"])
       label  area  centroid-0  centroid-1
    0      1   6.0         2.0         1.5
    1      2  12.0         3.0         5.5
    """
    check_2d(label_image, "regionprops_table")
    raw = label_image.data if isinstance(label_image, xr.DataArray) else label_image
    dtype = np.dtype(raw.dtype if hasattr(raw, "dtype") else np.asarray(raw).dtype)
    if not np.issubdtype(dtype, np.integer) or dtype == np.dtype(bool):
        raise TypeError(
            f"regionprops_table: label_image must have an integer dtype (labels), got {dtype}; "
            "threshold a probability or intensity image and label it first"
        )
    s, origin = _spacing_origin(label_image, spacing)
    frame = isinstance(label_image, xr.DataArray)  # positions in its coordinate frame
    extras = dict(extra_intensity or {})
    for name in extras:
        if not name.isidentifier():
            raise ConfigError(f"regionprops_table: extra intensity name {name!r} is not a word")
    columns = property_columns(
        PROPERTY_GROUPS if properties is None else properties,
        intensity=intensity_image is not None,
        extras=list(extras),
        frame=frame,
    )
    # The label is always measured (the NumPy table is sorted by it) and left out at the end
    # where it was not asked for.
    internal = columns if "label" in columns else ["label", *columns]
    settings = {"spacing": s, "origin": origin, "columns": internal, "frame": frame}
    images: dict[str, Any] = {"labels": label_image}
    if intensity_image is not None:
        images["intensity"] = intensity_image
    for name, img in extras.items():
        images[f"{_EXTRA}{name}"] = img
    if coverage is not None:
        images["coverage"] = coverage
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in images.items()}
    for k, shp in shapes.items():
        if shp != shapes["labels"]:
            raise ConfigError(
                f"regionprops_table: {k.removeprefix(_EXTRA)} image shape {shp} != label_image "
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
        out = out.sort_values("label", ignore_index=True)
        return out if internal is columns else out[columns]
    if int(halo) < 1:
        raise ConfigError(f"regionprops_table: halo must be >= 1 px, got {halo!r}")
    labels = as_dask(label_image)
    depth = int(min(int(halo), *labels.chunks[0], *labels.chunks[1]))
    grid = _Grid(labels.chunks, depth)
    arrays = {k: as_dask(img).rechunk(labels.chunks) for k, img in images.items()}
    names = list(arrays)
    # An input read from a store (e.g. a Zarr image) is read by each measuring task itself, the
    # chunk and its halo in one read: nothing waits in worker memory for the neighbours. Other
    # inputs go through edge tasks (a plain in-memory read through its own copy, so that each
    # block is released at once).
    direct = {k: _halo.store_source(a) for k, a in arrays.items()}
    plain = {k: len(a.__dask_graph__()) <= a.npartitions + 1 for k, a in arrays.items()}
    sources = {k: clone(a, assume_layers=False) if plain[k] else a for k, a in arrays.items()}
    token = tokenize(*(arrays[k].name for k in names), depth, settings)
    ny, nx = labels.numblocks
    dsk: dict[Any, Any] = {}
    for k in (k for k in names if direct[k] is None):
        for i in range(ny):
            for j in range(nx):
                edge = (_halo.edge_bundle, (sources[k].name, i, j), depth, depth)
                dsk[(f"props-edges-{k}-{token}", i, j)] = edge
    parts, pieces = [], []
    for i in range(ny):
        for j in range(nx):
            key = (f"props-chunk-{token}", i, j)
            blocks = [_block_task(arrays[k], direct[k], grid, i, j) for k in names]
            edges = [f"props-edges-{k}-{token}" for k in names]
            around = [
                None if direct[k] else _halo.neighbour_pieces(e, i, j, ny, nx)
                for k, e in zip(names, edges, strict=True)
            ]
            dsk[key] = (_chunk_task, names, blocks, around, i, j, grid, settings)
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
    # dask.dataframe here, not at the top: the workers import this module for its chunk
    # tasks and never need it (a third of a second of each worker's start of the stage)
    import dask.dataframe as dd

    meta = empty_table(internal, frame=frame)
    out = dd.from_delayed([*tables, giants], meta=meta, verify_meta=False)
    return out if internal is columns else out[columns]


__all__ = ["DEFAULT_HALO", "PROPERTY_GROUPS", "SHAPE_COLUMNS", "regionprops_table"]
