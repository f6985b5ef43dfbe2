"""Resident memory, CPU time and bytes read and written of the Dask worker processes, sampled by
a background thread (psutil), and the figures of one time window (a stage) from the samples."""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

#: Seconds between two samples of every worker process.
INTERVAL_S = 0.1
MIB = 2**20


@dataclass
class Series:
    """The samples of one process: wall-clock time (``time.time()``) and, at each, cumulative
    CPU seconds (user + system), resident memory and ``read_chars`` / ``write_chars`` (bytes
    through read and write system calls; NaN where the platform does not count them)."""

    t: array = field(default_factory=lambda: array("d"))
    cpu: array = field(default_factory=lambda: array("d"))
    rss: array = field(default_factory=lambda: array("d"))
    read: array = field(default_factory=lambda: array("d"))
    write: array = field(default_factory=lambda: array("d"))

    def add(self, t: float, cpu: float, rss: float, read: float, write: float) -> None:
        """Append one sample."""
        for column, value in zip(
            (self.t, self.cpu, self.rss, self.read, self.write),
            (t, cpu, rss, read, write),
            strict=True,
        ):
            column.append(value)


def _sample(proc: psutil.Process) -> tuple[float, float, float, float]:
    with proc.oneshot():
        times = proc.cpu_times()
        rss = proc.memory_info().rss
        try:
            io = proc.io_counters()
            read, write = float(io.read_chars), float(io.write_chars)
        except (AttributeError, psutil.AccessDenied, NotImplementedError):
            read = write = float("nan")
    return times.user + times.system, float(rss), read, write


def peak_rss_hwm(pid: int) -> int | None:
    """A process's lifetime peak resident memory in bytes (Linux ``VmHWM``), or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class ProcessSampler:
    """Samples the Dask worker processes of a local cluster every ``interval`` seconds.

    Workers are found as the children of the given workers' parents (the nannies), at every
    sample, so a worker that a nanny restarts is followed too.

    Parameters
    ----------
    worker_pids : iterable of int
        The worker processes when sampling starts (``client.run(os.getpid)``).
    interval : float
        Seconds between samples.

    Attributes
    ----------
    series : dict of int to Series
        The samples of every worker process seen.
    hwm : dict of int to int
        Each worker's lifetime peak RSS in bytes (Linux ``VmHWM``) read when sampling stops.
    driver : Series
        This process (client, scheduler, the stage code run outside tasks), sampled alike.
    """

    def __init__(self, worker_pids: Iterable[int], *, interval: float = INTERVAL_S) -> None:
        self.interval = float(interval)
        self.workers = {int(p) for p in worker_pids}
        self.parents: set[int] = set()
        for pid in self.workers:
            try:
                parent = psutil.Process(pid).ppid()
            except psutil.Error:
                continue
            if parent and parent != psutil.Process().pid:
                self.parents.add(parent)
        self.series: dict[int, Series] = {}
        self.hwm: dict[int, int] = {}
        self.driver = Series()
        self._procs: dict[int, psutil.Process] = {}
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-sampler", daemon=True)

    def _current_workers(self) -> set[int]:
        pids = set(self.workers)
        for parent in self.parents:
            try:
                pids |= {c.pid for c in psutil.Process(parent).children()}
            except psutil.Error:
                continue
        return pids

    def sample(self) -> None:
        """Take one sample of every worker and of this process."""
        now = time.time()
        for pid in self._current_workers():
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                values = _sample(proc)
            except psutil.Error:
                continue
            self.series.setdefault(pid, Series()).add(now, *values)
        self.driver.add(now, *_sample(self._me))

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> ProcessSampler:
        """Start sampling (one sample at once)."""
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample, read each live worker's lifetime peak and stop."""
        self._stop.set()
        self._thread.join()
        self.sample()
        for pid in self.series:
            peak = peak_rss_hwm(pid)
            if peak is not None:
                self.hwm[pid] = peak

    def __enter__(self) -> ProcessSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def peak_rss(self) -> dict[int, int]:
        """Each worker's peak RSS in bytes over the whole sampling: the larger of the sampled
        maximum and the kernel's high-water mark where there is one."""
        out = {}
        for pid, s in self.series.items():
            sampled = int(max(s.rss, default=0))
            out[pid] = max(sampled, self.hwm.get(pid, 0))
        return out


def value_at(t: array, values: array, when: float) -> float:
    """A cumulative counter at time ``when``, interpolated linearly between samples (the first
    value before the first sample, the last one after the last)."""
    n = len(t)
    if n == 0:
        return float("nan")
    if when <= t[0]:
        return values[0]
    if when >= t[n - 1]:
        return values[n - 1]
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t[mid] <= when:
            lo = mid
        else:
            hi = mid
    span = t[hi] - t[lo]
    frac = (when - t[lo]) / span if span > 0 else 1.0
    return values[lo] + frac * (values[hi] - values[lo])


def _peak_in(s: Series, start: float, end: float) -> float:
    """The largest RSS sampled in ``[start, end]``, or the sample nearest the window when none
    falls inside it (a stage shorter than the interval)."""
    inside = [r for t, r in zip(s.t, s.rss, strict=True) if start <= t <= end]
    if inside:
        return max(inside)
    nearest = min(range(len(s.t)), key=lambda i: min(abs(s.t[i] - start), abs(s.t[i] - end)))
    return s.rss[nearest]


def _alive_in(s: Series, start: float, end: float) -> bool:
    return len(s.t) > 0 and s.t[0] <= end and s.t[len(s.t) - 1] >= start


def window_figures(
    series: dict[int, Series], start: float, end: float, n_workers: int
) -> dict[str, Any]:
    """What the worker processes did between ``start`` and ``end`` (``time.time()`` seconds).

    Parameters
    ----------
    series : dict of int to Series
        Samples per worker process (:attr:`ProcessSampler.series`).
    start, end : float
        The window, e.g. a stage's ``started_at`` and ``ended_at``.
    n_workers : int
        Worker processes of the cluster (one thread each): the CPU capacity is
        ``(end - start) * n_workers`` CPU seconds.

    Returns
    -------
    dict
        ``cpu_seconds`` (busy CPU seconds of all workers), ``cpu_utilisation`` (those over the
        capacity), ``peak_rss_mib`` (``max`` and ``per_worker``, in pid order), ``read_bytes`` and
        ``write_bytes`` (``read_chars`` / ``write_chars`` of all workers; None where not
        counted).
    """
    cpu = read = write = 0.0
    peaks: list[float] = []
    io_counted = False
    for pid in sorted(series):
        s = series[pid]
        if not _alive_in(s, start, end):
            continue
        cpu += value_at(s.t, s.cpu, end) - value_at(s.t, s.cpu, start)
        r = value_at(s.t, s.read, end) - value_at(s.t, s.read, start)
        w = value_at(s.t, s.write, end) - value_at(s.t, s.write, start)
        if r == r and w == w:  # not NaN
            read += r
            write += w
            io_counted = True
        peaks.append(_peak_in(s, start, end) / MIB)
    wall = end - start
    capacity = wall * n_workers
    return {
        "cpu_seconds": round(cpu, 3),
        "cpu_utilisation": round(cpu / capacity, 4) if capacity > 0 else None,
        "peak_rss_mib": {
            "max": round(max(peaks), 1) if peaks else None,
            "per_worker": [round(p, 1) for p in peaks],
        },
        "read_bytes": int(read) if io_counted else None,
        "write_bytes": int(write) if io_counted else None,
    }


def driver_cpu_seconds(driver: Series, start: float, end: float) -> float:
    """CPU seconds this process (client, in-process scheduler, stage code outside tasks) spent
    between ``start`` and ``end``."""
    return round(value_at(driver.t, driver.cpu, end) - value_at(driver.t, driver.cpu, start), 3)


def task_start(task: dict[str, Any]) -> float | None:
    """When a task of ``distributed``'s task stream started computing (its first ``compute``
    interval, else its first interval of any kind)."""
    stops = task.get("startstops") or []
    computes = [s["start"] for s in stops if s.get("action") == "compute"]
    starts = computes or [s["start"] for s in stops if "start" in s]
    return min(starts) if starts else None


def task_compute_seconds(task: dict[str, Any]) -> float:
    """Seconds a task spent computing (its ``compute`` intervals)."""
    return sum(
        s["stop"] - s["start"] for s in task.get("startstops") or [] if s.get("action") == "compute"
    )


def bucket_tasks(
    tasks: Iterable[dict[str, Any]], windows: dict[str, tuple[float, float]]
) -> tuple[dict[str, dict[str, float]], int]:
    """Tasks of the task stream counted per window, by the time each started.

    Parameters
    ----------
    tasks : iterable of dict
        Records of ``distributed``'s task stream (``get_task_stream().data``).
    windows : dict of str to (float, float)
        ``[start, end)`` per stage, ``time.time()`` seconds.

    Returns
    -------
    per_window : dict
        Per window ``{"tasks": count, "task_seconds": compute seconds, "erred": count}``.
    outside : int
        Tasks that started in no window (between stages).
    """
    out = {name: {"tasks": 0, "task_seconds": 0.0, "erred": 0} for name in windows}
    ordered = sorted(windows.items(), key=lambda kv: kv[1][0])
    outside = 0
    for task in tasks:
        when = task_start(task)
        name = None
        if when is not None:
            for candidate, (start, end) in ordered:
                if start <= when < end:
                    name = candidate
                    break
        if name is None:
            outside += 1
            continue
        out[name]["tasks"] += 1
        out[name]["task_seconds"] += task_compute_seconds(task)
        if task.get("status") == "error" or "exception" in task:
            out[name]["erred"] += 1
    for figures in out.values():
        figures["task_seconds"] = round(figures["task_seconds"], 3)
    return out, outside
