"""``index.html``: the report as one self-contained page (inline CSS, no scripts).

Every string that comes from the store (class names, paths, configuration values, notes) is
passed through ``html.escape``; figures are linked by their file names in ``report/``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: The particle flags a user sees, with their meaning (``touches_chunk`` is a diagnostic of the
#: run's chunking and stays in ``summary.json``).
USER_FLAGS = {
    "touches_edge": "cut by the mosaic's edge",
    "touches_uncovered": "cut by an area no tile covers (missing tile)",
}

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
h3 { margin: 1em 0 0.2em; font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 900px; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.muted { color: #666; }
"""


@dataclass(frozen=True)
class FigureEntry:
    """One figure of the report: file name (in ``report/``), title and caption."""

    key: str
    file: str
    title: str
    caption: str


def esc(value: Any) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, *, digits: int = 4) -> str:
    """A number for a table cell: 4 significant digits, thousands separated; ``–`` for none."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 10**digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return esc(value)


class Quantity(str):
    """Text of a number with its unit (``"56.46 nm"``, ``"-1.7 %"``): a right-aligned cell."""


def quantity(value: Any, unit: str = "", *, digits: int = 4) -> str:
    """``value`` formatted by :func:`fmt`, followed by ``unit``; ``–`` for none."""
    if value is None:
        return "–"
    text = fmt(value, digits=digits)
    return Quantity(f"{text} {unit}" if unit else text)


def percent(value: Any, *, digits: int = 1) -> str:
    """A value already in percent as ``"-1.7 %"`` (``–`` for none)."""
    if value is None:
        return "–"
    return Quantity(f"{float(value):.{digits}f} %")


def fraction_percent(value: Any, *, digits: int = 1) -> str:
    """A fraction (0..1) as a percentage, ``"33.1 %"``."""
    return "–" if value is None else percent(100.0 * float(value), digits=digits)


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float | Quantity) and not isinstance(value, bool)
    text = esc(value) if isinstance(value, Quantity) else fmt(value)
    return f"<td class='num'>{text}</td>" if numeric else f"<td>{text}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; header and cells escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval(low: Any, high: Any) -> str:
    """A fraction's interval as percentages: ``"30.2 – 36.0 %"``."""
    if low is None or high is None:
        return "–"
    return Quantity(f"{100 * low:.1f} – {100 * high:.1f} %")


def _extent(shape_px: Sequence[int], pixel: Any) -> str:
    """``"6468 x 3348 px (width x height) = 12.9 x 6.70 µm"``."""
    h, w = int(shape_px[0]), int(shape_px[1])
    text = f"{w} x {h} px (width x height)"
    if isinstance(pixel, list | tuple) and len(pixel) == 2:
        hn, wn = h * float(pixel[0]), w * float(pixel[1])
        div, unit = (1000.0, "µm") if max(hn, wn) >= 1000 else (1.0, "nm")
        text += f" = {wn / div:.3g} x {hn / div:.3g} {unit}"
    return text


def _provenance(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    tileset = meta.get("tileset") or {}
    pixel = summary.get("pixel_size_nm")
    pixel_text: str | None = None
    if isinstance(pixel, list | tuple) and len(pixel) == 2:
        if pixel[0] == pixel[1]:
            pixel_text = f"{pixel[0]:g} nm (square pixels)"
        else:
            pixel_text = f"{pixel[1]:g} nm wide x {pixel[0]:g} nm high"
    threshold: Any = None
    if summary.get("threshold_grey_level") is not None:
        threshold = f"{fmt(summary['threshold_grey_level'])} ({summary.get('threshold_unit')})"
    elif summary.get("threshold_probability") is not None:
        threshold = f"{fmt(summary['threshold_probability'])} ({summary.get('threshold_unit')})"
    polarity = (meta.get("stages", {}).get("probability") or {}).get("polarity")
    rows = [
        ("mosaicflow version", summary.get("mosaicflow_version")),
        ("created", summary.get("created")),
        ("run store", summary.get("store")),
        ("input", tileset.get("folder")),
        ("pixel size", pixel_text),
        (
            "tile grid",
            f"{tileset['rows']} rows x {tileset['cols']} columns of tiles, each "
            f"{tileset['tile_shape'][1]} x {tileset['tile_shape'][0]} px (width x height)"
            if {"rows", "cols", "tile_shape"} <= set(tileset)
            else None,
        ),
        (
            "mosaic",
            _extent(summary["mosaic_shape_px"], pixel) if summary.get("mosaic_shape_px") else None,
        ),
        ("segmenter", summary.get("segmenter")),
        ("threshold", threshold),
    ]
    if polarity in ("bright", "dark"):
        rows.append(("particles are", f"{polarity}er than their support"))
    return "<h2 id='provenance'>Run</h2>" + table(("", "value"), rows)


def _truth(truth: dict[str, Any], classes: dict[str, Any] | None) -> str:
    rows: list[tuple[Any, ...]] = [
        (
            "particles",
            truth["true_count"],
            truth["found_count"],
            percent(truth.get("count_error_percent")),
        ),
        (
            "median ECD",
            quantity(truth["true_median_ecd_nm"], "nm"),
            quantity(truth["found_median_ecd_nm"], "nm"),
            percent(truth.get("median_ecd_error_percent")),
        ),
    ]
    block = (
        "<p class='muted'>Totals: relative error = (found − true) / true. Totals can hide "
        "errors that cancel; the one-to-one comparison below does not.</p>"
        + table(("", "truth", "found", "relative error"), rows)
    )
    m = truth.get("matching")
    if m:
        thr = m["iou_threshold"]
        rows = [
            ("true particles shown in the mosaic", m["true_count"]),
            *(
                [("true particles no tile shows (missing tiles)", m["true_not_shown_count"])]
                if "true_not_shown_count" in m
                else []
            ),
            ("found particles", m["found_count"]),
            (f"matched one to one (IoU ≥ {thr:g})", m["matched_count"]),
            ("missed (true, not matched)", m["false_negative_count"]),
            ("false (found, not matched)", m["false_positive_count"]),
            ("precision (matched / found)", percent(m["precision_percent"])),
            ("recall (matched / true)", percent(m["recall_percent"])),
            ("F1 (harmonic mean of precision and recall)", percent(m["f1_percent"])),
            ("median IoU of matched pairs (0 to 1)", quantity(m["median_iou"], digits=3)),
            ("median ECD error of matched pairs", percent(m["median_ecd_error_percent"])),
            ("mean ECD error of matched pairs", percent(m["mean_ecd_error_percent"])),
            (
                "median absolute ECD error of matched pairs",
                percent(m["median_abs_ecd_error_percent"]),
            ),
        ]
        block += (
            "<h3>Particle by particle</h3><p class='muted'>Each found particle is paired with "
            f"at most one true particle, where their intersection over union is ≥ {thr:g}. "
            "The true label mosaic is in the true tile frame; it is brought into the fused "
            "frame tile by tile (each tile's true origin minus its stage-based position), so "
            "a particle is compared with exactly the pixels the mosaic shows of it. ECD error "
            "= ECD found / ECD true − 1, from the pixel areas.</p>" + table(("", "value"), rows)
        )
    if truth.get("class_fractions"):
        found = {r["class"]: r["fraction"] for r in (classes or {}).get("fractions", []) or []}
        block += table(
            ("class", "true count", "true fraction", "found fraction"),
            [
                (
                    r["class"],
                    r["count"],
                    fraction_percent(r["fraction"]),
                    fraction_percent(found.get(r["class"])),
                )
                for r in truth["class_fractions"]
            ],
        )
    return "<h2 id='truth'>Ground truth</h2>" + block


def _sections(summary: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    parts: list[str] = [_provenance(summary, meta)]

    p = summary["particles"]
    rows: list[tuple[Any, ...]] = []
    if p.get("objects_found") is not None:
        rows.append(("objects the segmentation found", p["objects_found"]))
    if p.get("below_min_size") is not None and p.get("min_diameter_nm") is not None:
        rows.append(
            (
                f"smaller than the minimum size ({quantity(p['min_diameter_nm'], 'nm')} "
                "equivalent diameter): not listed",
                p["below_min_size"],
            )
        )
    for flag, name in USER_FLAGS.items():
        if flag in p:
            rows.append((name, p[flag]))
    policy = p.get("edge_policy", "keep")
    if policy == "flag":
        rows.append(("listed in the table", p.get("listed", p["count"])))
        rows.append(("counted in the statistics (not cut by an edge)", p["count"]))
    else:
        note = " (cut particles not listed)" if policy == "drop" else ""
        rows.append((f"particles, listed and counted{note}", p["count"]))
    parts.append("<h2 id='particles'>Particles</h2>" + table(("", "particles"), rows))

    size_rows = [
        (name, quantity(p.get(key), "nm"))
        for name, key in (
            ("mean", "mean_nm"),
            ("standard deviation", "std_nm"),
            ("median", "median_nm"),
            ("D10", "d10_nm"),
            ("D50", "d50_nm"),
            ("D90", "d90_nm"),
        )
    ]
    parts.append(
        "<h2 id='sizes'>Sizes</h2><p class='muted'>Equivalent circular diameter "
        "(ECD: diameter of the disc of the particle's area), number-weighted.</p>"
        + table(("statistic", "ECD"), size_rows)
    )

    shape = summary.get("shape") or {}
    if shape:
        parts.append(
            "<h2 id='shape'>Shape</h2><p class='muted'>Dimensionless ratios: circularity "
            "4πA/P² (1 for a disc), aspect ratio major / minor axis (≥ 1), solidity area / "
            "convex hull area (≤ 1), eccentricity (0 for a disc).</p>"
            + table(
                ("measure", "median", "10th percentile", "90th percentile", "particles"),
                [
                    (name.replace("_", " "), s["median"], s["p10"], s["p90"], s["n"])
                    for name, s in shape.items()
                ],
            )
        )

    classes = summary.get("classes")
    if classes:
        adjusted = classes.get("adjusted")
        header = ["class", "particles", "fraction", "95 % interval"]
        if adjusted:
            header += ["adjusted fraction", "95 % interval (bootstrap)"]
        header.append("median ECD")
        class_rows = []
        for r in classes["fractions"]:
            row: list[Any] = [
                r["class"],
                r["count"],
                fraction_percent(r["fraction"]),
                _interval(r["ci_low"], r["ci_high"]),
            ]
            if adjusted:
                row += [
                    fraction_percent(r.get("adjusted_fraction")),
                    _interval(r.get("adjusted_low"), r.get("adjusted_high")),
                ]
            row.append(quantity(r.get("median_ecd_nm"), "nm"))
            class_rows.append(row)
        note = (
            f"<p class='muted'>{fmt(classes['n_classified'])} classified particles; "
            f"{fmt(classes['unclassified'])} unclassified, left out of the fractions.</p>"
        )
        parts.append("<h2 id='classes'>Classes</h2>" + note + table(header, class_rows))

    truth = summary.get("ground_truth")
    if truth:
        parts.append(_truth(truth, classes))

    stitching = summary.get("stitching")
    if stitching:
        parts.append(
            "<h2 id='stitching'>Stitching</h2><p class='muted'>How far registration moved the "
            "tiles from their stage positions (less the median move).</p>"
            + table(
                ("", "value"),
                [
                    ("tiles", stitching["n_tiles"]),
                    ("median correction", quantity(stitching["median_correction_px"], "px")),
                    ("largest correction", quantity(stitching["max_correction_px"], "px")),
                    ("overlapping pairs measured", stitching.get("pairs")),
                    ("pairs kept (consistent, better than chance)", stitching.get("pairs_kept")),
                    (
                        "largest residual of a tile after the solve",
                        quantity(stitching.get("max_residual_px"), "px"),
                    ),
                    *_stitching_extra_rows(stitching),
                ],
            )
        )
    return parts


def _stitching_extra_rows(stitching: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rejected pairs by reason, the blending and the equalisation's ranges, where recorded."""
    rows: list[tuple[str, Any]] = []
    reasons = stitching.get("rejected_by_reason")
    if reasons:
        rows.append(("pairs rejected", ", ".join(f"{n} {reason}" for reason, n in reasons.items())))
    if stitching.get("overlap_ncc_registered") is not None:
        rows.append(
            (
                "mean overlap NCC of kept pairs, stage -> registered",
                f"{stitching['overlap_ncc_nominal']:.3f} -> "
                f"{stitching['overlap_ncc_registered']:.3f}",
            )
        )
    if stitching.get("blend"):
        rows.append(("blending across overlaps", stitching["blend"]))
    for key, label in (
        ("gain_range", "tile gains (equalisation)"),
        ("offset_range", "tile offsets (grey levels)"),
        ("flatfield_range", "flat field"),
    ):
        if stitching.get(key):
            lo, hi = stitching[key]
            rows.append((label, f"{lo:.3g} to {hi:.3g}"))
    return rows


def render_page(
    summary: dict[str, Any], figures: Sequence[FigureEntry], meta: dict[str, Any]
) -> str:
    """The report page.

    Parameters
    ----------
    summary : dict
        What :func:`mosaicflow.report.write_report` writes to ``summary.json``.
    figures : sequence of FigureEntry
        The figures, with file names relative to ``report/``.
    meta : dict
        The store's ``mosaicflow`` attributes (configuration, tile set).

    Returns
    -------
    str
        A complete HTML document; no external CSS, scripts or fonts.
    """
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>mosaicflow report: {esc(summary.get('store'))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>mosaicflow report</h1>",
        f"<p class='muted'>{esc(summary.get('store'))}</p>",
    ]
    parts += _sections(summary, meta)

    parts.append("<h2 id='figures'>Figures</h2>")
    if figures:
        toc = "".join(f"<li><a href='#fig-{esc(f.key)}'>{esc(f.title)}</a></li>" for f in figures)
        parts.append(f"<ul>{toc}</ul>")
    for f in figures:
        parts.append(
            f"<figure id='fig-{esc(f.key)}'><a href='{esc(f.file)}'>"
            f"<img src='{esc(f.file)}' alt='{esc(f.title)}' loading='lazy'></a>"
            f"<figcaption><b>{esc(f.title)}.</b> {esc(f.caption)}</figcaption></figure>"
        )

    stages = summary.get("stages") or {}
    parts.append(
        "<h2 id='stages'>Stages</h2>"
        + table(
            ("stage", "time", "throughput"),
            [
                (name, quantity(s.get("seconds"), "s"), quantity(s.get("mpx_per_s"), "Mpx/s"))
                for name, s in stages.items()
            ],
        )
    )
    notes = summary.get("notes") or []
    if notes:
        parts.append(
            "<h2 id='notes'>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
        )
    config = meta.get("config")
    parts.append(
        "<h2 id='config'>Configuration</h2>"
        + (
            f"<pre>{esc(json.dumps(config, indent=2, default=str))}</pre>"
            if config is not None
            else "<p class='muted'>not recorded</p>"
        )
    )
    parts.append(
        "<p class='muted'>All numbers: <a href='summary.json'>summary.json</a>. "
        "Particle table: <code>tables/particles.parquet</code> in the run store.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
