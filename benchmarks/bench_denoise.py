"""Denoiser throughput: mosaicflow on a LocalCluster vs the single whole-image SciPy /
scikit-image call on the same image, as ratios; the array-API NLM against scikit-image's fast
mode; and, where CuPy sees a GPU, Mpx/s per denoiser on the GPU and its agreement with the CPU.

    python benchmarks/bench_denoise.py                        # 3072^2 field, 1 and 2 workers
    python benchmarks/bench_denoise.py --size 4096 --chunk 1024 --workers 1 2 4

Two mosaicflow figures per denoiser and worker count:
  * compute: the input already held by the workers, the result persisted on them (the
    filter's own scaling);
  * zarr to zarr: read the mosaic from a Zarr store, write the result to one (what the
    pipeline's ``denoised`` stage does, minus the pyramid).
The reference is one call of the SciPy / scikit-image function on the in-memory image in this
process (single-threaded). Prints a table and writes JSON (default
benchmarks/results/denoise.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import scipy.ndimage as ndi
import skimage.restoration
from distributed import wait
from rich.console import Console
from rich.table import Table

from _util import PeakRSS  # benchmarks/ is on sys.path when a script here runs
from mosaicflow import cluster, dispatch, restoration, synth
from mosaicflow.restoration import _nlm_array


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        # Drop the previous result first: persisted keys still held would make a repeat free.
        out = None
        time.sleep(0.2)
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def denoisers(
    noise: float, only: tuple[str, ...] = ()
) -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """name -> (mosaicflow function of a Dask array, whole-image reference of a NumPy array)."""
    nlm = {"patch_size": 5, "patch_distance": 6, "h": 0.8 * noise, "sigma": noise}
    table = {
        "gaussian sigma=2": (
            lambda a: restoration.gaussian_filter(a, sigma=2.0),
            lambda x: ndi.gaussian_filter(x, 2.0),
        ),
        "median 3x3": (
            lambda a: restoration.median_filter(a, size=3),
            lambda x: ndi.median_filter(x, 3),
        ),
        "nl_means p5 d6": (
            lambda a: restoration.denoise_nl_means(a, **nlm),
            lambda x: skimage.restoration.denoise_nl_means(
                x, fast_mode=True, preserve_range=True, **nlm
            ),
        ),
    }
    return {k: v for k, v in table.items() if not only or k.split()[0] in only}


def bench_cluster(
    image_path: str,
    image: np.ndarray,
    noise: float,
    workers: int,
    out_dir: Path,
    reps: int,
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    client = cluster.connect("local", n_workers=workers, threads_per_worker=1)
    results: dict[str, Any] = {}
    try:
        held = client.persist(da.from_zarr(image_path))
        wait(held)
        for name, (ours, reference) in denoisers(noise, only).items():
            expected = reference(image)
            t_compute, out = _timed(lambda ours=ours: _persist(client, ours(held)), reps)
            diff = float(np.abs(out.compute() - expected).max())
            del out
            target = str(out_dir / f"{workers}-{name.split()[0]}.zarr")
            with PeakRSS() as rss:
                t_io, _ = _timed(
                    lambda ours=ours, target=target: da.to_zarr(
                        ours(da.from_zarr(image_path)), target, overwrite=True
                    ),
                    reps,
                )
            results[name] = {
                "compute_s": t_compute,
                "zarr_to_zarr_s": t_io,
                "max_abs_diff_vs_reference": diff,
                "peak_worker_rss_mib": rss.max_mib,
            }
    finally:
        cluster.close(client)
    return results


def _persist(client: Any, arr: da.Array) -> da.Array:
    out = client.persist(arr)
    wait(out)
    return out


def bench_array_nlm(image: np.ndarray, noise: float) -> dict[str, Any]:
    crop = np.ascontiguousarray(image[:1024, :1024])
    kw = {"patch_size": 5, "patch_distance": 6, "h": 0.8 * noise, "sigma": noise}
    t_sk, ref = _timed(
        lambda: skimage.restoration.denoise_nl_means(
            crop, fast_mode=True, preserve_range=True, **kw
        )
    )
    t_ours, ours = _timed(lambda: _nlm_array.denoise_nl_means(crop, preserve_range=True, **kw))
    return {
        "mpx": crop.size / 1e6,
        "skimage_fast_mpx_per_s": crop.size / 1e6 / t_sk,
        "array_api_numpy_mpx_per_s": crop.size / 1e6 / t_ours,
        "max_abs_diff": float(np.abs(ours - ref).max()),
    }


def bench_gpu(
    image: np.ndarray, noise: float, chunk: int, reps: int, only: tuple[str, ...] = ()
) -> dict[str, Any]:
    import cupy

    def synced(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            out = fn()
            cupy.cuda.Device().synchronize()
            return out

        return run

    dev = cupy.asarray(image)
    arr = da.from_array(dev, chunks=chunk, asarray=False)
    results: dict[str, Any] = {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()}
    for name, (ours, reference) in denoisers(noise, only).items():
        expected = reference(image)
        ours(arr).compute(scheduler="threads")  # warm-up: kernel compilation
        t, out = _timed(synced(lambda ours=ours: ours(arr).compute(scheduler="threads")), reps)
        results[name] = {
            "mpx_per_s": image.size / 1e6 / t,
            "max_abs_diff_vs_cpu": float(np.abs(cupy.asnumpy(out) - expected).max()),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=3072, help="side of the square field, px")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--snr", type=float, default=7.5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings")
    parser.add_argument(
        "--only", nargs="+", default=(), help="denoisers to run: gaussian median nl_means"
    )
    parser.add_argument("--json", default="benchmarks/results/denoise.json")
    args = parser.parse_args()
    only = tuple(args.only)
    console = Console()
    console.print(f"synthesising a {args.size}x{args.size} field at SNR {args.snr} ...")
    image, _, _ = synth.synth_field((args.size, args.size), snr=args.snr, seed=0)
    mpx = image.size / 1e6
    noise = restoration.estimate_sigma(da.from_array(image, chunks=args.chunk))
    report: dict[str, Any] = {
        "size": args.size,
        "chunk": args.chunk,
        "mpx": mpx,
        "noise_sigma": noise,
        "cpu": platform.processor() or platform.machine(),
    }
    report["reference_s"] = {}
    for name, (_, reference) in denoisers(noise, only).items():
        report["reference_s"][name], _ = _timed(lambda reference=reference: reference(image))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "image.zarr")
        da.to_zarr(da.from_array(image, chunks=args.chunk), path)
        report["cluster"] = {
            w: bench_cluster(path, image, noise, w, Path(tmp), args.repeat, only)
            for w in args.workers
        }
    report["array_nlm_cpu"] = bench_array_nlm(image, noise)
    if dispatch.gpu_available():
        report["gpu"] = bench_gpu(image, noise, args.chunk, args.repeat, only)

    table = Table(title=f"denoising a {args.size}^2 field ({mpx:.1f} Mpx), chunks {args.chunk}")
    table.add_column("denoiser")
    table.add_column("whole-image call Mpx/s", justify="right")
    for w in args.workers:
        table.add_column(f"{w} worker(s): compute Mpx/s (ratio)", justify="right")
        table.add_column(f"{w} worker(s): zarr->zarr Mpx/s (ratio)", justify="right")
    for name, ref_s in report["reference_s"].items():
        ref = mpx / ref_s
        row = [name, f"{ref:.2f}"]
        for w in args.workers:
            r = report["cluster"][w][name]
            for key in ("compute_s", "zarr_to_zarr_s"):
                rate = mpx / r[key]
                row.append(f"{rate:.2f} ({rate / ref:.2f}x)")
        table.add_row(*row)
    console.print(table)
    for w in args.workers:
        for name, r in report["cluster"][w].items():
            console.print(
                f"{w} worker(s) {name}: max |mosaicflow - reference| = "
                f"{r['max_abs_diff_vs_reference']:.2e}, peak worker RSS "
                f"{r['peak_worker_rss_mib']:.0f} MiB"
            )
    a = report["array_nlm_cpu"]
    console.print(
        f"NLM fast mode on {a['mpx']:.1f} Mpx, one CPU core: scikit-image "
        f"{a['skimage_fast_mpx_per_s']:.2f} Mpx/s, mosaicflow array-API (NumPy) "
        f"{a['array_api_numpy_mpx_per_s']:.2f} Mpx/s, max diff {a['max_abs_diff']:.1e}"
    )
    if "gpu" in report:
        for name, r in report["gpu"].items():
            if name != "device":
                console.print(
                    f"GPU {report['gpu']['device']} {name}: {r['mpx_per_s']:.1f} Mpx/s, "
                    f"max |GPU - CPU| = {r['max_abs_diff_vs_cpu']:.1e}"
                )
    else:
        console.print("no CUDA device: GPU figures not measured")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
