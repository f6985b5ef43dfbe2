"""Cross-chunk labelling and per-particle measurement."""

from __future__ import annotations

from mosaicflow.measure.label import label
from mosaicflow.measure.props import regionprops_table

__all__ = ["label", "regionprops_table"]
