"""The report's stitching section: how far registration moved the tiles, which pairs it kept and
why it rejected the others, each tile's residual on a map, and the brightness equalisation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mosaicflow.io.store import RunStore

REGISTRATION_COLUMNS = ("nominal_y_px", "nominal_x_px")
"""Columns the ``register`` stage adds to the ``tiles`` table: each tile's nominal (stage)
top-left in mosaic pixels, beside the registered ``y_px``, ``x_px`` that fusion uses."""


def stitching_quality(store: RunStore) -> dict[str, Any] | None:
    """How far registration moved the tiles from their nominal stage positions, and the fusion.

    ``None`` (and no section in the report) while the ``tiles`` table has no
    :data:`REGISTRATION_COLUMNS` (a run without registration). With them: the correction
    ``registered - nominal`` of each tile, less its median over the tiles (both sets of
    positions are only defined up to a common shift), summarised in pixels; the pairs kept and
    the rejected ones by reason; the kept pairs' mean overlap NCC (of the pre-filtered strips)
    at the stage's offsets and at the registered ones; the blending and the range of the tiles'
    gains and offsets.
    """
    if not store.has_table("tiles"):
        return None
    if not set(REGISTRATION_COLUMNS) <= set(store.table_columns("tiles")):
        return None
    tiles = store.read_table("tiles", columns=["y_px", "x_px", *REGISTRATION_COLUMNS])
    registered = tiles[["y_px", "x_px"]].to_numpy(np.float64)
    nominal = tiles[list(REGISTRATION_COLUMNS)].to_numpy(np.float64)
    shift = registered - nominal
    shift -= np.median(shift, axis=0)
    norm = np.hypot(shift[:, 0], shift[:, 1])
    stages = store.stages()
    stage = stages.get("register", {})
    out: dict[str, Any] = {
        "n_tiles": len(tiles),
        "median_correction_px": float(np.median(norm)),
        "max_correction_px": float(norm.max()),
        "pairs": stage.get("n_pairs"),
        "pairs_kept": stage.get("n_pairs_kept"),
        "max_residual_px": stage.get("max_residual_px"),
    }
    if store.has_table("pairs"):
        pairs = store.read_table("pairs")
        rejected = pairs[(pairs["kind"] == "neighbour") & ~pairs["kept"].astype(bool)]
        out["rejected_by_reason"] = {
            str(k): int(v) for k, v in rejected["reason"].value_counts().sort_index().items()
        }
        if "quality_nominal" in pairs:
            kept = pairs[(pairs["kind"] == "neighbour") & pairs["kept"].astype(bool)]
            both = kept[["quality_nominal", "quality"]].dropna()
            if len(both):
                out["overlap_ncc_nominal"] = float(both["quality_nominal"].mean())
                out["overlap_ncc_registered"] = float(both["quality"].mean())
    mosaic = stages.get("mosaic", {})
    for key in ("blend", "gain_range", "offset_range", "flatfield_range"):
        if key in mosaic:
            out[key] = mosaic[key]
    return out


def plot_tile_residuals(
    tiles: pd.DataFrame, pairs: pd.DataFrame | None, tile_shape: tuple[int, int]
) -> Figure:
    """Tiles at their registered positions, coloured by ``residual_px``; kept pairs joined by
    a line between tile centres, rejected ones dashed."""
    h, w = tile_shape
    fig = Figure(figsize=(7, 7 * min(1.5, max(0.3, _aspect(tiles, h, w)))))
    ax = fig.add_subplot()
    resid = tiles["residual_px"].to_numpy(np.float64) if "residual_px" in tiles else None
    finite = resid[np.isfinite(resid)] if resid is not None else np.array([])
    vmax = max(0.5, float(finite.max())) if finite.size else 0.5
    norm = Normalize(0.0, vmax)
    colours = colormaps["viridis"]
    y, x = tiles["y_px"].to_numpy(float), tiles["x_px"].to_numpy(float)
    faces = [
        (0.85, 0.85, 0.85, 1.0) if not np.isfinite(v) else colours(norm(v))
        for v in (np.full(len(tiles), np.nan) if resid is None else resid)
    ]
    # An explicit colour: a bare Rectangle resolves Matplotlib's "C0" through the colour
    # cycle, about 1 ms per tile; the collection's colours replace it anyway.
    boxes = [Rectangle((x[k], y[k]), w, h, color="k") for k in range(len(tiles))]
    ax.add_collection(
        PatchCollection(boxes, facecolors=faces, edgecolors="k", linewidths=0.5, alpha=0.8)
    )
    if pairs is not None and len(pairs):
        centre = np.c_[x + w / 2, y + h / 2]
        neighbours = pairs[pairs["kind"] == "neighbour"]
        ends = np.stack(
            [centre[neighbours["i"].to_numpy(int)], centre[neighbours["j"].to_numpy(int)]], axis=1
        )
        kept = neighbours["kept"].astype(bool).to_numpy()
        # one collection per style: kept pairs solid black, rejected ones dashed red
        ax.add_collection(LineCollection(list(ends[kept]), colors="k", linewidths=1.0))
        ax.add_collection(
            LineCollection(list(ends[~kept]), colors="#e6194b", linestyles="--", linewidths=0.8)
        )
    ax.set_xlim(x.min() - 0.05 * w, x.max() + 1.05 * w)
    ax.set_ylim(y.max() + 1.05 * h, y.min() - 0.05 * h)
    ax.set_aspect("equal")
    ax.set_xlabel("x (mosaic px)")
    ax.set_ylabel("y (mosaic px)")
    fig.colorbar(ScalarMappable(norm=norm, cmap=colours), ax=ax, label="tile residual (px)")
    return fig


def _aspect(tiles: pd.DataFrame, h: int, w: int) -> float:
    height = float(tiles["y_px"].max() - tiles["y_px"].min()) + h
    width = float(tiles["x_px"].max() - tiles["x_px"].min()) + w
    return height / width
