"""``write_report``: the run's ``report/`` folder (summary.json, PNG figures, index.html)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mosaicflow.io.store import RunStore
from mosaicflow.measure._kernel import FLAG_COLUMNS
from mosaicflow.report import matching, overlay, plots
from mosaicflow.report.page import FigureEntry, render_page
from mosaicflow.report.scalebar import ScaleBar, image_nm_per_px, length_label, scale_bar
from mosaicflow.report.stitching import plot_tile_residuals, stitching_quality
from mosaicflow.report.summary import (
    ECD,
    SUMMARY_SHAPE_COLUMNS,
    class_summary,
    classify_info,
    compare_with_truth,
    encode_classes,
    jsonable,
    read_columns,
    records,
    segmentation_fields,
    shape_statistics,
    size_statistics,
    stage_timings,
    truth_class_fractions,
)
from mosaicflow.runner import Runner

BBOX = tuple(f"{prefix}-{i}" for prefix in ("bbox_px", "bbox") for i in range(4))
TABLE_COLUMNS = (
    "label",
    ECD,
    *SUMMARY_SHAPE_COLUMNS,
    "class",
    "num_pixels",
    "area",
    *BBOX,
    "centroid-0",
    "centroid-1",
    *FLAG_COLUMNS,
)
"""The particle-table columns the report reads (those present); nothing else is loaded."""

USER_FLAGS = ("touches_edge", "touches_uncovered")
"""Flags shown to users: particles cut by the mosaic's edge or by a missing tile."""
DIAGNOSTIC_FLAGS = tuple(f for f in FLAG_COLUMNS if f not in USER_FLAGS)
"""Flags about the run's own chunking (``touches_chunk``): in ``summary.json`` under
``diagnostics``, never on the page."""


class _Writer:
    """The report folder's files. Within :meth:`compressing`, a figure is drawn on the calling
    thread, then compressed and written by one background thread while the next one is drawn
    (Pillow releases the GIL as it compresses)."""

    def __init__(self, store: RunStore, *, clear: bool) -> None:
        self.store = store
        if clear:
            store.clear_report()
        self.figures: list[FigureEntry] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    @contextmanager
    def compressing(self) -> Iterator[None]:
        """Figures compressed in the background; all written, or failed, at the block's end."""
        with ThreadPoolExecutor(1, thread_name_prefix="mosaicflow-report-png") as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def figure(self, key: str, fig: Figure, title: str, caption: str, *, dpi: float = 100) -> None:
        name = f"{key}.png"
        pixels = plots.render(fig, dpi=dpi)
        assert self._pool is not None, "figures are drawn within compressing()"
        self._pending.append(self._pool.submit(self._write_png, name, pixels))
        self.figures.append(FigureEntry(key, name, title, caption))

    def _write_png(self, name: str, pixels: np.ndarray) -> None:
        self.store.write_report_file(name, plots.encode_png(pixels))

    def finish(self) -> None:
        """Raise the first error of the background writes (ended with :meth:`compressing`)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def text(self, name: str, text: str) -> None:
        self.store.write_report_file(name, text)


def write_report(
    store: RunStore,
    *,
    overview_px: int = 2048,
    crop_px: int = 512,
    max_scatter_points: int = 50_000,
    seed: int = 0,
    image: str = "mosaic",
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Write the run's report into ``<store>/report/`` and return its summary.

    Files: ``summary.json``, ``index.html`` (one self-contained page) and PNG figures:
    ``size_histogram.png`` (linear bins), ``size_histogram_log.png`` (log-spaced bins),
    ``shape_scatter.png`` (ECD against circularity; needs a ``circularity`` column),
    ``class_fractions.png`` (needs a ``class`` column), ``overview.png`` (outlines over the
    whole mosaic) and ``crop_<pick>.png`` (full-resolution outlines around the densest region,
    a random and the largest particle).

    Parameters
    ----------
    store : RunStore
        A run store with a ``particles`` table; images, ground truth and classification
        metadata are used when present.
    overview_px : int, keyword-only
        Longest side of the overview thumbnail (the pyramid level is chosen to fit it).
    crop_px : int, keyword-only
        Side of the full-resolution crops.
    max_scatter_points : int, keyword-only
        Above this many particles the shape scatter shows a seeded random sample.
    seed : int, keyword-only
        Seed of the random crop and of the scatter's sample.
    image : str, keyword-only
        Store image under the outlines (``"mosaic"``; ``"denoised"`` also works).
    runner : Runner, keyword-only, optional
        The run's cluster: a synthetic run's one-to-one matching against its ground truth
        counts its windows there, in parallel (without one, here).

    Returns
    -------
    dict
        The summary written to ``summary.json`` (strict JSON: non-finite numbers are
        ``null``). ``summary["particles"]`` holds ``count`` and the size statistics,
        ``summary["figures"]`` the file name of every figure, relative to ``report/``.

    Notes
    -----
    Reads only the table columns it uses (``TABLE_COLUMNS``), one pyramid level of the image
    and labels for the overview and ``crop_px``-sized windows of level 0 for the crops; never
    the full-resolution mosaic. Every step is vectorised over the particles: a table of a
    million rows takes seconds.
    """
    out = _Writer(store, clear=True)
    meta = store.meta
    notes: list[str] = []
    available = set(store.table_columns("particles"))
    listed = read_columns(store, "particles", TABLE_COLUMNS)
    selection = meta.get("stages", {}).get("particles", {})
    policy = selection.get("edge_policy", "keep")
    flags = [f for f in USER_FLAGS if f in listed]
    at_edge = (
        listed[flags].to_numpy(dtype=bool, na_value=False).any(axis=1)
        if flags
        else np.zeros(len(listed), dtype=bool)
    )
    # With the "flag" policy, particles cut by an edge are listed (and outlined) but left out
    # of the statistics.
    table = listed[~at_edge].reset_index(drop=True) if policy == "flag" else listed
    n = len(table)
    ecd = table[ECD].to_numpy(dtype=np.float64) if ECD in table else np.empty(0)
    sizes = size_statistics(ecd)

    stages = meta.get("stages", {})
    particles: dict[str, Any] = {
        "count": n,
        "listed": len(listed),
        "edge_policy": policy,
        "at_edge": int(at_edge.sum()),
        "objects_found": selection.get("n_objects"),
        "below_min_size": selection.get("n_below_min_size"),
        "min_diameter_nm": selection.get("min_diameter_nm"),
        **sizes,
    }
    diagnostics: dict[str, Any] = {}
    for flag in FLAG_COLUMNS:
        if flag in listed:
            count = int(listed[flag].to_numpy(dtype=bool, na_value=False).sum())
            (particles if flag in USER_FLAGS else diagnostics)[flag] = count
    shape_px = stages.get("mosaic", {}).get("shape") or (
        list(overlay.level_shape(store, image)) if overlay.available_levels(store, image) else None
    )
    summary: dict[str, Any] = {
        "mosaicflow_version": meta.get("version"),
        "store": store.url,
        "created": meta.get("created"),
        "mosaic_shape_px": shape_px,
        "pixel_size_nm": meta.get("tileset", {}).get("pixel_size_nm"),
        **segmentation_fields(meta),
        "particles": particles,
        "shape": shape_statistics(table),
    }

    # -- classes ---------------------------------------------------------------------------
    codes: np.ndarray | None = None
    names: list[str] = []
    fractions: pd.DataFrame | None = None
    if "class" in table:
        meta_classes, confusion = classify_info(meta)
        codes, names = encode_classes(table["class"], meta_classes)
        fractions, class_notes = class_summary(
            table["class"], meta_classes or names, confusion=confusion, ecd_nm=ecd
        )
        notes += class_notes
        summary["classes"] = {
            "names": names,
            "n_classified": int(fractions.attrs.get("n", 0)),
            "unclassified": int(fractions.attrs.get("unclassified", 0)),
            "adjusted": "adjusted_fraction" in fractions,
            "fractions": records(fractions),
        }
    else:
        summary["classes"] = None
        notes.append("the particle table has no class column: no class fractions")

    # -- ground truth ----------------------------------------------------------------------
    # The one-to-one matching counts its windows on the cluster while the figures are drawn
    # here (it only adds to the summary): the stage takes the longer of the two, not the sum.
    truth_fractions: dict[str, float] | None = None
    gt: dict[str, Any] | None = None
    with (
        ThreadPoolExecutor(1, thread_name_prefix="mosaicflow-truth-matching") as pool,
        out.compressing(),
    ):
        pending: Future[tuple[dict[str, Any] | None, list[str]]] | None = None
        if store.has_table("ground_truth"):
            truth = store.read_table("ground_truth")
            gt = compare_with_truth(listed, truth)
            gt["matching"] = None  # its place in the summary, filled when the matching is done
            pending = pool.submit(
                matching.truth_matching,
                store,
                truth,
                found_labels=listed["label"].to_numpy() if "label" in listed else None,
                runner=runner,
            )
            true_classes = truth_class_fractions(truth)
            if true_classes is not None:
                gt["class_fractions"] = true_classes
                truth_fractions = {r["class"]: r["fraction"] for r in true_classes}
            summary["ground_truth"] = gt
        _figures(
            out,
            store,
            summary,
            notes,
            table=table,
            listed=listed,
            ecd=ecd,
            sizes=sizes,
            diagnostics=diagnostics,
            codes=codes,
            names=names,
            fractions=fractions,
            truth_fractions=truth_fractions,
            overview_px=overview_px,
            crop_px=crop_px,
            max_scatter_points=max_scatter_points,
            seed=seed,
            image=image,
        )
    out.finish()
    if pending is not None:
        assert gt is not None  # set with `pending`
        gt["matching"], match_notes = pending.result()
        notes += match_notes

    summary["figures"] = {f.key: f.file for f in out.figures}
    summary["notes"] = notes
    summary["columns_read"] = [c for c in TABLE_COLUMNS if c in available]
    summary = jsonable(summary)
    out.text("summary.json", json.dumps(summary, indent=2, allow_nan=False))
    out.text("index.html", render_page(summary, out.figures, meta))
    return summary


def _figures(
    out: _Writer,
    store: RunStore,
    summary: dict[str, Any],
    notes: list[str],
    *,
    table: pd.DataFrame,
    listed: pd.DataFrame,
    ecd: np.ndarray,
    sizes: dict[str, Any],
    diagnostics: dict[str, Any],
    codes: np.ndarray | None,
    names: list[str],
    fractions: pd.DataFrame | None,
    truth_fractions: dict[str, float] | None,
    overview_px: int,
    crop_px: int,
    max_scatter_points: int,
    seed: int,
    image: str,
) -> None:
    """Every figure of the report, and the summary entries that describe them (stitching,
    stage timings, diagnostics, overview, crops); see :func:`write_report`."""
    meta = store.meta
    n = len(table)
    summary["stitching"] = stitching_quality(store)
    tile_shape = meta.get("tileset", {}).get("tile_shape")
    if summary["stitching"] is not None and tile_shape:
        tiles = store.read_table("tiles")
        pairs = store.read_table("pairs") if store.has_table("pairs") else None
        shape = (int(tile_shape[0]), int(tile_shape[1]))
        out.figure(
            "tile_residuals",
            plot_tile_residuals(tiles, pairs, shape),
            "Registration residuals",
            "Tiles at their registered positions, coloured by their largest residual after the "
            "global solve (grey: no kept pair, placed by the stage model); solid black lines "
            "join pairs kept, dashed red lines pairs rejected.",
        )
    summary["stages"] = stage_timings(meta)
    summary["diagnostics"] = diagnostics

    # -- size figures ----------------------------------------------------------------------
    for log in (False, True):
        fig, hist = plots.plot_size_histogram(
            ecd, class_codes=codes, class_names=names, log=log, stats=sizes
        )
        key = "size_histogram_log" if log else "size_histogram"
        scale = "log-spaced bins, log axis" if log else "linear bins"
        caption = (
            f"Equivalent circular diameter ({scale}, {hist.edges.size - 1} bins): "
            "D10, D50, D90 and the mean marked"
            + ("; one step line per class over all particles (grey)" if codes is not None else "")
            + (f"; {hist.outside} particles outside the range" if hist.outside else "")
            + "."
        )
        out.figure(key, fig, f"Size distribution ({scale})", caption)

    # -- shape -----------------------------------------------------------------------------
    if "circularity" in table:
        fig, scatter = plots.plot_shape_scatter(
            ecd,
            table["circularity"].to_numpy(dtype=np.float64, na_value=np.nan),
            class_codes=codes,
            class_names=names,
            max_points=max_scatter_points,
            seed=seed,
        )
        caption = "Circularity 4πA/P² against equivalent circular diameter (log axis)"
        if scatter.sampled:
            caption += (
                f"; a random sample of {scatter.rows.size:,} of {scatter.total:,} particles "
                f"(seed {seed})"
            )
        out.figure("shape_scatter", fig, "Shape against size", caption + ".")
    else:
        notes.append(
            "the particle table has no circularity column (made before shape measurements): "
            "no shape scatter"
        )

    # -- class fractions -------------------------------------------------------------------
    if fractions is not None:
        fig = plots.plot_class_fractions(fractions, truth=truth_fractions)
        caption = "Fraction of classified particles per class, raw with Wilson 95 % intervals"
        if "adjusted_fraction" in fractions:
            caption += (
                ", and adjusted for the classifier's held-out confusion matrix with a "
                "bootstrap 95 % interval"
            )
        else:
            caption += " (no confusion matrix recorded: not adjusted)"
        if truth_fractions:
            caption += "; black lines: ground truth"
        out.figure("class_fractions", fig, "Class fractions", caption + ".")

    # -- overlays --------------------------------------------------------------------------
    label_col = (
        listed["label"].to_numpy(dtype=np.int64) if "label" in listed else np.empty(0, np.int64)
    )
    image_name = image if overlay.available_levels(store, image) else None
    lab_levels = overlay.available_levels(store, overlay.LABELS)
    listed_codes = encode_classes(listed["class"], names)[0] if codes is not None else None
    colors = overlay.class_colors_for_labels(label_col, listed_codes, names)
    legend = colors.legend if lab_levels and codes is not None else ()
    coloured = (
        "coloured by class"
        if codes is not None
        else f"in {plots.SINGLE_COLOR_NAME} (one colour: the run has no classification)"
    )
    view = overlay.overview(store, colors, image=image, max_px=overview_px)
    summary["overview"] = None
    limits = None
    pixel_source = image if image_name else overlay.LABELS
    if view is None:
        notes.append(f"the store has no {image!r} image and no labels: no overlay thumbnails")
    else:
        limits = view.limits if image_name else None
        h, w = view.rgb.shape[:2]
        nm_px = image_nm_per_px(store, pixel_source, view.factor)
        bar = scale_bar(w, nm_px)
        what = "particle outlines" if lab_levels else "no labels stored"
        fig, _ = overlay.outline_figure(
            view.rgb,
            title=f"Whole mosaic, 1/{view.factor} resolution ({w} x {h} px"
            + _extent(h, w, nm_px)
            + f"), {what}"
            + ("" if n else ": no particles"),
            legend=legend,
            bar=bar,
        )
        out.figure(
            "overview",
            fig,
            "Overview",
            f"The whole mosaic at 1/{view.factor} of full resolution (pyramid level "
            f"{view.image_level}"
            + (f", {nm_px:g} nm per pixel" if nm_px else "")
            + ")"
            + (f", particle outlines (inner boundary) {coloured}" if lab_levels else "")
            + "; thin particles may show as solid at this scale."
            + _bar_caption(bar),
        )
        summary["overview"] = {
            "factor": view.factor,
            "image_level": view.image_level,
            "labels_level": view.labels_level,
            "nm_per_px": nm_px,
            "scale_bar": bar.as_dict() if bar else None,
        }
        if bar is None:
            notes.append("the image has no pixel size: overview without a scale bar")
        shape0 = overlay.level_shape(store, image if image_name else overlay.LABELS)
        centres = overlay.particle_centres_px(listed, store)
        size_col = next((c for c in ("num_pixels", "area", ECD) if c in listed), None)
        size_values = listed[size_col].to_numpy(dtype=np.float64) if size_col else None
        crops = overlay.pick_crops(centres, size_values, shape0, crop_px=crop_px, seed=seed)
        summary["crops"] = []
        nm_px0 = image_nm_per_px(store, pixel_source, 1)
        for crop in crops:
            rgb, _ = overlay.crop_rgb(store, crop, colors, image=image, limits=limits)
            bar = scale_bar(crop.w, nm_px0)
            title = (
                f"Full resolution, {crop.reason}\nrows {crop.y0}–{crop.y0 + crop.h}, "
                f"columns {crop.x0}–{crop.x0 + crop.w} ({crop.w} x {crop.h} px"
                + _extent(crop.h, crop.w, nm_px0)
                + ")"
            )
            fig, _ = overlay.outline_figure(rgb, title=title, legend=legend, bar=bar)
            out.figure(
                f"crop_{crop.name}",
                fig,
                f"Full resolution: {crop.reason}",
                f"Full-resolution window of {crop.w} x {crop.h} px (width x height)"
                + _extent(crop.h, crop.w, nm_px0, sep=" = ")
                + f" at row {crop.y0}, column {crop.x0}"
                + (f", particle outlines {coloured}" if lab_levels else "")
                + ", for judging the segmentation."
                + _bar_caption(bar),
            )
            summary["crops"].append(
                {
                    "name": crop.name,
                    "reason": crop.reason,
                    "y0_px": crop.y0,
                    "x0_px": crop.x0,
                    "h_px": crop.h,
                    "w_px": crop.w,
                    "scale_bar": bar.as_dict() if bar else None,
                }
            )
        if centres is None and n:
            notes.append("the particle table has no bbox or centroid columns: crops not placed")


def _extent(h: int, w: int, nm_per_px: float | None, *, sep: str = " = ") -> str:
    """``" = 1.02 x 1.02 µm"``: a picture's width x height in the specimen, or ``""`` without
    a pixel size."""
    if not nm_per_px:
        return ""
    big = max(h, w) * nm_per_px >= 1000
    div, unit = (1000.0, "µm") if big else (1.0, "nm")
    return f"{sep}{w * nm_per_px / div:.3g} x {h * nm_per_px / div:.3g} {unit}"


def _bar_caption(bar: ScaleBar | None) -> str:
    if bar is None:
        return ""
    return (
        f" Scale bar above the image: {length_label(bar.length_nm)} "
        f"({bar.length_px} px at {bar.nm_per_px:g} nm per pixel)."
    )
