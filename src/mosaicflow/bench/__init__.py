"""The throughput benchmark behind ``mosaicflow bench`` (:func:`run_bench`, in
:mod:`.suite`) and its scenarios (:data:`SCENARIOS`, in :mod:`.scenarios`).

Both names are imported when first asked for: the command line's help reads the scenarios
without loading the benchmark's run (the pipeline, Dask and Zarr).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mosaicflow.bench.scenarios import SCENARIOS
    from mosaicflow.bench.suite import run_bench

_HOMES = {"SCENARIOS": "scenarios", "run_bench": "suite"}

__all__ = ["SCENARIOS", "run_bench"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
