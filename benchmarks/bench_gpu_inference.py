"""Windowed inference of the shipped instance model on a CUDA GPU: throughput and agreement.

    python benchmarks/bench_gpu_inference.py                 # a minute on one H100/H200
    python benchmarks/bench_gpu_inference.py --size 2048 --repeat 2

Every candidate runs ``segmentation.predict`` on the same chunked synthetic particle field (SNR
10), scaled as ``segment`` scales it, with the shipped model (``load_model("default")``, three
classes through a softmax), window 512 and overlap 0.25, threaded scheduler:

* ``cuda fp32``: ``device="cuda"``, the pipeline's GPU path today (PyTorch's default allows
  TF32 in cuDNN convolutions);
* ``cuda bf16`` / ``cuda fp16``: ``amp_dtype=`` autocast; with ``channels_last``;
* each at batch 4 (the pipeline's default) and a larger ``--big-batch``;
* ``cpu auto`` once (ONNX Runtime, the CPU workers' runtime), the reference the GPU must agree
  with.

Candidates run interleaved ``--repeat`` times after one warm-up each; the table gives the median
Mpx/s, max |probability difference| against the CPU reference, the share of pixels whose
foreground mask (at the checkpoint's threshold) agrees, and the instance F1 of the GPU's
particles matched to the CPU's at IoU >= 0.5.
Writes ``benchmarks/results/gpu_inference.json``. Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch

from _util import instance_agreement  # benchmarks/ is on sys.path when a script here runs
from mosaicflow import synth
from mosaicflow.segmentation import load_model, predict
from mosaicflow.segmentation.segmenter import input_scale


def candidates(big_batch: int) -> dict[str, dict[str, Any]]:
    """The GPU settings compared, as ``predict`` keywords."""
    runs: dict[str, dict[str, Any]] = {}
    for batch in (4, big_batch):
        runs[f"cuda fp32, batch {batch}"] = {"device": "cuda", "batch_size": batch}
        for amp in ("bfloat16", "float16"):
            runs[f"cuda {amp}, batch {batch}"] = {
                "device": "cuda",
                "batch_size": batch,
                "amp_dtype": amp,
            }
        runs[f"cuda bfloat16 channels_last, batch {batch}"] = {
            "device": "cuda",
            "batch_size": batch,
            "amp_dtype": "bfloat16",
            "channels_last": True,
        }
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="image side, px")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--big-batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/gpu_inference.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU inference not measured")
        return

    ckpt = load_model("default")
    thresholds = {
        "foreground_threshold": ckpt.threshold,
        "seed_threshold": ckpt.seed_threshold,
        "min_seed_px": ckpt.min_seed_px,
    }
    image, _, _ = synth.synth_field((args.size, args.size), snr=10.0, seed=7)
    low, high = np.percentile(image, input_scale(ckpt.meta))
    scaled = ((image - low) / max(high - low, 1e-6)).astype(np.float32)
    x = da.from_array(scaled, chunks=args.chunk)
    mpx = image.size / 1e6
    common = {"window": 512, "overlap": 0.25, "classes": 3, "activation": "softmax"}

    def run(options: dict[str, Any]) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        out = predict(x, ckpt.model, **common, **options).compute(scheduler="threads")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    cpu_s, ref = run({"device": "cpu", "runtime": "auto"})
    print(f"cpu auto (ONNX Runtime): {mpx / cpu_s:.2f} Mpx/s (one run, export included)")
    runs = candidates(args.big_batch)
    results = {name: run(options)[1] for name, options in runs.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, options in runs.items():
            times[name].append(run(options)[0])

    rows = []
    for name in runs:
        p = results[name]
        row: dict[str, Any] = {
            "runtime": name,
            "seconds": times[name],
            "mpx_per_s": mpx / statistics.median(times[name]),
            "max_abs_p_diff_vs_cpu": float(np.abs(p - ref).max()),
            **instance_agreement(p, ref, thresholds),
        }
        rows.append(row)
    device = torch.cuda.get_device_name(0)
    print(
        f"\npredict with the shipped model on {device}, {args.size}^2 px ({mpx:.1f} Mpx), window "
        f"512, overlap 0.25, chunks {args.chunk}, median of {args.repeat}; agreement with the "
        f"CPU run ({mpx / cpu_s:.2f} Mpx/s)"
    )
    print(f"{'runtime':40s} {'Mpx/s':>8s} {'max|dp|':>9s} {'fg agree %':>11s} {'inst F1':>8s}")
    for r in rows:
        print(
            f"{r['runtime']:40s} {r['mpx_per_s']:8.1f} {r['max_abs_p_diff_vs_cpu']:9.1e} "
            f"{100 * r['foreground_agreement']:11.4f} {r['instance_f1']:8.4f}"
        )
    report = {
        "device": device,
        "torch": torch.__version__,
        "size": args.size,
        "chunk": args.chunk,
        "mpx": mpx,
        "cpu_auto_mpx_per_s": mpx / cpu_s,
        "tf32_conv": torch.backends.cudnn.allow_tf32,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
