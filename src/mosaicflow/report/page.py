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

from mosaicflow.measure._kernel import FLAG_COLUMNS

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
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


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f"<td class='num'>{fmt(value)}</td>" if numeric else f"<td>{fmt(value)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; header and cells escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None:
        return "–"
    return f"{low:.3f} – {high:.3f}"


def _sections(summary: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    tileset = meta.get("tileset") or {}
    pixel = summary.get("pixel_size_nm")
    provenance = [
        ("mosaicflow version", summary.get("mosaicflow_version")),
        ("created", summary.get("created")),
        ("run store", summary.get("store")),
        ("input", tileset.get("folder")),
        (
            "pixel size (nm)",
            " x ".join(f"{p:g}" for p in pixel) if isinstance(pixel, list) else pixel,
        ),
        (
            "tile grid",
            f"{tileset['rows']} x {tileset['cols']} tiles of "
            f"{tileset['tile_shape'][1]} x {tileset['tile_shape'][0]} px"
            if {"rows", "cols", "tile_shape"} <= set(tileset)
            else None,
        ),
        (
            "mosaic (px)",
            " x ".join(str(s) for s in summary["mosaic_shape"][::-1])
            if summary.get("mosaic_shape")
            else None,
        ),
        ("segmenter", summary.get("segmenter")),
        ("threshold", summary.get("threshold")),
    ]
    parts.append("<h2 id='provenance'>Run</h2>" + table(("", "value"), provenance))

    p = summary["particles"]
    rows: list[tuple[Any, ...]] = [("particles", p["count"])]
    for flag in FLAG_COLUMNS:
        if flag in p:
            rows.append((flag.replace("_", " "), p[flag]))
    parts.append("<h2 id='particles'>Particles</h2>" + table(("", "count"), rows))

    size_rows = [
        (name, p.get(key))
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
        "(diameter of the disc of the particle's area), number-weighted.</p>"
        + table(("statistic", "ECD (nm)"), size_rows)
    )

    shape = summary.get("shape") or {}
    if shape:
        parts.append(
            "<h2 id='shape'>Shape</h2>"
            + table(
                ("measure", "median", "10th percentile", "90th percentile", "n"),
                [
                    (name.replace("_", " "), s["median"], s["p10"], s["p90"], s["n"])
                    for name, s in shape.items()
                ],
            )
        )

    classes = summary.get("classes")
    if classes:
        adjusted = classes.get("adjusted")
        header = ["class", "count", "fraction", "95 % interval"]
        if adjusted:
            header += ["adjusted fraction", "95 % interval (bootstrap)"]
        header.append("median ECD (nm)")
        class_rows = []
        for r in classes["fractions"]:
            row: list[Any] = [
                r["class"],
                r["count"],
                r["fraction"],
                _interval(r["ci_low"], r["ci_high"]),
            ]
            if adjusted:
                row += [
                    r.get("adjusted_fraction"),
                    _interval(r.get("adjusted_low"), r.get("adjusted_high")),
                ]
            row.append(r.get("median_ecd_nm"))
            class_rows.append(row)
        note = (
            f"<p class='muted'>{fmt(classes['n_classified'])} classified particles; "
            f"{fmt(classes['unclassified'])} unclassified, left out of the fractions.</p>"
        )
        parts.append("<h2 id='classes'>Classes</h2>" + note + table(header, class_rows))

    truth = summary.get("ground_truth")
    if truth:
        truth_rows = [
            ("particles", truth["true_count"], truth["found_count"], truth["count_error"]),
            (
                "median ECD (nm)",
                truth["true_median_ecd_nm"],
                truth["found_median_ecd_nm"],
                truth["median_ecd_error"],
            ),
        ]
        block = table(("", "truth", "found", "relative error"), truth_rows)
        if truth.get("class_fractions"):
            found = {r["class"]: r["fraction"] for r in (classes or {}).get("fractions", []) or []}
            block += table(
                ("class", "true count", "true fraction", "found fraction"),
                [
                    (r["class"], r["count"], r["fraction"], found.get(r["class"]))
                    for r in truth["class_fractions"]
                ],
            )
        parts.append("<h2 id='truth'>Ground truth</h2>" + block)
    return parts


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
            ("stage", "seconds", "Mpx/s"),
            [(name, s.get("seconds"), s.get("mpx_per_s")) for name, s in stages.items()],
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
