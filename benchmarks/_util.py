"""Shared by the benchmark scripts: peak memory of the Dask worker processes."""

from __future__ import annotations

import threading
import time

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
