"""mosaicflow: stitched SEM/TEM mosaics to per-particle tables, as Dask graphs.

Importing the package is cheap and needs no GPU package, PyTorch or cluster: its front doors
(``Pipeline``, ``RunStore``, ``open_run``) are imported when first asked for, so that importing
it, or a module that needs only the configuration, does not load Dask, xarray and Zarr.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("mosaicflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from mosaicflow.io.store import RunStore, open_run
    from mosaicflow.pipeline import Pipeline

__all__ = ["Pipeline", "RunStore", "__version__", "open_run"]


def __getattr__(name: str) -> Any:
    # The pipeline pulls in the stage packages, the run store Dask, xarray and Zarr: each is
    # imported when first asked for.
    if name == "Pipeline":
        from mosaicflow.pipeline import Pipeline

        return Pipeline
    if name in ("RunStore", "open_run"):
        from mosaicflow.io import store

        return getattr(store, name)
    raise AttributeError(f"module 'mosaicflow' has no attribute {name!r}")
