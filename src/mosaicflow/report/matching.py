"""Ground truth, one to one: found particles matched to true ones by their overlap (IoU).

Three parts, each usable alone:

* the kernel, pure functions on label arrays: :func:`contingency` counts the pixels of every
  (found label, true label) pair of two label images in one ``numpy.unique`` pass, and
  :func:`match` pairs labels whose intersection over union is at least the threshold (0.5),
  one to one; :func:`match_labels` is both on two whole arrays;
* the frame of a synthetic truth (:class:`TileFrame`): the true label mosaic is in the true
  tile frame, the run's labels in the fused frame; :meth:`TileFrame.truth_window` gives the
  true labels the fused mosaic shows at any window of it;
* the chunked driver :func:`contingency_windows`, and :func:`truth_matching`, which runs it on
  a run store and its synthetic input folder.

IoU needs every particle's area and every pair's intersection, which a contingency holds
whatever the number of particles; the driver reads level 0 of both label images in windows
and merges the windows' contingencies, so memory stays one window plus one row per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow._shared.batches import batches
from mosaicflow.errors import ConfigError
from mosaicflow.io.chunk_io import ChunkReader
from mosaicflow.io.store import RunStore
from mosaicflow.report.frames import TileFrame
from mosaicflow.runner import Runner

IOU_THRESHOLD = 0.5
"""A found and a true particle match when their intersection over union is at least this."""

FOUND = "labels/particles"

#: Truth classes that are not particles (HRTEM synthetic data: patches of bare carbon).
NOT_PARTICLES = ("empty",)


# -- kernel ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contingency:
    """Pixel counts of co-occurring labels: ``count[i]`` pixels are ``found[i]`` in one label
    image and ``true[i]`` in the other (0 is background; the pair (0, 0) is not kept).

    Rows are unique and sorted by ``(found, true)``.
    """

    found: np.ndarray
    true: np.ndarray
    count: np.ndarray

    @classmethod
    def empty(cls) -> Contingency:
        """No pixels."""
        z = np.empty(0, dtype=np.int64)
        return cls(z, z.copy(), z.copy())

    @classmethod
    def merge(cls, parts: Iterable[Contingency]) -> Contingency:
        """The contingency of the union of disjoint windows: counts of equal pairs summed."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        found = np.concatenate([p.found for p in parts])
        true = np.concatenate([p.true for p in parts])
        count = np.concatenate([p.count for p in parts])
        return _collapse(found, true, count)

    def keep_found(self, listed: np.ndarray) -> Contingency:
        """The contingency with every found label ``f`` where ``listed[f]`` is False (or
        ``f >= listed.size``) counted as background, as if those objects had been erased
        from the found image before counting."""
        listed = np.asarray(listed, dtype=bool)
        inside = self.found < listed.size
        kept = np.zeros(self.found.size, dtype=bool)
        kept[inside] = listed[self.found[inside]]
        found = np.where(kept, self.found, 0)
        pixels = (found != 0) | (self.true != 0)
        return _collapse(found[pixels], self.true[pixels], self.count[pixels])

    def found_area(self) -> tuple[np.ndarray, np.ndarray]:
        """Found labels (> 0) and their pixel counts."""
        return _area(self.found, self.count)

    def true_area(self) -> tuple[np.ndarray, np.ndarray]:
        """True labels (> 0) and their pixel counts."""
        return _area(self.true, self.count)


def _area(labels: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = labels > 0
    uniq, inverse = np.unique(labels[keep], return_inverse=True)
    return uniq, np.bincount(inverse, weights=count[keep], minlength=uniq.size).astype(np.int64)


def _collapse(found: np.ndarray, true: np.ndarray, count: np.ndarray) -> Contingency:
    key = (found.astype(np.uint64) << np.uint64(32)) | true.astype(np.uint64)
    uniq, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=count, minlength=uniq.size).astype(np.int64)
    return Contingency(
        (uniq >> np.uint64(32)).astype(np.int64),
        (uniq & np.uint64(0xFFFFFFFF)).astype(np.int64),
        summed,
    )


def _as_labels(labels: Any, what: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise ConfigError(f"{what} labels must be integers, got {arr.dtype}")
    fits = arr.dtype.kind == "u" and arr.dtype.itemsize <= 4  # no pass over the pixels
    if arr.size and not fits and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
        raise ConfigError(f"{what} labels must lie in 0 .. 2**32 - 1")
    return arr


def contingency(found: Any, true: Any) -> Contingency:
    """Pixel counts of every (found label, true label) pair of two label images.

    Parameters
    ----------
    found, true : array-like of int, same shape
        Label images (0 = background, labels below ``2**32``).

    Returns
    -------
    Contingency
        One row per pair present, pairs of two background pixels left out.
    """
    f = _as_labels(found, "found")
    t = _as_labels(true, "true")
    if f.shape != t.shape:
        raise ConfigError(f"label images differ in shape: {f.shape} and {t.shape}")
    f, t = f.ravel(), t.ravel()
    keep = (f != 0) | (t != 0)
    f, t = f[keep], t[keep]
    key = (f.astype(np.uint64) << np.uint64(32)) | t.astype(np.uint64)
    uniq, count = np.unique(key, return_counts=True)
    return Contingency(
        (uniq >> np.uint64(32)).astype(np.int64),
        (uniq & np.uint64(0xFFFFFFFF)).astype(np.int64),
        count.astype(np.int64),
    )


@dataclass(frozen=True)
class Matching:
    """Found particles paired one to one with true particles.

    Attributes
    ----------
    iou_threshold : float
    n_found, n_true : int
        Labels present in each image (> 0).
    found, true : ndarray of int64
        The matched labels, pair by pair (sorted by found label).
    iou : ndarray of float64
        Intersection over union of each pair.
    found_area_px, true_area_px : ndarray of int64
        Pixel counts of each matched label.
    """

    iou_threshold: float
    n_found: int
    n_true: int
    found: np.ndarray
    true: np.ndarray
    iou: np.ndarray
    found_area_px: np.ndarray
    true_area_px: np.ndarray

    @property
    def n_matched(self) -> int:
        """Matched pairs (true positives)."""
        return int(self.found.size)

    @property
    def precision(self) -> float:
        """Matched / found (NaN with nothing found)."""
        return self.n_matched / self.n_found if self.n_found else float("nan")

    @property
    def recall(self) -> float:
        """Matched / true (NaN with no true particle)."""
        return self.n_matched / self.n_true if self.n_true else float("nan")

    @property
    def f1(self) -> float:
        """``2 matched / (found + true)``, the harmonic mean of precision and recall."""
        total = self.n_found + self.n_true
        return 2 * self.n_matched / total if total else float("nan")

    @property
    def ecd_relative_error(self) -> np.ndarray:
        """``ECD_found / ECD_true - 1`` of each matched pair, from the pixel areas
        (``ECD = sqrt(4 A / pi)`` times the pixel size, which cancels)."""
        return np.sqrt(self.found_area_px / self.true_area_px) - 1.0

    def summary(self) -> dict[str, Any]:
        """The figures ``summary.json`` reports (percentages as percent, ``None`` if undefined)."""
        err = self.ecd_relative_error * 100.0

        def pct(value: float) -> float | None:
            return None if not np.isfinite(value) else float(100.0 * value)

        def stat(fn: Callable[[np.ndarray], Any], values: np.ndarray) -> float | None:
            return float(fn(values)) if values.size else None

        return {
            "iou_threshold": self.iou_threshold,
            "found_count": self.n_found,
            "true_count": self.n_true,
            "matched_count": self.n_matched,
            "false_positive_count": self.n_found - self.n_matched,
            "false_negative_count": self.n_true - self.n_matched,
            "precision_percent": pct(self.precision),
            "recall_percent": pct(self.recall),
            "f1_percent": pct(self.f1),
            "median_iou": stat(np.median, self.iou),
            "median_ecd_error_percent": stat(np.median, err),
            "mean_ecd_error_percent": stat(np.mean, err),
            "median_abs_ecd_error_percent": stat(np.median, np.abs(err)),
        }


def match(table: Contingency, *, iou_threshold: float = IOU_THRESHOLD) -> Matching:
    """Pair found and true labels one to one where their IoU is at least ``iou_threshold``.

    IoU is ``|F ∩ T| / (|F| + |T| - |F ∩ T|)`` from the contingency's counts. From 0.5 up a
    label can have more than one candidate only in exact ties (two IoUs of exactly 0.5); such
    labels, and every label below 0.5, are resolved greedily by decreasing IoU (then by found
    and true label), each label taken once. Everything else is one vectorised pass.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    f_lab, f_area = table.found_area()
    t_lab, t_area = table.true_area()
    pair = (table.found > 0) & (table.true > 0)
    pf, pt, inter = table.found[pair], table.true[pair], table.count[pair]
    af = f_area[np.searchsorted(f_lab, pf)]
    at = t_area[np.searchsorted(t_lab, pt)]
    iou = inter / (af + at - inter)
    cand = np.flatnonzero(iou >= iou_threshold)
    order = cand[np.lexsort((pt[cand], pf[cand], -iou[cand]))]
    # Candidates whose labels occur once among the candidates are matched directly.
    _, f_inv, f_cnt = np.unique(pf[order], return_inverse=True, return_counts=True)
    _, t_inv, t_cnt = np.unique(pt[order], return_inverse=True, return_counts=True)
    alone = (f_cnt[f_inv] == 1) & (t_cnt[t_inv] == 1)
    chosen = [order[alone]]
    used_f: set[int] = set()
    used_t: set[int] = set()
    tied: list[int] = []
    for i in order[~alone]:  # ties at the threshold (or a threshold below 0.5)
        a, b = int(pf[i]), int(pt[i])
        if a not in used_f and b not in used_t:
            used_f.add(a)
            used_t.add(b)
            tied.append(int(i))
    chosen.append(np.asarray(tied, dtype=np.intp))
    sel = np.concatenate(chosen)
    sel = sel[np.lexsort((pt[sel], pf[sel]))]
    return Matching(
        iou_threshold=float(iou_threshold),
        n_found=int(f_lab.size),
        n_true=int(t_lab.size),
        found=pf[sel],
        true=pt[sel],
        iou=iou[sel].astype(np.float64),
        found_area_px=af[sel],
        true_area_px=at[sel],
    )


def match_labels(found: Any, true: Any, *, iou_threshold: float = IOU_THRESHOLD) -> Matching:
    """:func:`match` of the :func:`contingency` of two whole label images."""
    return match(contingency(found, true), iou_threshold=iou_threshold)


# -- chunked driver --------------------------------------------------------------------------
def windows(shape: tuple[int, int], step: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` of a grid of windows covering ``shape``, raster order."""
    for y0 in range(0, shape[0], step[0]):
        for x0 in range(0, shape[1], step[1]):
            yield y0, min(y0 + step[0], shape[0]), x0, min(x0 + step[1], shape[1])


#: Windows counted by one task of :func:`contingency_windows` on a cluster (a 1024 px window
#: takes about 10 ms; see :mod:`mosaicflow._shared.batches`).
WINDOWS_PER_TASK = 4


def _window_contingency(
    found: Any, true_window: Callable[[int, int, int, int], np.ndarray], box: tuple[int, ...]
) -> Contingency:
    y0, y1, x0, x1 = box
    return contingency(np.asarray(found[y0:y1, x0:x1]), true_window(y0, y1, x0, x1))


def _windows_contingency(
    found: Any, true_window: Callable[[int, int, int, int], np.ndarray], boxes: list[Any]
) -> Contingency:
    """One task's windows, merged."""
    return Contingency.merge(_window_contingency(found, true_window, box) for box in boxes)


def contingency_windows(
    found: Any,
    true_window: Callable[[int, int, int, int], np.ndarray],
    *,
    step: tuple[int, int] = (1024, 1024),
    runner: Runner | None = None,
) -> Contingency:
    """The contingency of a large found label image and a true one, window by window.

    Parameters
    ----------
    found : array-like (H, W)
        Sliceable found labels (a Zarr array: only one window is read at a time).
    true_window : callable
        ``true_window(y0, y1, x0, x1)`` returns the true labels of the same window.
    step : (int, int), keyword-only
        Window size (best a multiple of the stored chunks).
    runner : Runner, optional
        Where the windows are counted: one task per :data:`WINDOWS_PER_TASK` windows on the
        runner's cluster (both ``found`` and ``true_window`` travel to the workers); without
        one, here, in turn.
    """
    shape = (int(found.shape[0]), int(found.shape[1]))
    boxes = list(windows(shape, step))
    if runner is None or runner.client is None:
        parts = [_window_contingency(found, true_window, box) for box in boxes]
    else:
        import dask

        source = dask.delayed((found, true_window), pure=False)  # sent to the cluster once
        tasks = [
            dask.delayed(_windows_contingency, pure=True)(source[0], source[1], some)
            for some in batches(boxes, WINDOWS_PER_TASK)
        ]
        merged = dask.delayed(Contingency.merge, pure=True)(tasks)
        return runner.compute(merged, "truth matching")
    return Contingency.merge(parts)


# -- a run against its synthetic truth -------------------------------------------------------
def truth_matching(
    store: RunStore,
    truth_table: pd.DataFrame,
    *,
    found_labels: np.ndarray | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    window: int = 1024,
    runner: Runner | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Match the run's particles to its synthetic input's true particles, one to one.

    ``found_labels`` are the labels the particle table lists (default: every label of the
    label image); objects of the label image that the table does not list (below the minimum
    size, or dropped at an edge) count as background, so the figures are those of the table
    the user gets.

    Needs the store's ``labels/particles`` and ``tiles`` table and, in the input folder
    (``store.meta["tileset"]["folder"]``), ``ground_truth/labels.zarr`` and
    ``ground_truth/tile_origins.csv``. The true labels are brought into the fused frame
    tile by tile (:class:`TileFrame`); true particles that no tile shows (missing tiles)
    cannot be found and are counted apart (``true_not_shown_count``); true labels of a class
    that is not a particle (``empty``) count as background.

    Returns
    -------
    figures : dict or None
        :meth:`Matching.summary` plus ``true_not_shown_count`` and ``method``; ``None`` when
        something needed is missing.
    notes : list of str
        Why it was skipped, if it was.
    """
    from mosaicflow.synth import read_ground_truth, truth_labels

    tileset = store.meta.get("tileset") or {}
    folder = tileset.get("folder")
    if not folder:
        return None, ["ground truth: the run records no input folder: no one-to-one matching"]
    gt_dir = Path(folder) / "ground_truth"
    if not (gt_dir / "labels.zarr").exists() or not (gt_dir / "tile_origins.csv").exists():
        return None, [
            f"ground truth: {gt_dir} has no labels.zarr or tile_origins.csv: "
            "no one-to-one matching (counts only)"
        ]
    if not store.has_image(FOUND) or not store.has_table("tiles"):
        return None, ["ground truth: the store has no labels or no tiles table: no matching"]
    truth = ChunkReader(truth_labels(folder))
    _, origins = read_ground_truth(folder)
    found = ChunkReader(store.open_level(FOUND, 0))
    tile_shape = tuple(tileset.get("tile_shape") or ())
    if len(tile_shape) != 2:
        return None, ["ground truth: the run records no tile shape: no matching"]
    try:
        frame = TileFrame.from_tables(store.read_table("tiles"), origins, tile_shape)
    except ConfigError as exc:
        return None, [f"ground truth: {exc}: no matching"]
    if frame.fused_shape != tuple(int(s) for s in found.shape):
        return None, [
            f"ground truth: the tiles' positions span {frame.fused_shape} px but the labels "
            f"are {tuple(found.shape)} px (mosaic fused from other positions?): no matching"
        ]
    listed: np.ndarray | None = None
    if found_labels is not None:
        found_labels = np.asarray(found_labels, dtype=np.int64)
        listed = np.zeros(int(found_labels.max(initial=0)) + 1, dtype=bool)
        listed[found_labels[found_labels > 0]] = True
    excluded = np.empty(0, dtype=np.int64)
    if "class" in truth_table and "label" in truth_table:
        excluded = truth_table.loc[truth_table["class"].isin(NOT_PARTICLES), "label"].to_numpy(
            np.int64
        )

    def true_window(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = frame.truth_window(truth, y0, y1, x0, x1)
        if excluded.size:
            out[np.isin(out, excluded)] = 0
        return out

    chunks = getattr(found, "chunks", (window, window))
    step = tuple(max(1, window // int(c)) * int(c) for c in chunks[:2])
    table = contingency_windows(found, true_window, step=(step[0], step[1]), runner=runner)
    if listed is not None:  # objects the table does not list count as background
        table = table.keep_found(listed)
    result = match(table, iou_threshold=iou_threshold)
    figures = result.summary()
    true_labels = truth_table["label"].to_numpy(np.int64) if "label" in truth_table else None
    if true_labels is not None:
        true_labels = np.setdiff1d(true_labels, excluded)
        shown, _ = table.true_area()
        figures["true_not_shown_count"] = int(np.setdiff1d(true_labels, shown).size)
    figures["method"] = (
        f"true labels mapped into the fused frame tile by tile (true origin - fused origin), "
        f"found and true particles paired one to one at IoU >= {iou_threshold:g}"
    )
    return figures, []
