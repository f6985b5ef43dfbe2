"""Cross-chunk labelling and per-particle measurement."""

from __future__ import annotations

from mosaicflow.measure.columns import column_units, table_schema_metadata, units_from_metadata
from mosaicflow.measure.label import label
from mosaicflow.measure.props import regionprops_table

__all__ = [
    "column_units",
    "label",
    "regionprops_table",
    "table_schema_metadata",
    "units_from_metadata",
]
