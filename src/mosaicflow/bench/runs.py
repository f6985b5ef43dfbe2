"""One measured mosaicflow run: a fresh local cluster, the pipeline under the process sampler,
the task stream and a Dask performance report, and its figures per stage and as a whole."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import dask
from rich.console import Console

from mosaicflow import cluster
from mosaicflow.bench.sampling import (
    INTERVAL_S,
    MIB,
    ProcessSampler,
    bucket_tasks,
    driver_cpu_seconds,
    window_figures,
)
from mosaicflow.config import Config
from mosaicflow.pipeline import STAGES, Pipeline

#: Task-stream records the scheduler keeps (distributed's default of 100 000 is too few for
#: the largest scenario); a run that fills it is marked ``task_stream_truncated``.
TASK_STREAM_LENGTH = 2_000_000
#: Stage record keys reported as the stage's figures, not repeated under ``info``.
_RECORD_KEYS = ("status", "seconds", "mpx_per_s", "started_at", "ended_at", "pixels", "updated")


def _small(value: Any) -> bool:
    """Whether a stage-record value is short enough for the benchmark's ``info``."""
    if isinstance(value, bool | int | str) or value is None:
        return not isinstance(value, str) or len(value) <= 200
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return len(value) <= 4 and all(_small(v) for v in value)
    return False


def stage_figures(
    stages: dict[str, dict[str, Any]],
    sampler: ProcessSampler,
    tasks: list[dict[str, Any]],
    slots: int,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Per stage: the pipeline's own record (seconds, Mpx/s, window) with the workers' CPU,
    memory and bytes in the stage's window and the tasks that started in it.

    Parameters
    ----------
    stages : dict
        ``RunStore.stages()``.
    sampler : ProcessSampler
        The samples of the run's worker processes.
    tasks : list of dict
        The run's task stream.
    slots : int
        Worker threads of the cluster (workers x threads per worker): the CPU capacity per
        second of wall time.

    Returns
    -------
    per_stage : dict
        One entry per stage the run recorded, in pipeline order.
    outside : int
        Tasks that started between stages.
    """
    names = [n for n in STAGES if n in stages] + [n for n in stages if n not in STAGES]
    windows = {
        n: (float(stages[n]["started_at"]), float(stages[n]["ended_at"]))
        for n in names
        if stages[n].get("started_at") is not None and stages[n].get("ended_at") is not None
    }
    counted, outside = bucket_tasks(tasks, windows)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        record = stages[name]
        figures: dict[str, Any] = {
            "seconds": record.get("seconds"),
            "mpx_per_s": record.get("mpx_per_s"),
            "started_at": record.get("started_at"),
            "ended_at": record.get("ended_at"),
        }
        if name in windows:
            start, end = windows[name]
            figures.update(window_figures(sampler.series, start, end, slots))
            figures["driver_cpu_seconds"] = driver_cpu_seconds(sampler.driver, start, end)
            figures.update(counted[name])
        else:  # a record without its window (an older pipeline): no per-window figures
            figures.update(
                cpu_seconds=None,
                cpu_utilisation=None,
                peak_rss_mib={"max": None, "per_worker": []},
                read_bytes=None,
                write_bytes=None,
                driver_cpu_seconds=None,
                tasks=None,
                task_seconds=None,
                erred=None,
            )
        figures["info"] = {k: v for k, v in record.items() if k not in _RECORD_KEYS and _small(v)}
        out[name] = figures
    return out, outside


def measure_run(
    config: Config,
    store: str | os.PathLike[str],
    *,
    n_workers: int,
    report_path: str | os.PathLike[str],
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline once on a fresh local cluster and measure it.

    Parameters
    ----------
    config : Config
        The run's configuration (its ``cluster`` section gives threads per worker and the
        memory limit).
    store : str or path-like
        The run store (replaced if it is one mosaicflow made).
    n_workers : int
        Local worker processes.
    report_path : str or path-like
        Where the Dask performance report of the run is written.
    console : rich.console.Console, optional
        The pipeline's progress; None is silent.

    Returns
    -------
    dict
        ``stages`` (see :func:`stage_figures`) and ``run``: ``wall_s`` (cluster start to
        cluster closed), ``cluster_start_s``, ``pipeline_s``, ``cluster_close_s``,
        ``mosaic_shape``, ``mosaic_mpx``, ``mpx_per_s`` (mosaic megapixels over ``wall_s``),
        ``peak_worker_rss_mib`` (with ``peak_rss_per_worker_mib``), ``cpu_utilisation``,
        ``cpu_seconds``, ``driver_cpu_seconds``, ``read_bytes``, ``write_bytes``, ``tasks``,
        ``tasks_between_stages``, ``task_stream_truncated``, ``n_particles``, ``n_workers``,
        ``threads_per_worker``, ``driver_pid`` (the measuring process).
    """
    from distributed import get_task_stream, performance_report

    pipeline = Pipeline(config, store, overwrite=True, console=console)
    pipeline.preflight()  # tile headers and the output path, before the clock starts
    threads = int(config.cluster.threads_per_worker)
    slots = n_workers * threads
    with dask.config.set(
        {"distributed.scheduler.dashboard.tasks.task-stream-length": TASK_STREAM_LENGTH}
    ):
        t0 = time.perf_counter()
        client = cluster.connect(
            "local",
            n_workers=n_workers,
            threads_per_worker=threads,
            memory_limit=config.cluster.memory_limit,
            start_method=config.cluster.start_method,
            dashboard=config.cluster.dashboard,
        )
        t_started = time.perf_counter()
        try:
            pids = client.run(os.getpid)
            sampler = ProcessSampler(pids.values())
            with sampler:
                with performance_report(filename=str(report_path)):
                    with get_task_stream(client=client) as stream:
                        run_start, p_start = time.time(), time.perf_counter()
                        result = pipeline.run(client=client)
                        run_end, p_end = time.time(), time.perf_counter()
        finally:
            t_close = time.perf_counter()
            cluster.close(client)
        t_closed = time.perf_counter()
    stages = result.stages()
    tasks = list(stream.data)
    per_stage, outside = stage_figures(stages, sampler, tasks, slots)
    whole = window_figures(sampler.series, run_start, run_end, slots)
    shape = [int(v) for v in stages.get("mosaic", {}).get("shape", [0, 0])]
    mpx = shape[0] * shape[1] / 1e6
    # What `mosaicflow run` costs: the cluster's start and close and the pipeline; the
    # benchmark's own instruments (sampler, performance report, task stream) are left out.
    wall = (t_started - t0) + (p_end - p_start) + (t_closed - t_close)
    peaks = sampler.peak_rss()
    return {
        "stages": per_stage,
        "run": {
            "wall_s": round(wall, 3),
            "cluster_start_s": round(t_started - t0, 3),
            "pipeline_s": round(p_end - p_start, 3),
            "cluster_close_s": round(t_closed - t_close, 3),
            "instrumentation_s": round((t_closed - t0) - wall, 3),
            "started_at": round(run_start, 3),
            "ended_at": round(run_end, 3),
            "mosaic_shape": shape,
            "mosaic_mpx": round(mpx, 3),
            "mpx_per_s": round(mpx / wall, 3) if wall > 0 else None,
            "peak_worker_rss_mib": round(max(peaks.values(), default=0) / MIB, 1),
            "peak_rss_per_worker_mib": [round(peaks[p] / MIB, 1) for p in sorted(peaks)],
            "cpu_seconds": whole["cpu_seconds"],
            "cpu_utilisation": whole["cpu_utilisation"],
            "driver_cpu_seconds": driver_cpu_seconds(sampler.driver, run_start, run_end),
            "read_bytes": whole["read_bytes"],
            "write_bytes": whole["write_bytes"],
            "tasks": len(tasks),
            "tasks_between_stages": outside,
            "task_stream_truncated": len(tasks) >= TASK_STREAM_LENGTH,
            "n_particles": stages.get("particles", {}).get("n_particles"),
            "n_workers": n_workers,
            "threads_per_worker": threads,
            "worker_processes_seen": len(sampler.series),
            "sample_interval_s": INTERVAL_S,
            "store": str(Path(store)),
            "driver_pid": os.getpid(),
        },
    }
