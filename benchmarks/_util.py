"""Shared by the benchmark scripts: peak memory of the Dask worker processes, JSON-safe
records, the environment a result was measured in, and how alike two instance-model outputs
are."""

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


def instance_agreement(p: Any, ref: Any, thresholds: dict[str, Any]) -> dict[str, Any]:
    """How alike two softmax outputs ``(3, y, x)`` of an instance model are where the pipeline
    uses them: the foreground masks at the checkpoint's threshold, and the instances grown from
    each (count, pixels whose label differs, instance F1 of ``p``'s particles matched to
    ``ref``'s at IoU >= 0.5)."""
    from mosaicflow.segmentation.metrics import tally
    from mosaicflow.segmentation.targets import (
        instances_from_probability,
        probabilities_u8,
        u8_threshold,
    )

    fg, interior = probabilities_u8(p)
    fg_ref, interior_ref = probabilities_u8(ref)
    t = u8_threshold(thresholds["foreground_threshold"])
    labels = instances_from_probability(fg, interior, **thresholds)
    labels_ref = instances_from_probability(fg_ref, interior_ref, **thresholds)
    return {
        "foreground_agreement": float(((fg >= t) == (fg_ref >= t)).mean()),
        "instances": int(labels.max()),
        "instances_reference": int(labels_ref.max()),
        "instance_pixels_differing": int((labels != labels_ref).sum()),
        "instance_f1": float(tally(labels_ref, labels).scores()["f1"]),
    }
