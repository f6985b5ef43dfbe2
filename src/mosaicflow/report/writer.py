"""``write_report``: the run's ``report/`` folder (summary.json, PNG figures, index.html)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mosaicflow.io.store import RunStore
from mosaicflow.measure._kernel import FLAG_COLUMNS
from mosaicflow.report import overlay, plots
from mosaicflow.report.page import FigureEntry, render_page
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
    shape_statistics,
    size_statistics,
    stage_timings,
    truth_class_fractions,
)

BBOX = ("bbox-0", "bbox-1", "bbox-2", "bbox-3")
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


class _Writer:
    def __init__(self, store: RunStore, *, clear: bool) -> None:
        self.store = store
        if clear:
            store.clear_report()
        self.figures: list[FigureEntry] = []

    def figure(self, key: str, fig: Figure, title: str, caption: str, *, dpi: float = 100) -> None:
        name = f"{key}.png"
        self.store.write_report_file(name, plots.png_bytes(fig, dpi=dpi))
        self.figures.append(FigureEntry(key, name, title, caption))

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
    table = read_columns(store, "particles", TABLE_COLUMNS)
    n = len(table)
    ecd = table[ECD].to_numpy(dtype=np.float64) if ECD in table else np.empty(0)
    sizes = size_statistics(ecd)

    stages = meta.get("stages", {})
    particles: dict[str, Any] = {"count": n, **sizes}
    for flag in FLAG_COLUMNS:
        if flag in table:
            particles[flag] = int(table[flag].to_numpy(dtype=bool, na_value=False).sum())
    summary: dict[str, Any] = {
        "mosaicflow_version": meta.get("version"),
        "store": store.url,
        "created": meta.get("created"),
        "mosaic_shape": stages.get("mosaic", {}).get("shape")
        or (
            list(overlay.level_shape(store, image))
            if overlay.available_levels(store, image)
            else None
        ),
        "pixel_size_nm": meta.get("tileset", {}).get("pixel_size_nm"),
        "threshold": stages.get("probability", {}).get("threshold"),
        "segmenter": stages.get("probability", {}).get("segmenter"),
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
    truth_fractions: dict[str, float] | None = None
    if store.has_table("ground_truth"):
        truth = store.read_table("ground_truth")
        gt = compare_with_truth(table, truth)
        true_classes = truth_class_fractions(truth)
        if true_classes is not None:
            gt["class_fractions"] = true_classes
            truth_fractions = {r["class"]: r["fraction"] for r in true_classes}
        summary["ground_truth"] = gt

    summary["stages"] = stage_timings(meta)

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
        table["label"].to_numpy(dtype=np.int64) if "label" in table else np.empty(0, np.int64)
    )
    image_name = image if overlay.available_levels(store, image) else None
    lab_levels = overlay.available_levels(store, overlay.LABELS)
    colors = overlay.class_colors_for_labels(label_col, codes, names)
    view = overlay.overview(store, colors, image=image, max_px=overview_px)
    summary["overview"] = None
    limits = None
    if view is None:
        notes.append(f"the store has no {image!r} image and no labels: no overlay thumbnails")
    else:
        limits = view.limits if image_name else None
        h, w = view.rgb.shape[:2]
        what = "outlines" if lab_levels else "no labels stored"
        fig, _ = overlay.outline_figure(
            view.rgb,
            title=f"Whole mosaic, 1/{view.factor} resolution ({w} x {h} px), {what}"
            + ("" if n else ": no particles"),
            legend=colors.legend if lab_levels else (),
        )
        out.figure(
            "overview",
            fig,
            "Overview",
            f"The whole mosaic at 1/{view.factor} of full resolution (pyramid level "
            f"{view.image_level}), particle outlines (inner boundary) coloured by class; thin "
            "particles may show as solid at this scale.",
        )
        summary["overview"] = {
            "factor": view.factor,
            "image_level": view.image_level,
            "labels_level": view.labels_level,
        }
        shape0 = overlay.level_shape(store, image if image_name else overlay.LABELS)
        centres = overlay.particle_centres_px(table, store)
        size_col = next((c for c in ("num_pixels", "area", ECD) if c in table), None)
        size_values = table[size_col].to_numpy(dtype=np.float64) if size_col else None
        crops = overlay.pick_crops(centres, size_values, shape0, crop_px=crop_px, seed=seed)
        summary["crops"] = []
        pixel = (meta.get("tileset") or {}).get("pixel_size_nm")
        for crop in crops:
            rgb, _ = overlay.crop_rgb(store, crop, colors, image=image, limits=limits)
            extent = ""
            if pixel:
                extent = f" = {crop.h * pixel[0] / 1000:.2f} x {crop.w * pixel[1] / 1000:.2f} µm"
            title = (
                f"Full resolution, {crop.reason}\nrows {crop.y0}–{crop.y0 + crop.h}, "
                f"columns {crop.x0}–{crop.x0 + crop.w} ({crop.h} x {crop.w} px{extent})"
            )
            fig, _ = overlay.outline_figure(
                rgb, title=title, legend=colors.legend if lab_levels else ()
            )
            out.figure(
                f"crop_{crop.name}",
                fig,
                f"Full resolution: {crop.reason}",
                f"Full-resolution window of {crop.h} x {crop.w} px at row {crop.y0}, column "
                f"{crop.x0}, outlines coloured by class, for judging the segmentation.",
            )
            summary["crops"].append(
                {
                    "name": crop.name,
                    "reason": crop.reason,
                    "y0": crop.y0,
                    "x0": crop.x0,
                    "h": crop.h,
                    "w": crop.w,
                }
            )
        if centres is None and n:
            notes.append("the particle table has no bbox or centroid columns: crops not placed")

    summary["figures"] = {f.key: f.file for f in out.figures}
    summary["notes"] = notes
    summary["columns_read"] = [c for c in TABLE_COLUMNS if c in available]
    summary = jsonable(summary)
    out.text("summary.json", json.dumps(summary, indent=2, allow_nan=False))
    out.text("index.html", render_page(summary, out.figures, meta))
    return summary
