"""Overlay thumbnails: particle outlines, coloured by class, over the mosaic.

Two kinds, both read only what they show from the run store: an overview of the whole mosaic
from the pyramid level whose long side fits ``max_px`` (missing levels are replaced by every
``k``-th pixel of a finer one), and full-resolution crops around deterministic picks (the
densest region, a seeded random particle, the largest particle) for judging segmentation
quality by eye. Outlines are ``skimage.segmentation.find_boundaries(labels, mode="inner")``:
pixels of a particle that touch another label or background, so every outline pixel belongs
to one particle and takes that particle's class colour through a lookup array indexed by
label (no loop over particles). Every figure carries a scale bar
(:mod:`mosaicflow.report.scalebar`), drawn pixel-exact just above the image so that it hides no
data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from skimage.segmentation import find_boundaries

from mosaicflow.errors import ConfigError
from mosaicflow.io.store import RunStore
from mosaicflow.report.plots import (
    PASTED,
    SINGLE_COLOR,
    UNCLASSIFIED_COLOR,
    UNMATCHED_COLOR,
    class_colors,
)
from mosaicflow.report.scalebar import SCALE_BAR_BAND, ScaleBar, draw_scale_bar

LABELS = "labels/particles"


# -- reading the pyramid -------------------------------------------------------------------
def available_levels(store: RunStore, name: str) -> list[int]:
    """Pyramid levels of image ``name`` that are both declared and stored, finest first."""
    return store.image_levels(name)


def level_shape(store: RunStore, name: str, level: int = 0) -> tuple[int, int]:
    """Shape of one stored pyramid level."""
    shape = store.open_level(name, level).shape
    return int(shape[0]), int(shape[1])


def overview_factor(shape: Sequence[int], max_px: int) -> int:
    """Smallest power of two ``f`` with ``ceil(max(shape) / f) <= max_px``."""
    long_side = max(int(s) for s in shape)
    if long_side <= max_px:
        return 1
    return int(2 ** math.ceil(math.log2(long_side / max_px)))


def read_downsampled(
    store: RunStore, name: str, factor: int, *, levels: Sequence[int] | None = None
) -> tuple[np.ndarray, int, int]:
    """Image ``name`` at ``1/factor`` of full resolution (``factor`` a power of two).

    Uses the coarsest stored level ``l`` with ``2**l <= factor`` and takes every
    ``factor / 2**l``-th pixel of it. For labels (each level is every second pixel of the one
    above) this equals ``level0[::factor, ::factor]`` exactly, whichever levels are stored.

    Returns
    -------
    image : ndarray
    level : int
        The level read.
    step : int
        The stride applied to it.
    """
    levels = list(levels) if levels is not None else available_levels(store, name)
    usable = [lv for lv in levels if 2**lv <= factor]
    level = max(usable)
    step = factor // 2**level
    arr: Any = store.open_level(name, level)
    return np.asarray(arr[::step, ::step]), level, step


def read_window(
    store: RunStore, name: str, y0: int, x0: int, h: int, w: int, *, margin: int = 0
) -> np.ndarray:
    """Full-resolution window ``[y0:y0+h, x0:x0+w]`` of image ``name``, padded by ``margin``
    pixels on each side where the image extends (edge-replicated where it does not)."""
    arr: Any = store.open_level(name, 0)
    big_h, big_w = int(arr.shape[0]), int(arr.shape[1])
    ya, xa = max(0, y0 - margin), max(0, x0 - margin)
    yb, xb = min(big_h, y0 + h + margin), min(big_w, x0 + w + margin)
    window = np.asarray(arr[ya:yb, xa:xb])
    pad = (
        (margin - (y0 - ya), margin - (yb - y0 - h)),
        (margin - (x0 - xa), margin - (xb - x0 - w)),
    )
    if any(p for pair in pad for p in pair):
        window = np.pad(window, pad, mode="edge")
    return window


# -- colouring -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassColors:
    """Outline colours: ``table[lut[label]]`` is the RGB (uint8) of a label's outline.

    Attributes
    ----------
    lut : ndarray of intp
        Colour index per label value (``len = max label + 1``); labels without a table row
        index the ``unmatched`` colour.
    table : ndarray (K, 3) of uint8
    legend : list of (str, str)
        Name and hex colour of each entry shown in a legend.
    """

    lut: np.ndarray
    table: np.ndarray
    legend: list[tuple[str, str]]

    def colors_of(self, labels: np.ndarray) -> np.ndarray:
        """RGB of each label in ``labels`` (labels beyond the lookup get ``unmatched``)."""
        labels = np.asarray(labels).astype(np.intp, copy=False)
        inside = labels < self.lut.size
        idx = np.where(inside, self.lut[np.where(inside, labels, 0)], self.table.shape[0] - 1)
        return self.table[idx]


def _rgb8(color: str) -> tuple[int, int, int]:
    r, g, b = to_rgb(color)
    return round(r * 255), round(g * 255), round(b * 255)


def class_colors_for_labels(
    labels: np.ndarray,
    class_codes: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    *,
    max_label: int | None = None,
) -> ClassColors:
    """Outline colour lookup from the table's ``label`` and class columns.

    Parameters
    ----------
    labels : ndarray of int
        The table's ``label`` column.
    class_codes : ndarray of int, optional
        Class index per row (``-1``: missing class); without it every particle gets one
        colour.
    class_names : sequence of str
    max_label : int, optional
        Largest label value the lookup must cover (default: the table's largest).
    """
    labels = np.asarray(labels, dtype=np.int64)
    top = int(labels.max()) if labels.size else 0
    if max_label is not None:
        top = max(top, int(max_label))
    if class_codes is None or not len(class_names):
        hexes = [SINGLE_COLOR]
        legend = [("particle", SINGLE_COLOR)]
        codes = np.zeros(labels.size, dtype=np.intp)
    else:
        hexes = [*class_colors(class_names), UNCLASSIFIED_COLOR]
        legend = list(zip(class_names, hexes, strict=False))
        codes = np.asarray(class_codes, dtype=np.intp)
        codes = np.where(codes >= 0, codes, len(class_names))
        if (codes == len(class_names)).any():
            legend.append(("no class", UNCLASSIFIED_COLOR))
    hexes.append(UNMATCHED_COLOR)
    lut = np.full(top + 1, len(hexes) - 1, dtype=np.intp)
    lut[labels] = codes
    table = np.array([_rgb8(c) for c in hexes], dtype=np.uint8)
    return ClassColors(lut, table, legend)


def contrast_limits(image: np.ndarray) -> tuple[float, float]:
    """0.5th and 99.5th percentiles of ``image`` (display range)."""
    if image.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(image, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def grey_rgb(image: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """``image`` stretched to ``limits`` as a grey uint8 RGB array."""
    lo, hi = limits
    grey = np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
    g8 = np.round(grey * 255).astype(np.uint8)
    return np.repeat(g8[..., None], 3, axis=-1)


def outline_rgb(
    image: np.ndarray | None,
    labels: np.ndarray | None,
    colors: ClassColors,
    *,
    limits: tuple[float, float] | None = None,
) -> tuple[np.ndarray, int]:
    """Grey image with each particle's inner boundary in its class colour.

    Parameters
    ----------
    image : ndarray (H, W), optional
        Intensities; black when omitted.
    labels : ndarray (H, W) of int, optional
        Label image of the same shape; no outlines when omitted.
    colors : ClassColors
    limits : (float, float), optional, keyword-only
        Display range (default: :func:`contrast_limits` of ``image``).

    Returns
    -------
    rgb : ndarray (H, W, 3) of uint8
    n_outline : int
        Outline pixels drawn.
    """
    if image is None and labels is None:
        raise ConfigError("outline_rgb: give an image, a label image or both")
    shape = image.shape if image is not None else np.asarray(labels).shape
    if image is not None:
        rgb = grey_rgb(image, limits if limits is not None else contrast_limits(image))
    else:
        rgb = np.zeros((*shape, 3), dtype=np.uint8)
    if labels is None:
        return rgb, 0
    boundary = find_boundaries(labels, mode="inner")
    rgb[boundary] = colors.colors_of(labels[boundary])
    return rgb, int(boundary.sum())


def outline_figure(
    rgb: np.ndarray,
    *,
    title: str,
    legend: Sequence[tuple[str, str]] = (),
    min_width: int = 560,
    bar: ScaleBar | None = None,
) -> tuple[Figure, int]:
    """A figure holding ``rgb`` pixel for pixel (``figimage``, no resampling) under a title,
    a legend and, with ``bar``, a scale bar.

    The image occupies the bottom-left ``H x W`` pixels of the figure saved at its own dpi;
    returns the figure and the header height in pixels above the image. ``title`` may hold
    several lines. The scale bar (:func:`~mosaicflow.report.scalebar.draw_scale_bar`) lies in
    a band of ``SCALE_BAR_BAND`` pixels between the header and the image.
    """
    h, w = rgb.shape[:2]
    ncol = max(1, min(len(legend), max(1, max(w, min_width) // 110)))
    rows = math.ceil(len(legend) / ncol) if legend else 0
    title_px = 8 + 14 * (title.count("\n") + 1)
    header = title_px + 22 * rows + 4 + (SCALE_BAR_BAND if bar is not None else 0)
    width, height = max(w, min_width), h + header
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    fig.figimage(rgb, xo=0, yo=0, origin="upper", gid=PASTED)
    if bar is not None:
        draw_scale_bar(fig, bar, image_top=h)
    fig.text(4 / width, 1 - 6 / height, title, ha="left", va="top", fontsize=9)
    if legend:
        handles = [Patch(facecolor=c, edgecolor="#444444", label=n) for n, c in legend]
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(0, 1 - title_px / height),
            ncol=ncol,
            fontsize=8,
            frameon=False,
            handlelength=1.2,
            borderaxespad=0.2,
        )
    return fig, header


# -- overview ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overview:
    """The overview thumbnail: ``rgb`` shows every ``factor``-th full-resolution pixel."""

    rgb: np.ndarray
    factor: int
    image_level: int | None
    labels_level: int | None
    limits: tuple[float, float]
    n_outline: int


def overview(
    store: RunStore,
    colors: ClassColors,
    *,
    image: str = "mosaic",
    max_px: int = 2048,
) -> Overview | None:
    """Outlines over the whole mosaic at the coarsest resolution that keeps ``max_px``.

    The image comes from the pyramid level whose long side is at most ``max_px`` (``2**l``
    down, means of ``2x2`` blocks); the labels from the same factor (every ``2**l``-th
    pixel). Returns ``None`` when the store holds neither image nor labels.
    """
    img_levels = available_levels(store, image)
    lab_levels = available_levels(store, LABELS)
    if not img_levels and not lab_levels:
        return None
    shape0 = level_shape(store, image if img_levels else LABELS, 0)
    factor = overview_factor(shape0, max_px)
    img = lab = None
    img_level = lab_level = None
    if img_levels:
        img, img_level, _ = read_downsampled(store, image, factor, levels=img_levels)
    if lab_levels:
        lab, lab_level, _ = read_downsampled(store, LABELS, factor, levels=lab_levels)
    if img is not None and lab is not None:
        # 2x2 means floor odd sizes, every-second-pixel labels round them up.
        h, w = min(img.shape[0], lab.shape[0]), min(img.shape[1], lab.shape[1])
        img, lab = img[:h, :w], lab[:h, :w]
    limits = contrast_limits(img) if img is not None else (0.0, 1.0)
    rgb, n_outline = outline_rgb(img, lab, colors, limits=limits)
    return Overview(rgb, factor, img_level, lab_level, limits, n_outline)


# -- crops ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crop:
    """A full-resolution window ``[y0:y0+h, x0:x0+w]`` (level-0 pixels) and why it was picked."""

    name: str
    reason: str
    y0: int
    x0: int
    h: int
    w: int


def particle_centres_px(table: pd.DataFrame, store: RunStore) -> np.ndarray | None:
    """Level-0 pixel centre ``(row, col)`` of each particle: the bounding-box centre, or the
    centroid (nm) mapped through level 0's OME transform; ``None`` if neither is stored."""
    # Pixel bounding boxes: ``bbox_px-*`` (tables of DataArrays, whose ``bbox-*`` are in nm),
    # else ``bbox-*`` of tables measured in pixels.
    for prefix in ("bbox_px", "bbox"):
        if all(f"{prefix}-{i}" in table for i in range(4)):
            b = [table[f"{prefix}-{i}"].to_numpy(np.float64) for i in range(4)]
            return np.column_stack([(b[0] + b[2]) / 2 - 0.5, (b[1] + b[3]) / 2 - 0.5])
    if "centroid-0" in table and "centroid-1" in table:
        for name in ("mosaic", LABELS):
            if store.has_image(name):
                scale, shift = store.image_transform(name)
                cy = (table["centroid-0"].to_numpy(np.float64) - shift[0]) / scale[0]
                cx = (table["centroid-1"].to_numpy(np.float64) - shift[1]) / scale[1]
                return np.column_stack([cy, cx])
    return None


def _window(cy: float, cx: float, size: int, shape: Sequence[int]) -> tuple[int, int, int, int]:
    h, w = min(size, shape[0]), min(size, shape[1])
    y0 = int(np.clip(round(cy - size / 2), 0, shape[0] - h))
    x0 = int(np.clip(round(cx - size / 2), 0, shape[1] - w))
    return y0, x0, h, w


def pick_crops(
    centres: np.ndarray | None,
    sizes: np.ndarray | None,
    shape: Sequence[int],
    *,
    crop_px: int = 512,
    seed: int = 0,
) -> list[Crop]:
    """Deterministic crop windows: densest region, a random particle, the largest particle.

    Parameters
    ----------
    centres : ndarray (N, 2), optional
        Level-0 pixel centres of the particles.
    sizes : ndarray (N,), optional
        Particle sizes (any monotone measure: pixels, area, ECD).
    shape : (int, int)
        Level-0 shape of the mosaic.
    crop_px : int, keyword-only
        Side of the windows.
    seed : int, keyword-only
        Seed of the random pick (``numpy.random.default_rng(seed).integers(N)``).

    Returns
    -------
    list of Crop
        The densest ``crop_px`` cell of a regular grid over the mosaic (by particle centres),
        the random particle, the largest particle, without repeats; one centre crop when
        there are no particles.
    """
    h, w = int(shape[0]), int(shape[1])
    if centres is None or len(centres) == 0:
        y0, x0, ch, cw = _window(h / 2, w / 2, crop_px, shape)
        return [Crop("centre", "centre of the mosaic (no particles)", y0, x0, ch, cw)]
    picks: list[Crop] = []
    ny, nx = max(1, math.ceil(h / crop_px)), max(1, math.ceil(w / crop_px))
    iy = np.clip((centres[:, 0] // crop_px).astype(np.int64), 0, ny - 1)
    ix = np.clip((centres[:, 1] // crop_px).astype(np.int64), 0, nx - 1)
    counts = np.bincount(iy * nx + ix, minlength=ny * nx)
    cell = int(np.argmax(counts))
    cy, cx = (cell // nx + 0.5) * crop_px, (cell % nx + 0.5) * crop_px
    picks.append(
        Crop(
            "densest",
            f"densest region ({int(counts[cell])} particles)",
            *_window(cy, cx, crop_px, shape),
        )
    )
    row = int(np.random.default_rng(seed).integers(len(centres)))
    picks.append(
        Crop(
            "random",
            f"random particle (seed {seed})",
            *_window(centres[row, 0], centres[row, 1], crop_px, shape),
        )
    )
    if sizes is not None and len(sizes):
        big = int(np.nanargmax(np.asarray(sizes, dtype=np.float64)))
        picks.append(
            Crop(
                "largest",
                "largest particle",
                *_window(centres[big, 0], centres[big, 1], crop_px, shape),
            )
        )
    unique: list[Crop] = []
    seen: set[tuple[int, int, int, int]] = set()
    for crop in picks:
        key = (crop.y0, crop.x0, crop.h, crop.w)
        if key not in seen:
            seen.add(key)
            unique.append(crop)
    return unique


def crop_rgb(
    store: RunStore,
    crop: Crop,
    colors: ClassColors,
    *,
    image: str = "mosaic",
    limits: tuple[float, float] | None = None,
) -> tuple[np.ndarray, int]:
    """Full-resolution outlines over ``crop`` (read with a 1-pixel margin so that outlines at
    the window's edge are those of the whole label image)."""
    img = lab = None
    if available_levels(store, image):
        img = read_window(store, image, crop.y0, crop.x0, crop.h, crop.w)
    if available_levels(store, LABELS):
        lab_m = read_window(store, LABELS, crop.y0, crop.x0, crop.h, crop.w, margin=1)
        boundary = find_boundaries(lab_m, mode="inner")[1:-1, 1:-1]
        lab = lab_m[1:-1, 1:-1]
        if img is not None:
            rgb = grey_rgb(img, limits if limits is not None else contrast_limits(img))
        else:
            rgb = np.zeros((*lab.shape, 3), dtype=np.uint8)
        rgb[boundary] = colors.colors_of(lab[boundary])
        return rgb, int(boundary.sum())
    return outline_rgb(img, None, colors, limits=limits)
