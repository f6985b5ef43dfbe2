"""Scale bars of the report's images: a round length, drawn pixel-exact above the image.

The length is the ``1, 2 or 5 x 10**k`` nm nearest (on a log scale) to a fifth of the image's
width, from the image's pixel size (its OME-Zarr transform, the number
``RunStore.read_image(name).attrs["pixel_size_nm"]`` gives) times the downsampling factor of
the picture. The bar is a black strip of exactly ``round(length / nm_per_px)`` pixels placed
with ``Figure.figimage`` (no resampling), in a band between the figure's header and the image,
so it hides no pixel of the data; its label ("2 µm", "200 nm") is written to its right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mosaicflow.errors import ConfigError
from mosaicflow.io.store import RunStore
from mosaicflow.report.plots import PASTED

SCALE_BAR_COLOR = (0, 0, 0)
"""RGB of the scale bar (black, on the white figure background above the image)."""
SCALE_BAR_THICKNESS = 5
"""Height of the bar in pixels."""
SCALE_BAR_BAND = 22
"""Figure pixels reserved above the image for the bar and its label."""
SCALE_BAR_GAP = 7
"""Figure pixels between the image's top row and the bar's bottom row."""


@dataclass(frozen=True)
class ScaleBar:
    """A scale bar: ``length_nm`` of the specimen drawn as ``length_px`` pixels.

    Attributes
    ----------
    length_nm : float
        The stated length, a round ``1, 2 or 5 x 10**k`` nm.
    nm_per_px : float
        Specimen length per pixel of the picture (level-0 pixel size times the factor).
    length_px : int
        ``round(length_nm / nm_per_px)``.
    label : str
        ``length_nm`` as text, in nm below 1 µm and in µm from 1 µm on.
    """

    length_nm: float
    nm_per_px: float
    length_px: int
    label: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (``length_nm``, ``length_px``, ``nm_per_px``, ``label``)."""
        return {
            "length_nm": self.length_nm,
            "length_px": self.length_px,
            "nm_per_px": self.nm_per_px,
            "label": self.label,
        }


def nice_length(target: float) -> float:
    """The ``1, 2 or 5 x 10**k`` value nearest to ``target`` (> 0) on a log scale."""
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"nice_length: target must be a positive number, got {target!r}")
    exponent = math.floor(math.log10(target))
    candidates = [m * 10.0**e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]
    return min(candidates, key=lambda c: (abs(math.log(c / target)), c))


def length_label(length_nm: float) -> str:
    """A length as text: ``"200 nm"``, ``"1 µm"``, ``"2.5 µm"``."""
    if length_nm >= 1000:
        return f"{length_nm / 1000:g} µm"
    return f"{length_nm:g} nm"


def scale_bar(width_px: int, nm_per_px: float | None, *, fraction: float = 0.2) -> ScaleBar | None:
    """The scale bar of a picture ``width_px`` wide: a round length near ``fraction`` of it.

    Returns ``None`` when the pixel size is unknown (``None``, zero or not finite), or the bar
    would be shorter than 2 pixels or longer than the picture.
    """
    if nm_per_px is None or not (math.isfinite(nm_per_px) and nm_per_px > 0) or width_px < 1:
        return None
    length_nm = nice_length(width_px * nm_per_px * fraction)
    length_px = round(length_nm / nm_per_px)
    if not 2 <= length_px <= width_px:
        return None
    return ScaleBar(float(length_nm), float(nm_per_px), int(length_px), length_label(length_nm))


def image_nm_per_px(store: RunStore, name: str, factor: int = 1) -> float | None:
    """Specimen length per pixel along x (columns) of image ``name`` shown at ``1/factor``.

    The level-0 pixel size comes from the image's OME-Zarr transform; ``None`` when the store
    has no such image.
    """
    if not store.has_image(name):
        return None
    scale, _ = store.image_transform(name, 0)
    return float(scale[-1]) * factor


def draw_scale_bar(fig: Figure, bar: ScaleBar, *, image_top: int) -> None:
    """Draw ``bar`` into ``fig`` above an image whose top row is ``image_top`` figure pixels
    from the bottom and whose first column is the figure's first.

    The bar spans figure columns ``0 .. length_px - 1`` and the ``SCALE_BAR_THICKNESS`` rows
    starting ``SCALE_BAR_GAP`` pixels above the image; the label is to its right.
    """
    width = fig.get_figwidth() * fig.dpi
    height = fig.get_figheight() * fig.dpi
    strip = np.empty((SCALE_BAR_THICKNESS, bar.length_px, 3), dtype=np.uint8)
    strip[...] = SCALE_BAR_COLOR
    fig.figimage(strip, xo=0, yo=image_top + SCALE_BAR_GAP, origin="upper", gid=PASTED)
    fig.text(
        (bar.length_px + 8) / width,
        (image_top + SCALE_BAR_GAP + SCALE_BAR_THICKNESS / 2) / height,
        bar.label,
        ha="left",
        va="center",
        fontsize=9,
        fontweight="bold",
    )
