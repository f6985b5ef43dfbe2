"""Windowed inference throughput (Mpx/s) against MONAI, cluster scaling, overlap cost, memory.

    python benchmarks/bench_predict.py                       # defaults: a few minutes on 2 cores
    python benchmarks/bench_predict.py --size 512 --rss-sizes 512 1024 --window 256   # quicker

Four measurements, all on CPU with randomly initialised smp models (resnet18 encoder, 1 input
channel, ``encoder_weights=None``; the weights do not change the cost):

1. one process: ``predict`` with the synchronous and the threaded scheduler vs MONAI's
   ``sliding_window_inference`` on the same in-memory image and model, for Unet and FPN
   (best of ``--repeat`` timed runs after one warm-up; the two results are compared too);
2. a LocalCluster with 1 and 2 worker processes (1 thread each; the checkpoint is preloaded by
   the worker plugin, so the timing excludes model loading);
3. the overlap cost: pixels the model evaluates over image pixels, for the grid of each size;
4. peak worker RSS for two image sizes on one worker, the image made on the worker chunk by
   chunk and the result reduced there, so memory reflects chunk and batch, not the image.

Prints a table and writes JSON (default benchmarks/results/predict.json). Wall times depend on
what else runs on the machine; the JSON records the load average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from _util import PeakRSS  # benchmarks/ is on sys.path when a script here runs
from mosaicflow import cluster
from mosaicflow.segmentation import (
    build_model,
    predict,
    register_model_plugin,
    save_checkpoint,
    window_grid,
)


def _synthetic_block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    # a smooth field plus noise, a function of global coordinates only
    (y0, y1), (x0, x1) = block_info[None]["array-location"]  # type: ignore[index]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    rng = np.random.default_rng(y0 * 100_003 + x0)
    field = np.sin(yy / 23.0) * np.cos(xx / 31.0) + rng.normal(0, 0.3, (y1 - y0, x1 - x0))
    return field.astype(np.float32)


def synthetic(size: int, chunk: int) -> da.Array:
    """A lazy ``size`` x ``size`` float32 image built chunk by chunk where it is computed."""
    return da.zeros((size, size), chunks=chunk, dtype=np.float32).map_blocks(
        _synthetic_block, dtype=np.float32
    )


def best_time(fn: Any, repeat: int) -> tuple[float, Any]:
    result = fn()  # warm-up: allocator, oneDNN kernels, model cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def single_process(args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    image = synthetic(args.size, args.chunk)
    whole = image.compute()
    mpx = args.size**2 / 1e6
    rows = []
    for arch in args.archs:
        torch.manual_seed(0)
        model = build_model(arch)
        kwargs = {"window": args.window, "overlap": args.overlap, "batch_size": args.batch}

        def ours(scheduler: str, model: Any = model, kwargs: dict = kwargs) -> np.ndarray:
            out = predict(image, model, activation=None, **kwargs)
            return out.compute(scheduler=scheduler)

        def theirs(model: Any = model) -> np.ndarray:
            from monai.inferers import sliding_window_inference

            with torch.inference_mode():
                out = sliding_window_inference(
                    torch.from_numpy(whole)[None, None],
                    args.window,
                    args.batch,
                    model,
                    overlap=args.overlap,
                    mode="gaussian",
                )
            return out[0, 0].numpy()

        load = os.getloadavg()[0]
        t_monai, ref = best_time(theirs, args.repeat)
        t_sync, res_sync = best_time(lambda ours=ours: ours("sync"), args.repeat)
        t_threads, _ = best_time(lambda ours=ours: ours("threads"), args.repeat)
        row = {
            "arch": arch,
            "mpx": mpx,
            "monai_s": t_monai,
            "sync_s": t_sync,
            "threads_s": t_threads,
            "monai_mpx_per_s": mpx / t_monai,
            "sync_mpx_per_s": mpx / t_sync,
            "threads_mpx_per_s": mpx / t_threads,
            "ratio_sync_vs_monai": t_monai / t_sync,
            "ratio_threads_vs_monai": t_monai / t_threads,
            "max_abs_diff_vs_monai": float(np.abs(res_sync - ref).max()),
            "loadavg_before": load,
        }
        console.print(
            f"{arch}: MONAI {row['monai_mpx_per_s']:.3f}, sync {row['sync_mpx_per_s']:.3f}, "
            f"threads {row['threads_mpx_per_s']:.3f} Mpx/s "
            f"(max |diff| {row['max_abs_diff_vs_monai']:.1e})"
        )
        rows.append(row)
    return rows


def on_cluster(
    args: argparse.Namespace, ckpt: Path, workers: int, size: int, console: Console
) -> dict[str, Any]:
    client = cluster.connect("local", n_workers=workers, threads_per_worker=1)
    try:
        register_model_plugin(client, ckpt)  # loaded at worker start, outside the timing
        image = synthetic(size, args.chunk)
        prob = predict(image, ckpt, window=args.window, overlap=args.overlap, batch_size=args.batch)
        total = prob.sum()  # reduced on the workers: nothing image-sized reaches the client
        client.run(lambda: None)  # workers up and plugin set up
        load = os.getloadavg()[0]
        with PeakRSS() as rss:
            start = time.perf_counter()
            total.compute(scheduler=client)
            seconds = time.perf_counter() - start
        torch_threads = client.run(lambda: __import__("torch").get_num_threads())
    finally:
        cluster.close(client)
    # the nanny processes are children too: the workers are the largest
    peaks = sorted(rss.peak.values(), reverse=True)[:workers]
    row = {
        "workers": workers,
        "size": size,
        "mpx": size**2 / 1e6,
        "seconds": seconds,
        "mpx_per_s": size**2 / 1e6 / seconds,
        "peak_worker_rss_mib": max(peaks, default=0) / 2**20,
        "torch_threads_per_worker": sorted(set(torch_threads.values())),
        "loadavg_before": load,
    }
    console.print(
        f"cluster {workers} worker(s), {size}^2: {row['mpx_per_s']:.3f} Mpx/s, "
        f"peak worker RSS {row['peak_worker_rss_mib']:.0f} MiB"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024, help="image side for Mpx/s")
    parser.add_argument("--rss-sizes", type=int, nargs=2, default=[1024, 2048])
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--archs", nargs="+", default=["unet", "fpn"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/predict.json")
    args = parser.parse_args()
    console = Console()
    dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GB"})

    single = single_process(args, console)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = save_checkpoint(
            Path(tmp) / "unet.safetensors", build_model("unet"), arch="unet", window=args.window
        )
        scaling = [on_cluster(args, ckpt, w, args.size, console) for w in args.workers]
        memory = [on_cluster(args, ckpt, 1, s, console) for s in args.rss_sizes]
    sizes = sorted({args.size, *args.rss_sizes, 8192, 32768})
    overlap = [
        {
            "size": s,
            "windows": window_grid((s, s), args.window, args.overlap).n_windows,
            "evaluated_over_image_pixels": window_grid((s, s), args.window, args.overlap).overhead,
        }
        for s in sizes
    ]

    table = Table(title=f"predict, {args.size}^2 px, window {args.window}, overlap {args.overlap}")
    table.add_column("run")
    table.add_column("Mpx/s", justify="right")
    table.add_column("vs MONAI", justify="right")
    table.add_column("note")
    for r in single:
        table.add_row(
            f"MONAI sliding_window_inference, {r['arch']}",
            f"{r['monai_mpx_per_s']:.3f}",
            "1.00x",
            "",
        )
        table.add_row(
            f"predict sync, {r['arch']}",
            f"{r['sync_mpx_per_s']:.3f}",
            f"{r['ratio_sync_vs_monai']:.2f}x",
            f"max |diff| vs MONAI {r['max_abs_diff_vs_monai']:.1e}",
        )
        table.add_row(
            f"predict threads, {r['arch']}",
            f"{r['threads_mpx_per_s']:.3f}",
            f"{r['ratio_threads_vs_monai']:.2f}x",
            "",
        )
    for r in scaling:
        table.add_row(
            f"LocalCluster {r['workers']} worker(s), unet",
            f"{r['mpx_per_s']:.3f}",
            "",
            f"torch threads/worker {r['torch_threads_per_worker']}",
        )
    for r in memory:
        table.add_row(
            f"peak worker RSS, {r['size']}^2, 1 worker",
            f"{r['mpx_per_s']:.3f}",
            "",
            f"{r['peak_worker_rss_mib']:.0f} MiB",
        )
    for r in overlap:
        table.add_row(
            f"overlap cost {r['size']}^2",
            "",
            "",
            f"{r['windows']} windows, {r['evaluated_over_image_pixels']:.2f}x pixels",
        )
    console.print(table)
    out = {
        "args": vars(args),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads_main": torch.get_num_threads(),
        },
        "single_process": single,
        "cluster_scaling": scaling,
        "memory": memory,
        "overlap": overlap,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
