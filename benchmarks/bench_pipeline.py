"""Throughput of each pipeline stage (Mpx/s) and peak worker memory, for 1 and N workers.

    python benchmarks/bench_pipeline.py                  # default 4x5 grid, 1 and 2 workers
    python benchmarks/bench_pipeline.py --rows 8 --cols 10 --workers 1 2 --json out.json

Prints a table and writes JSON (default benchmarks/results/pipeline.json). Peak RSS is sampled
from the worker processes every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _util import PeakRSS  # benchmarks/ is on sys.path when a script here runs
from mosaicflow import cluster
from mosaicflow.config import Config
from mosaicflow.pipeline import STAGES, Pipeline
from mosaicflow.synth.default import default_input


def run_once(config: Config, workers: int, out: Path) -> dict[str, object]:
    client = cluster.connect("local", n_workers=workers, threads_per_worker=1)
    try:
        with PeakRSS() as rss:
            start = time.perf_counter()
            store = Pipeline(config, str(out), client=client, overwrite=True).run()
            total = time.perf_counter() - start
    finally:
        cluster.close(client)
    stages = store.stages()
    pixels = stages["mosaic"]["shape"][0] * stages["mosaic"]["shape"][1]
    return {
        "workers": workers,
        "mosaic_mpx": pixels / 1e6,
        "total_s": total,
        "end_to_end_mpx_per_s": pixels / 1e6 / total,
        "stages": {
            s: {"seconds": stages[s]["seconds"], "mpx_per_s": stages[s].get("mpx_per_s")}
            for s in STAGES
        },
        "peak_worker_rss_mib": rss.max_mib,
        "particles": stages["particles"]["n_particles"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", default="benchmarks/results/pipeline.json")
    args = parser.parse_args()
    config = Config().replace("synth", rows=args.rows, cols=args.cols)
    config = config.replace("store", chunk=args.chunk)
    console = Console()
    default_input(config, console=console)  # synthesis is not part of the timings
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            results.append(run_once(config, workers, Path(tmp) / f"w{workers}.zarr"))
    table = Table(title=f"mosaicflow pipeline, {results[0]['mosaic_mpx']:.1f} Mpx mosaic")
    table.add_column("stage")
    for r in results:
        table.add_column(f"{r['workers']} worker(s) Mpx/s", justify="right")
    if len(results) > 1:
        table.add_column(
            f"speed-up {results[-1]['workers']} vs {results[0]['workers']}", justify="right"
        )
    for stage in STAGES[1:-1]:
        rates = [r["stages"][stage]["mpx_per_s"] for r in results]  # type: ignore[index]
        row = [stage, *[f"{v:.1f}" for v in rates]]
        if len(results) > 1:
            row.append(f"{rates[-1] / rates[0]:.2f}x")
        table.add_row(*row)
    row = ["end to end", *[f"{r['end_to_end_mpx_per_s']:.1f}" for r in results]]
    if len(results) > 1:
        row.append(
            f"{results[-1]['end_to_end_mpx_per_s'] / results[0]['end_to_end_mpx_per_s']:.2f}x"
        )  # type: ignore[operator]
    table.add_row(*row)
    table.add_row("peak worker RSS (MiB)", *[f"{r['peak_worker_rss_mib']:.0f}" for r in results])
    console.print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps({"config": config.to_dict(), "results": results}, indent=2)
    )
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
