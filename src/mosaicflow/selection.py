"""The particles stage's selection: which measured objects a run lists (large enough, and not cut
by an edge where the policy drops those), in label order, with what it counted and warned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.config import AUTO_MIN_DIAMETER_PX
from mosaicflow.config.values import parse_size

#: The particles stage's scratch table: every object found, before the size and edge selection.
UNFILTERED = "particles_unfiltered"
ECD = "equivalent_diameter_area"
#: Above this many particles the labels' NGFF metadata gets no per-label class colours (one JSON
#: entry per particle).
MAX_LABEL_COLORS = 100_000
#: The flags of particles cut by the mosaic's edge or by an area no tile covers.
EDGE_FLAGS = ("touches_edge", "touches_uncovered")


def min_diameter_nm(min_size: str, pixel_size_nm: Sequence[float]) -> float:
    """``measure.min_size`` (``auto``, ``0``, ``"12 nm"``, ``"3 px"``) as an equivalent diameter
    in nm."""
    size = parse_size(min_size)
    pixel = float(min(pixel_size_nm))
    if size is None:
        return AUTO_MIN_DIAMETER_PX * pixel
    value, unit = size
    return value * pixel if unit == "px" else value


def selection_counts(
    objects: pd.DataFrame,
    min_nm: float,
    *,
    n_pixels: int,
    max_object_fraction: float,
    polarity: str | None,
) -> dict[str, Any]:
    """What the selection does to ``objects`` (every object measured: its ECD, pixel count and
    edge flags): how many there are, too small, at an edge; a warning when one object covers
    more than ``max_object_fraction`` of the ``n_pixels`` mosaic."""
    big = objects[ECD] >= min_nm
    edge = objects[list(EDGE_FLAGS)].any(axis=1)
    info: dict[str, Any] = {
        "min_diameter_nm": min_nm,
        "n_objects": len(objects),
        "n_below_min_size": int((~big).sum()),
        "n_at_edge": int((big & edge).sum()),
    }
    largest = float(objects["num_pixels"].max()) / n_pixels if len(objects) else 0.0
    if largest > max_object_fraction:
        info["warnings"] = [
            f"one object covers {largest:.0%} of the mosaic: the support may have been taken "
            f"for a particle; check --polarity (the threshold took {polarity} objects)"
        ]
    return info


def listed(table: Any, min_diameter_nm: float, edge_policy: str) -> Any:
    """Which rows of a particle table are listed: large enough, and not at an edge when the
    policy drops those."""
    keep = table[ECD] >= min_diameter_nm
    if edge_policy == "drop":
        for flag in EDGE_FLAGS:
            keep = keep & ~table[flag]
    return keep


#: Objects up to which the particles stage reads, filters and sorts the measured table in one
#: process (about 0.4 kB a row: 200 MB at this bound) instead of a shuffle between the
#: workers, whose thousands of small tasks cost more than the sort for any table that fits.
SORT_IN_MEMORY_ROWS = 500_000


def sorted_by_label(table: Any, n_labels: int) -> Any:
    """The table's rows in label order, partitioned by label ranges.

    Rows come chunk by chunk; ids run 1..``n_labels``, so even label ranges serve as the
    partitions' divisions (no pass over the data to find them), and the stored parts read back
    in label order.
    """
    if n_labels < 1:
        return table
    bounds = np.linspace(1, n_labels, table.npartitions + 1).round().astype(np.int64)
    divisions = sorted({int(b) for b in bounds})
    if len(divisions) < 2:
        divisions = [1, n_labels]
    label_dtype = table._meta["label"].dtype
    divisions = [label_dtype.type(d) for d in divisions]
    # Task-based shuffle: a table is small, and the peer-to-peer one logs each use.
    return table.set_index(
        "label", divisions=divisions, sort=True, shuffle_method="tasks"
    ).reset_index()


def probability_mean(part: pd.DataFrame) -> pd.DataFrame:
    """Mean segmentation probability (0..1) from the stored uint8 layer's statistics."""
    part = part.drop(columns=[f"intensity_{s}_probability" for s in ("std", "min", "max")]).rename(
        columns={"intensity_mean_probability": "probability_mean"}
    )
    part["probability_mean"] = part["probability_mean"] / 255.0
    return part
