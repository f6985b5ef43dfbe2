"""The run report: size, shape and class statistics, figures and one HTML page.

``write_report(store)`` writes ``<store>/report/``: ``summary.json``, PNG figures (size
histograms, shape scatter, class fractions, outline overlays) and ``index.html``. The
statistics (:mod:`mosaicflow.report.summary`), figures (:mod:`~mosaicflow.report.plots`,
:mod:`~mosaicflow.report.overlay`, scale bars in :mod:`~mosaicflow.report.scalebar`), the
one-to-one ground-truth comparison (:mod:`~mosaicflow.report.matching`) and page
(:mod:`~mosaicflow.report.page`) are usable alone.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each public name lives. They load on first use: the Dask workers import
#: ``mosaicflow.report.matching`` to count the truth matching's windows, and an eager
#: package would bring Matplotlib and scikit-learn into every worker (1.1 s each).
_HOMES = {
    "contingency": "matching",
    "match": "matching",
    "match_labels": "matching",
    "ECD": "summary",
    "class_summary": "summary",
    "compare_with_truth": "summary",
    "encode_classes": "summary",
    "shape_statistics": "summary",
    "size_statistics": "summary",
    "TABLE_COLUMNS": "writer",
    "write_report": "writer",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


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


def __dir__() -> list[str]:
    return sorted(__all__)
