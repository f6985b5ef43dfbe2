"""CPU runtimes for windowed inference: throughput against eager torch, at the same masks.

    python benchmarks/bench_inference_runtime.py --repeat 5       # about 15 minutes on 2 cores
    python benchmarks/bench_inference_runtime.py --train-steps 0 --repeat 1   # quick look
    python benchmarks/bench_inference_runtime.py --threads 1 --only onnx   # torch: 1 thread

Every candidate runs through ``segmentation.predict`` on the same chunked image (window, overlap
and batch as ``predict``'s defaults: 512, 0.25, 4; threaded scheduler), as ``runtime=`` /
``amp_dtype=`` / ``channels_last=`` settings where ``predict`` has one, else as a plain callable
model (TorchScript freeze, ``torch.compile``, OpenVINO, ONNX Runtime int8):

* ``torch`` (eager fp32, today's path), ``torch channels_last``, ``torch bf16 autocast``;
* ``torch jit.freeze`` (trace, freeze, ``optimize_for_inference``);
* ``torch.compile`` (inductor with freezing; skipped if it fails here);
* ``onnxruntime`` (``runtime="onnx"``: the model exported in memory, ORT fp32);
* ``onnxruntime int8`` (ORT dynamic quantisation of that export);
* ``openvino`` fp32 (only if the package is installed; it is not a dependency).

Models: randomly initialised resnet18 Unet and FPN, a resnet18 Unet trained briefly on
synthetic fields (``bench_seams.train``; random weights give meaningless masks), and the
shipped instance model (``--archs default``: ``load_model("default")``, its input scaled by
the image's percentiles as ``segment`` does; its masks are compared as the pipeline uses them:
foreground at the checkpoint's threshold, and the instance labels grown from the
probabilities). The image is a synthetic particle field at SNR 10. The ONNX Runtime and
OpenVINO candidates use ``threads_per_call()`` threads per call, as ``runtime="onnx"`` does.
Candidates run interleaved
(round-robin) ``--repeat`` times after one warm-up each, so load from other work on the machine
hits them alike; the table gives
the median Mpx/s and the median of the per-round ratio to eager torch (best time and the ratio
of best times in brackets: less sensitive to bursts of load). Accuracy against eager
torch: max |probability difference| and the share of pixels whose mask (p >= 0.5, the
checkpoint's threshold) agrees. Writes ``benchmarks/results/inference_runtime.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from _util import instance_agreement  # benchmarks/ is on sys.path when a script here runs
from mosaicflow import synth
from mosaicflow.segmentation import build_model, predict
from mosaicflow.segmentation._onnx import threads_per_call
from mosaicflow.segmentation._plugin import get_cache

EAGER = "torch (eager fp32)"


class Wrapped:
    """A plain callable model: ``predict`` runs it as given (no copy, no export)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def jit_frozen(model: torch.nn.Module, window: int) -> Wrapped:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.zeros(2, 1, window, window))
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    return Wrapped(frozen)


def compiled(model: torch.nn.Module, window: int) -> Wrapped:
    import torch._inductor.config as inductor

    inductor.freezing = True
    fn = torch.compile(model, dynamic=False)
    with torch.no_grad():
        fn(torch.zeros(3, 1, window, window))  # compile outside the timing (3: batches here)
    return Wrapped(fn)


def _onnx_bytes(model: torch.nn.Module, window: int) -> bytes:
    import io

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, 1, window, window),),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["output"],
            dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
        )
    return buffer.getvalue()


def ort_int8(model: torch.nn.Module, window: int) -> Wrapped:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "m.onnx", Path(tmp) / "q.onnx"
        src.write_bytes(_onnx_bytes(model, window))
        quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads_per_call()
        session = ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
    return Wrapped(lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0]))


def openvino(model: torch.nn.Module, window: int) -> Wrapped:
    import openvino as ov

    ov_model = ov.convert_model(
        model, example_input=torch.zeros(2, 1, window, window), input=[(-1, 1, window, window)]
    )
    config = {"INFERENCE_NUM_THREADS": threads_per_call(), "INFERENCE_PRECISION_HINT": "f32"}
    net = ov.Core().compile_model(ov_model, "CPU", config)

    def run(x: torch.Tensor) -> torch.Tensor:
        request = net.create_infer_request()  # one per call: requests are not shared by threads
        return torch.from_numpy(request.infer({0: x.numpy()})[0].copy())

    return Wrapped(run)


def candidates(
    model: torch.nn.Module, window: int, only: list[str] | None
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (model argument of predict, predict settings), unavailable ones left out."""
    out: dict[str, tuple[Any, dict[str, Any]]] = {
        EAGER: (model, {"runtime": "torch"}),
        "torch channels_last": (model, {"runtime": "torch", "channels_last": True}),
        "torch bf16 autocast": (model, {"runtime": "torch", "amp_dtype": "bfloat16"}),
        "onnxruntime (runtime='onnx')": (model, {"runtime": "onnx"}),
    }
    makers = {
        "torch jit.freeze": jit_frozen,
        "torch.compile (inductor)": compiled,
        "onnxruntime int8 dynamic": ort_int8,
        "openvino fp32": openvino,
    }
    for name, make in makers.items():
        if only is not None and not any(word in name for word in only):
            continue
        try:
            out[name] = (make(model, window), {})
        except Exception as exc:  # a candidate this machine cannot run is reported, not fatal
            print(f"  {name}: not measured ({type(exc).__name__}: {str(exc)[:120]})")
    if only is not None:
        out = {k: v for k, v in out.items() if k == EAGER or any(word in k for word in only)}
    return out


def measure(
    label: str,
    model: torch.nn.Module,
    image: np.ndarray,
    args: argparse.Namespace,
    truth: np.ndarray | None = None,
    model_thresholds: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    x = da.from_array(image, chunks=args.chunk)
    mpx = image.size / 1e6
    # every candidate is a model of its own in the process's cache: keep them all, so that
    # the timings are steady state (one model per worker process, as in a run)
    get_cache().maxsize = 64
    runs = candidates(model.eval(), args.window, args.only)
    settings: dict[str, Any] = {
        "window": args.window,
        "overlap": args.overlap,
        "batch_size": args.batch,
    }
    if model_thresholds is not None:  # the instance model: three classes through a softmax
        settings.update(classes=3, activation="softmax")

    def run(name: str) -> tuple[float, np.ndarray]:
        arg, kwargs = runs[name]
        start = time.perf_counter()
        out = predict(x, arg, **settings, **kwargs).compute(scheduler="threads")
        return time.perf_counter() - start, out

    results = {name: run(name)[1] for name in runs}  # warm-up: export, compile, caches
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name in runs:
            times[name].append(run(name)[0])
    eager = EAGER
    ref = results[eager]
    rows = []
    for name in runs:
        p = results[name]
        ratios = [e / t for e, t in zip(times[eager], times[name], strict=True)]
        row = {
            "model": label,
            "runtime": name,
            "seconds": times[name],
            "mpx_per_s": mpx / statistics.median(times[name]),
            "ratio_vs_eager": statistics.median(ratios),
            "best_mpx_per_s": mpx / min(times[name]),
            "ratio_best_vs_best": min(times[eager]) / min(times[name]),
            "max_abs_p_diff": float(np.abs(p - ref).max()),
            "mean_abs_p_diff": float(np.abs(p - ref).mean()),
            "mask_agreement": float(((p >= 0.5) == (ref >= 0.5)).mean()),
            "mask_pixels_differing": int(((p >= 0.5) != (ref >= 0.5)).sum()),
            "mask_fraction_eager": float((ref >= 0.5).mean()),
        }
        if p.ndim == 3:  # an instance model: foreground mask and instances, as segment makes them
            row.update(instance_agreement(p, ref, model_thresholds))
        if truth is not None:  # a trained model: how good the masks are, not only how alike
            mask, true = p >= 0.5, truth > 0
            row["dice_vs_truth"] = float(2 * (mask & true).sum() / (mask.sum() + true.sum()))
        print(
            f"  {label:10s} {name:30s} {row['mpx_per_s']:6.3f} Mpx/s "
            f"{row['ratio_vs_eager']:5.2f}x  max|dp| {row['max_abs_p_diff']:.1e}  "
            f"masks {100 * row['mask_agreement']:.4f} %",
            flush=True,
        )
        rows.append(row)
    return rows


def trained_unet(steps: int) -> tuple[torch.nn.Module, dict[str, float]]:
    from bench_seams import train  # benchmarks/ is on sys.path when a script here runs

    return train(steps, crop=128, batch=8, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024, help="image side")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--archs",
        nargs="*",
        default=["unet", "fpn", "default"],
        help="random models (unet, fpn) and the shipped instance model (default)",
    )
    parser.add_argument("--train-steps", type=int, default=150, help="0: no trained model")
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0: torch's)")
    parser.add_argument("--only", nargs="*", help="candidates whose name has one of these words")
    parser.add_argument("--json", default="benchmarks/results/inference_runtime.json")
    args = parser.parse_args()
    console = Console()
    if args.threads:
        torch.set_num_threads(args.threads)  # ORT sessions outside a worker follow torch

    image, truth, _ = synth.synth_field((args.size, args.size), snr=10.0, seed=7)
    models: list[tuple[str, torch.nn.Module, np.ndarray, np.ndarray | None]] = []
    thresholds: dict[str, Any] | None = None
    for arch in args.archs:
        if arch == "default":
            from mosaicflow.segmentation import load_model
            from mosaicflow.segmentation.segmenter import input_scale

            ckpt = load_model("default")
            thresholds = {
                "foreground_threshold": ckpt.threshold,
                "seed_threshold": ckpt.seed_threshold,
                "min_seed_px": ckpt.min_seed_px,
            }
            low, high = np.percentile(image, input_scale(ckpt.meta))
            scaled = ((image - low) / max(high - low, 1e-6)).astype(np.float32)
            models.append(("default (shipped)", ckpt.model, scaled, None))
            continue
        torch.manual_seed(0)
        standard = ((image - image.mean()) / image.std()).astype(np.float32)
        models.append((f"{arch} (random)", build_model(arch), standard, None))
    norm: dict[str, float] = {}
    if args.train_steps > 0:
        start = time.perf_counter()
        model, norm = trained_unet(args.train_steps)
        print(f"trained {args.train_steps} steps in {time.perf_counter() - start:.0f} s")
        normalised = ((image - norm["mean"]) / norm["std"]).astype(np.float32)
        models.append(("unet (trained)", model, normalised, truth))

    load = os.getloadavg()[0]
    rows = []
    for label, model, data, true in models:
        console.print(f"[bold]{label}[/bold]")
        rows.extend(measure(label, model, data, args, true, thresholds))

    table = Table(
        title=f"predict on CPU, {args.size}^2 px, window {args.window}, overlap {args.overlap}, "
        f"batch {args.batch}, threaded scheduler, threads per model call: torch "
        f"{torch.get_num_threads()}, ONNX Runtime/OpenVINO {threads_per_call()}; median of "
        f"{args.repeat} (best in brackets)"
    )
    for column in ("model", "runtime", "Mpx/s", "vs eager", "max |p diff|", "mask agreement"):
        table.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    for r in rows:
        table.add_row(
            r["model"],
            r["runtime"],
            f"{r['mpx_per_s']:.3f} ({r['best_mpx_per_s']:.3f})",
            f"{r['ratio_vs_eager']:.2f}x ({r['ratio_best_vs_best']:.2f}x)",
            f"{r['max_abs_p_diff']:.1e}",
            f"{100 * r['mask_agreement']:.4f} %",
        )
    console.print(table)
    out = {
        "args": vars(args),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "onnx_threads_per_call": threads_per_call(),
            "loadavg_before": load,
        },
        "trained_normalization": norm,
        "rows": rows,
    }
    try:
        import onnxruntime

        out["machine"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
