"""The report's figures: size histograms, shape scatter, class fractions (Matplotlib, Agg).

Each ``plot_*`` function takes arrays (never the store), returns a Matplotlib ``Figure``
together with the numbers it drew (histogram counts, the rows shown), so tests compare the
numbers with NumPy and the writer saves the figure with :func:`png_bytes`. Figures are built
with ``matplotlib.figure.Figure``, not ``pyplot``: no global state, no GUI backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from mosaicflow.measure.columns import UNCLASSIFIED

# Distinct colours that stay visible on grey SEM/TEM images (no grey, black or white).
# Saturated colours that stay visible on grey SEM/TEM images, on bright and on dark
# particles (no white, black, grey or pastel).
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#ffe119",
    "#469990",
    "#9a6324",
    "#800000",
    "#808000",
    "#000075",
    "#bfef45",
)
SINGLE_COLOR = "#e6194b"
"""Outline colour when the table has no classes."""
SINGLE_COLOR_NAME = "red"
"""``SINGLE_COLOR`` in words, for captions."""
UNCLASSIFIED_COLOR = "#555555"
"""Colour of the ``unclassified`` class."""
UNMATCHED_COLOR = "#ff00ff"
"""Outline colour of a label that has no row in the table."""
ALL_COLOR = "#3b6ea8"

MAX_BINS = 80
MIN_BINS = 10


def class_colors(names: Sequence[str]) -> list[str]:
    """One colour per class name, in order (``unclassified`` is white)."""
    out = []
    i = 0
    for name in names:
        if name == UNCLASSIFIED:
            out.append(UNCLASSIFIED_COLOR)
        else:
            out.append(PALETTE[i % len(PALETTE)])
            i += 1
    return out


#: zlib level of the report's PNG files. Pillow's default, 6, spent 0.35 s of a maps-48 report
#: encoding them; level 3 takes less than half of that for files 1-4 % larger (docs/PERFORMANCE.md).
PNG_LEVEL = 3


#: ``gid`` of a ``Figure.figimage`` that nothing is drawn over: :func:`png_bytes` copies its
#: pixels into the rendered figure instead of having Agg composite them (the overview's
#: 2 Mpx took 0.2 s to composite).
PASTED = "mosaicflow-pasted"


def png_bytes(fig: Figure, *, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes: :func:`encode_png` of :func:`render`."""
    return encode_png(render(fig, dpi=dpi))


def render(fig: Figure, *, dpi: float | None = None) -> np.ndarray:
    """The figure drawn by Agg: RGB where every pixel is opaque (the report's figures have
    white backgrounds; a fourth channel of 255s costs a third more encoding), RGBA otherwise.
    Figure images marked :data:`PASTED` (opaque 8-bit RGB, not magnified) are copied in pixel
    for pixel after the rest is drawn. The pixels are a copy: the figure may be changed or
    closed afterwards."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if dpi is not None:
        fig.set_dpi(dpi)
    pasted = [im for im in fig.images if im.get_gid() == PASTED and im.get_visible()]
    for im in pasted:
        im.set_visible(False)
    try:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    finally:
        for im in pasted:
            im.set_visible(True)
    rgba = np.array(canvas.buffer_rgba())
    for im in pasted:
        _paste(rgba, im)
    return np.ascontiguousarray(rgba[..., :3]) if bool((rgba[..., 3] == 255).all()) else rgba


def encode_png(pixels: np.ndarray) -> bytes:
    """8-bit RGB or RGBA pixels as PNG bytes, zlib level :data:`PNG_LEVEL`. Pillow releases
    the GIL while it compresses, so this may run in a thread beside the drawing of the next
    figure."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="png", compress_level=PNG_LEVEL)
    return buf.getvalue()


def _paste(rgba: np.ndarray, im: Any) -> None:
    """Copy a figure image's pixels into the rendered figure ``rgba`` where Agg would have put
    them: its ``(ox, oy)`` offset counts pixels from the figure's bottom-left corner and, with
    ``origin="upper"``, its first row is its top one; clipped to the figure."""
    data = np.asarray(im.get_array())
    if data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] != 3 or im.origin != "upper":
        raise ValueError("a pasted figure image must be 8-bit RGB with origin='upper'")
    if getattr(im, "magnification", 1.0) != 1.0:
        raise ValueError("a pasted figure image must not be magnified")
    height = rgba.shape[0]
    top = height - int(im.oy) - data.shape[0]
    y0, y1 = max(top, 0), min(top + data.shape[0], height)
    x0, x1 = max(int(im.ox), 0), min(int(im.ox) + data.shape[1], rgba.shape[1])
    if y1 > y0 and x1 > x0:
        rgba[y0:y1, x0:x1, :3] = data[y0 - top : y1 - top, x0 - int(im.ox) : x1 - int(im.ox)]
        rgba[y0:y1, x0:x1, 3] = 255


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=14)


def _tick(value: float, _pos: object = None) -> str:
    # Label 1, 2, 5 x 10^k in plain numbers; other minor ticks stay unlabelled.
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** np.floor(np.log10(value)), 6)
    return f"{value:g}" if mantissa in (1.0, 2.0, 5.0) else ""


def _log_axis(ax: Axes) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_tick))
    ax.xaxis.set_minor_formatter(FuncFormatter(_tick))


# -- size histograms -----------------------------------------------------------------------
@dataclass(frozen=True)
class Histogram:
    """What a size histogram shows.

    Attributes
    ----------
    edges : ndarray
        Bin edges (nm).
    total : ndarray of int
        Particles per bin, all classes (``numpy.histogram(ecd, bins=edges)``).
    by_class : dict of str to ndarray of int
        Particles per bin of each class, when classes were given.
    outside : int
        Particles outside the plotted range (stated on the figure).
    """

    edges: np.ndarray
    total: np.ndarray
    by_class: dict[str, np.ndarray] = field(default_factory=dict)
    outside: int = 0


def n_bins(n: int) -> int:
    """Rice's rule ``ceil(2 n^(1/3))``, kept within 10..80 bins."""
    return int(np.clip(np.ceil(2.0 * max(n, 1) ** (1.0 / 3.0)), MIN_BINS, MAX_BINS))


def histogram_edges(ecd_nm: np.ndarray, *, log: bool = False) -> np.ndarray:
    """Bin edges of a size histogram.

    Linear bins run from the smallest diameter to the largest, or to the 99.5th percentile
    when the largest is more than three times that (a few merged blobs would otherwise squash
    the distribution into one bar). Log-spaced bins cover every positive diameter.
    """
    ecd_nm = np.asarray(ecd_nm, dtype=np.float64)
    ecd_nm = ecd_nm[np.isfinite(ecd_nm)]
    if log:
        ecd_nm = ecd_nm[ecd_nm > 0]
    bins = n_bins(ecd_nm.size)
    if ecd_nm.size == 0:
        return np.geomspace(1.0, 1000.0, bins + 1) if log else np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(ecd_nm.min()), float(ecd_nm.max())
    if log:
        if hi <= lo:
            lo, hi = lo / 1.1, hi * 1.1
        return np.geomspace(lo, hi, bins + 1)
    p995 = float(np.percentile(ecd_nm, 99.5))
    if hi > 3.0 * p995 and p995 > lo:
        hi = p995
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def plot_size_histogram(
    ecd_nm: np.ndarray,
    *,
    class_codes: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    log: bool = False,
    stats: dict[str, float | None] | None = None,
    title: str = "Particle size distribution",
) -> tuple[Figure, Histogram]:
    """Histogram of equivalent circular diameters with D10/D50/D90 and the mean marked.

    Parameters
    ----------
    ecd_nm : ndarray
        Diameters in nm, one per particle.
    class_codes : ndarray of int, optional, keyword-only
        Index into ``class_names`` per particle (``-1``: none); adds one step histogram per
        class over the total.
    class_names : sequence of str, keyword-only
    log : bool, keyword-only
        Log-spaced bins on a log x axis.
    stats : dict, optional, keyword-only
        :func:`mosaicflow.report.size_statistics` of ``ecd_nm`` (computed when omitted).
    title : str, keyword-only

    Returns
    -------
    fig : matplotlib.figure.Figure
    hist : Histogram
        The counts drawn; ``hist.total`` equals ``numpy.histogram(ecd_nm, bins=hist.edges)``.
    """
    from mosaicflow.report.summary import size_statistics

    ecd_nm = np.asarray(ecd_nm, dtype=np.float64)
    stats = stats if stats is not None else size_statistics(ecd_nm)
    edges = histogram_edges(ecd_nm, log=log)
    total, _ = np.histogram(ecd_nm, bins=edges)
    shown = int(total.sum())
    outside = int(ecd_nm.size - shown)
    by_class: dict[str, np.ndarray] = {}
    if class_codes is not None:
        codes = np.asarray(class_codes)
        for i, name in enumerate(class_names):
            by_class[name], _ = np.histogram(ecd_nm[codes == i], bins=edges)

    fig = Figure(figsize=(9.0, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.set_xlabel("equivalent circular diameter (nm)")
    ax.set_ylabel("particles per bin")
    scale = "log-spaced bins" if log else "linear bins"
    ax.set_title(f"{title} ({scale}, n = {ecd_nm.size:,})")
    if log:
        _log_axis(ax)
    if ecd_nm.size == 0:
        _no_data(ax, "no particles")
        fig.tight_layout()
        return fig, Histogram(edges, total, by_class, outside)
    handles: list[object] = []
    if by_class:
        ax.stairs(total, edges, fill=True, color="#d0d0d0", label="all")
        handles.append(Patch(color="#d0d0d0", label=f"all ({ecd_nm.size:,})"))
        for (name, counts), color in zip(
            by_class.items(), class_colors(list(by_class)), strict=True
        ):
            ax.stairs(counts, edges, color=color, linewidth=1.6)
            handles.append(Line2D([], [], color=color, label=f"{name} ({int(counts.sum()):,})"))
    else:
        ax.stairs(total, edges, fill=True, color=ALL_COLOR)
    markers: tuple[tuple[str, str, str, Any], ...] = (
        ("d10_nm", "D10", "#333333", "--"),
        ("d50_nm", "D50", "#000000", "-"),
        ("d90_nm", "D90", "#333333", "--"),
        ("mean_nm", "mean", "#c03030", ":"),
    )
    for key, name, color, style in markers:
        value = stats.get(key)
        if value is not None:
            ax.axvline(value, color=color, linestyle=style, linewidth=1.2)
            handles.append(
                Line2D([], [], color=color, linestyle=style, label=f"{name} = {value:.1f} nm")
            )
    text = f"n = {ecd_nm.size:,}"
    if stats.get("std_nm") is not None:
        text += f"\nmean = {stats['mean_nm']:.1f} ± {stats['std_nm']:.1f} nm (sd)"
        text += f"\nmedian = {stats['median_nm']:.1f} nm"
    if outside:
        text += f"\n{outside:,} outside {edges[0]:.3g}–{edges[-1]:.3g} nm, not shown"
    ax.legend(
        handles=handles,
        title=text,
        alignment="left",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        title_fontsize=8,
        frameon=False,
    )
    ax.set_ylim(0, max(1, int(total.max())) * 1.05)
    fig.tight_layout()
    return fig, Histogram(edges, total, by_class, outside)


# -- shape scatter -------------------------------------------------------------------------
@dataclass(frozen=True)
class Scatter:
    """What the shape scatter shows: ``rows`` are the table rows drawn (all, or a sample)."""

    rows: np.ndarray
    total: int
    sampled: bool


def plot_shape_scatter(
    ecd_nm: np.ndarray,
    circularity: np.ndarray,
    *,
    class_codes: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    max_points: int = 50_000,
    seed: int = 0,
) -> tuple[Figure, Scatter]:
    """ECD (log x) against circularity, one dot per particle, coloured by class.

    Particles with a non-finite circularity or a non-positive ECD are left out. Above
    ``max_points`` particles, a uniform random sample of ``max_points`` rows (``seed``) is
    drawn, which the title says; the sample is deterministic and keeps class proportions in
    expectation. Dots are drawn in the sample's random order, so no class hides the others.

    Returns
    -------
    fig : matplotlib.figure.Figure
    scatter : Scatter
        ``rows``: indices into the inputs of the dots drawn.
    """
    ecd_nm = np.asarray(ecd_nm, dtype=np.float64)
    circ = np.asarray(circularity, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(circ) & np.isfinite(ecd_nm) & (ecd_nm > 0))
    sampled = valid.size > max_points
    if sampled:
        rng = np.random.default_rng(seed)
        rows = rng.permutation(valid)[:max_points]
    else:
        rows = valid
    fig = Figure(figsize=(7.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    _log_axis(ax)
    ax.set_xlabel("equivalent circular diameter (nm)")
    ax.set_ylabel("circularity 4πA/P²")
    title = "Shape against size"
    if sampled:
        title += f": random sample of {rows.size:,} of {valid.size:,} particles (seed {seed})"
    else:
        title += f" ({rows.size:,} particles)"
    ax.set_title(title, fontsize=10)
    left_out = ecd_nm.size - valid.size
    if left_out:
        ax.text(
            0.99,
            0.02,
            f"{left_out:,} without finite circularity or ECD, not shown",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
        )
    if rows.size == 0:
        _no_data(ax, "no particles")
        fig.tight_layout()
        return fig, Scatter(rows, int(valid.size), sampled)
    size = float(np.clip(2000.0 / np.sqrt(rows.size), 0.5, 20.0))
    if class_codes is not None and len(class_names):
        hexes = class_colors(class_names)
        palette = to_rgba_array([*hexes, "#999999"])
        codes = np.asarray(class_codes)[rows]
        colors = palette[np.where(codes >= 0, codes, len(class_names))]
        ax.scatter(ecd_nm[rows], circ[rows], s=size, c=colors, linewidths=0, alpha=0.7)
        handles = [
            Line2D([], [], marker="o", linestyle="", color=hexes[i], label=class_names[i])
            for i in np.unique(codes[codes >= 0])
        ]
        ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.8)
    else:
        ax.scatter(ecd_nm[rows], circ[rows], s=size, c=ALL_COLOR, linewidths=0, alpha=0.5)
    top = float(np.percentile(circ[rows], 99.9))
    ax.set_ylim(0, max(1.05, top * 1.02))
    ax.axhline(1.0, color="#999999", linewidth=0.8, linestyle=":")
    fig.tight_layout()
    return fig, Scatter(rows, int(valid.size), sampled)


# -- class fractions -----------------------------------------------------------------------
def plot_class_fractions(
    fractions: pd.DataFrame, *, truth: dict[str, float] | None = None
) -> Figure:
    """Bar chart of class fractions with their intervals: raw and, if present, adjusted.

    Parameters
    ----------
    fractions : pandas.DataFrame
        :func:`mosaicflow.classify.metrics.class_fractions` output: ``class, fraction,
        ci_low, ci_high`` [``adjusted_fraction, adjusted_low, adjusted_high``].
    truth : dict of str to float, optional, keyword-only
        True fraction per class (synthetic inputs), drawn as black bars across the groups.
    """
    fig = Figure(figsize=(max(5.0, 1.1 * len(fractions) + 3.0) + 2.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.set_ylabel("fraction of classified particles")
    n = int(fractions.attrs.get("n", fractions["count"].sum() if len(fractions) else 0))
    ax.set_title(f"Class fractions with 95 % intervals (n = {n:,})", fontsize=10)
    if len(fractions) == 0 or n == 0:
        _no_data(ax, "no particles")
        fig.tight_layout()
        return fig
    names = [str(c) for c in fractions["class"]]
    x = np.arange(len(names), dtype=np.float64)
    adjusted = "adjusted_fraction" in fractions and bool(
        np.isfinite(fractions["adjusted_fraction"].to_numpy(dtype=np.float64)).any()
    )
    width = 0.38 if adjusted else 0.6
    series = [("fraction", "ci_low", "ci_high", "raw (Wilson)", "#8aa9d6")]
    if adjusted:
        series.append(
            (
                "adjusted_fraction",
                "adjusted_low",
                "adjusted_high",
                "adjusted for confusion (bootstrap)",
                "#3b6ea8",
            )
        )
    offsets = (-width / 2, width / 2) if adjusted else (0.0,)
    for (col, lo, hi, label, color), off in zip(series, offsets, strict=True):
        value = fractions[col].to_numpy(dtype=np.float64)
        err = np.vstack(
            [
                np.clip(value - fractions[lo].to_numpy(dtype=np.float64), 0, None),
                np.clip(fractions[hi].to_numpy(dtype=np.float64) - value, 0, None),
            ]
        )
        ax.bar(x + off, value, width, yerr=err, capsize=4, color=color, label=label)
    if truth:
        t = np.array([truth.get(name, np.nan) for name in names], dtype=np.float64)
        ax.hlines(t, x - 0.45, x + 0.45, colors="black", linewidth=2, label="ground truth")
    ax.set_xticks(x, names, rotation=30 if len(names) > 5 else 0)
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
