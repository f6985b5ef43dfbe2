"""The run report: size, shape and class statistics, figures and one HTML page.

``write_report(store)`` writes ``<store>/report/``: ``summary.json``, PNG figures (size
histograms, shape scatter, class fractions, outline overlays) and ``index.html``. The
statistics (:mod:`mosaicflow.report.summary`), figures (:mod:`~mosaicflow.report.plots`,
:mod:`~mosaicflow.report.overlay`, scale bars in :mod:`~mosaicflow.report.scalebar`), the
one-to-one ground-truth comparison (:mod:`~mosaicflow.report.matching`) and page
(:mod:`~mosaicflow.report.page`) are usable alone.
"""

from __future__ import annotations

from mosaicflow.report.matching import contingency, match, match_labels
from mosaicflow.report.summary import (
    ECD,
    class_summary,
    compare_with_truth,
    encode_classes,
    shape_statistics,
    size_statistics,
)
from mosaicflow.report.writer import TABLE_COLUMNS, write_report

__all__ = [
    "ECD",
    "TABLE_COLUMNS",
    "class_summary",
    "compare_with_truth",
    "contingency",
    "encode_classes",
    "match",
    "match_labels",
    "shape_statistics",
    "size_statistics",
    "write_report",
]
