"""mosaicflow: stitched SEM/TEM mosaics to per-particle tables, as Dask graphs.

Importing the package is cheap and needs no GPU package, PyTorch or cluster.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("mosaicflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from mosaicflow.io.store import RunStore, open_run

__all__ = ["Pipeline", "RunStore", "__version__", "open_run"]


def __getattr__(name: str) -> Any:
    # The pipeline pulls in the stage packages; it is imported when first asked for.
    if name == "Pipeline":
        from mosaicflow.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'mosaicflow' has no attribute {name!r}")
