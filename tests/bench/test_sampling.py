"""The benchmark's sampling: counters between samples (NumPy's interp as the oracle), the
figures of a window, tasks bucketed by start time, and a real process sampled."""

from __future__ import annotations

import subprocess
import sys
import time
from array import array

import numpy as np
import pytest

from mosaicflow.bench.sampling import (
    MIB,
    ProcessSampler,
    Series,
    bucket_tasks,
    value_at,
    window_figures,
)


def _series(t, cpu, rss, read, write) -> Series:
    s = Series()
    for row in zip(t, cpu, rss, read, write, strict=True):
        s.add(*map(float, row))
    return s


def test_value_at_is_linear_interpolation_clamped_at_the_ends():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 10, 40))
    v = np.cumsum(rng.uniform(0, 3, 40))
    for when in np.concatenate([[-1.0, 11.0], rng.uniform(-0.5, 10.5, 100), t[:5]]):
        assert value_at(array("d", t), array("d", v), when) == pytest.approx(np.interp(when, t, v))
    assert np.isnan(value_at(array("d"), array("d"), 1.0))


def test_window_figures_of_two_workers():
    t = np.arange(0.0, 10.5, 0.5)
    # worker 1 busy all the time (1 CPU s per s); worker 2 idle; both read and write steadily
    one = _series(t, t, np.where(t < 5, 100, 300) * MIB, 10 * t, 2 * t)
    two = _series(t, 0 * t, np.full_like(t, 50 * MIB), 4 * t, 0 * t)
    figures = window_figures({11: one, 22: two}, 2.0, 6.0, n_workers=2)
    assert figures["cpu_seconds"] == pytest.approx(4.0)
    assert figures["cpu_utilisation"] == pytest.approx(4.0 / (4.0 * 2))
    assert figures["read_bytes"] == 14 * 4 and figures["write_bytes"] == 2 * 4
    assert figures["peak_rss_mib"] == {"max": 300.0, "per_worker": [300.0, 50.0]}
    # a window shorter than the sampling interval still has a peak: the nearest sample's
    short = window_figures({11: one}, 4.6, 4.7, n_workers=1)
    assert short["peak_rss_mib"]["max"] == 100.0
    # a process that had ended before the window is not counted
    assert window_figures({11: one}, 20.0, 21.0, n_workers=1)["peak_rss_mib"]["max"] is None


def test_io_not_counted_is_none_not_zero():
    t = np.arange(0.0, 3.0)
    nan = np.full_like(t, np.nan)
    figures = window_figures({1: _series(t, t, t, nan, nan)}, 0.0, 2.0, n_workers=1)
    assert figures["read_bytes"] is None and figures["write_bytes"] is None


def test_tasks_bucketed_by_start_time():
    def task(start, stop, action="compute", **extra):
        return {"startstops": [{"action": action, "start": start, "stop": stop}], **extra}

    tasks = [
        task(0.5, 1.5),  # starts in a, ends in b: counted in a
        task(1.0, 1.2),  # the boundary belongs to the later window
        task(1.1, 1.4, exception="boom"),
        {
            "startstops": [
                {"action": "transfer", "start": 0.2, "stop": 0.9},
                {"action": "compute", "start": 1.3, "stop": 1.5},
            ]
        },
        task(5.0, 5.5),  # between windows
        {"startstops": []},
    ]
    counted, outside = bucket_tasks(tasks, {"b": (1.0, 2.0), "a": (0.0, 1.0)})
    assert counted["a"] == {"tasks": 1, "task_seconds": 1.0, "erred": 0}
    assert counted["b"]["tasks"] == 3 and counted["b"]["erred"] == 1
    assert counted["b"]["task_seconds"] == pytest.approx(0.2 + 0.3 + 0.2)
    assert outside == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and io counters")
def test_a_real_process_sampled():
    code = (
        "import sys\n"
        "block = bytearray(200 * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])\n"  # touch every page
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        sampler = ProcessSampler([proc.pid], interval=0.05)
        with sampler:
            for _ in range(100):  # until the child holds its block (at most 10 s)
                if max(sampler.series.get(proc.pid, Series()).rss, default=0) >= 200 * MIB:
                    break
                time.sleep(0.1)
    finally:
        proc.communicate(b"")
    assert sampler.peak_rss()[proc.pid] >= 200 * MIB
    s = sampler.series[proc.pid]
    assert len(s.t) >= 2 and list(s.t) == sorted(s.t)
    assert s.cpu[len(s.cpu) - 1] > 0
