"""Shared by the benchmark scripts: peak memory of the Dask worker processes, JSON-safe
records and the environment a result was measured in."""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from importlib import metadata
from typing import Any

import psutil


class PeakRSS:
    """Samples the resident memory of this process's children (the Dask workers) every 50 ms."""

    def __init__(self) -> None:
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[child.pid] = max(self.peak.get(child.pid, 0), rss)
            time.sleep(0.05)

    @property
    def max_mib(self) -> float:
        return max(self.peak.values(), default=0) / 2**20

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def finite(obj: Any) -> Any:
    """NaN/inf as ``null`` so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def environment(packages: tuple[str, ...]) -> dict[str, Any]:
    """Python, platform, CPUs, torch threads, load average and the versions of ``packages``."""
    import torch

    versions = {}
    for p in ("mosaicflow", *packages):
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = "not installed"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
        "versions": versions,
    }
