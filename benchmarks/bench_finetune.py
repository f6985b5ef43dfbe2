"""The fine-tuning curve: how far a few labelled images of a new kind of micrograph move the
instance model, scored on held-out images of that kind (NanoShapes, bright-field TEM).

    python benchmarks/bench_finetune.py [--model default|PATH] [--sizes 1,3,5,10] \
        [--epochs 8] [--steps-per-epoch 25] [--batch 8] [--crop 256] [--lr 2e-3] [--seed 0] \
        [--split-seed 0] [--threads N] [--limit-test N] [--work DIR] \
        [--out benchmarks/results/finetune]

Data: ``../shared/data/real/tem_nanoshapes_coco/`` exported by ``_nanoshapes.export`` to
``<work>/nanoshapes/`` (one un-augmented copy of each of the 35 source images, COCO polygons
rasterised to instance maps; see ``_nanoshapes.py`` for how the copy is chosen, overlaps and
the one outlier annotation left out). Seeded split (``--split-seed``) of the sources: 1
validation image, a pool of 11 (``--pool``) and 23 held-out test images with 1,785 particles;
no source is in two sets.

Rows, every one scored on the same test images with
:func:`mosaicflow.segmentation.evaluation.evaluate` (instances matched one-to-one at IoU >= 0.5,
summed over the images; pixel Dice; median matched ECD ratio predicted / true):

- ``otsu``: ``segment(image, model="otsu")``, the threshold baseline;
- ``zero-shot``: the model as given (``--model``; the shipped default unless a path);
- ``fine-tuned``, for each n of ``--sizes``: :func:`mosaicflow.segmentation.train.train`
  (the function ``mosaicflow train`` calls) from the ``--model`` weights (``init``) on the
  first n images of the pool, which is in seeded draw order, so the training sets are nested.
  Every run is validated on the **same fixed validation image**, never one of its training
  images: ``mosaicflow.segmentation.folds.split`` needs two images, n = 1 would otherwise
  validate on its own training image (early stopping and the threshold sweep would reward
  memorising it), and a shared validation image keeps the runs comparable. The budget is
  fixed and small: ``--epochs`` x ``--steps-per-epoch`` batches of ``--batch`` random
  ``--crop`` px crops (the training recipe's augmentations), cosine learning rate from
  ``--lr`` (the ``mosaicflow train`` default), no early stop within the budget (patience =
  epochs), the best epoch by validation F1 kept, then the foreground/seed thresholds swept on
  the validation image. The window is the initial model's. ``train s``: wall seconds of the
  whole ``train`` call (loading the initial weights, the epochs, per-epoch validation, the
  sweep, writing the checkpoint). ``s / image``: mean wall seconds of segmenting one test
  image (``evaluate``'s timing: the call alone), after one unscored warm-up call.

Fine-tuned checkpoints stay in ``<work>/checkpoints/n<N>.safetensors`` (``--work`` defaults to
``<out>/work``; ``benchmarks/results/`` is git-ignored). Writes ``finetune.json`` (settings,
environment, split, per-image scores, training histories) and ``finetune.md`` under ``--out``
and prints the markdown. ``--threads N`` sets torch's intra-op threads (training and
inference).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import _nanoshapes
from _util import environment, finite  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
SIZES = (1, 3, 5, 10)
PER_IMAGE_KEYS = (
    "name",
    "true_particles",
    "predicted_particles",
    "matched",
    "f1",
    "precision",
    "recall",
    "pixel_dice",
    "median_ecd_ratio",
    "seconds",
)


def score(
    data: dict[str, Any], names: list[str], model: Any, label: str, log=print
) -> dict[str, Any]:
    """``evaluate`` on the test images: the summed scores, mean seconds per image (after one
    unscored warm-up call on the first test image) and the per-image rows (trimmed)."""
    from mosaicflow.segmentation.datasets import read_grey
    from mosaicflow.segmentation.evaluation import evaluate
    from mosaicflow.segmentation.segmenter import load_model, segment

    log(f"{label}: scoring {len(names)} test images")
    if not (isinstance(model, str) and model == "otsu"):
        model = load_model(model)  # once; evaluate would load a path itself, untimed
    t0 = time.perf_counter()
    segment(read_grey(Path(data["images"]) / f"{names[0]}.png"), model=model)
    warmup = time.perf_counter() - t0
    res = evaluate(data["images"], data["masks"], model=model, names=names)
    return {
        "warmup_s": warmup,
        "scores": res["scores"],
        "seconds_per_image": res["seconds_per_image"],
        "per_image": [{k: r.get(k) for k in PER_IMAGE_KEYS} for r in res["rows"]],
    }


def finetune(
    data: dict[str, Any],
    n: int,
    init: Path,
    args: argparse.Namespace,
    window: int,
    out: Path,
    log=print,
) -> dict[str, Any]:
    """Fine-tune on the first ``n`` pool images, validated on the fixed validation image."""
    from mosaicflow.segmentation.datasets import load_pairs
    from mosaicflow.segmentation.train import TrainSettings, train

    names = data["finetune_pool"][:n]
    train_samples = load_pairs(data["images"], data["masks"], names)
    val_samples = load_pairs(data["images"], data["masks"], data["validation"])
    settings = TrainSettings(
        crop=args.crop,
        batch=args.batch,
        lr=args.lr,
        max_epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        patience=args.epochs,
        seed=args.seed,
        threads=args.threads,
        window=window,
    )

    def on_epoch(r: dict[str, Any]) -> None:
        log(
            f"  n={n} epoch {r['epoch']}: loss {r['loss']:.4f}  val F1 {r['val_f1']:.3f}  "
            f"{r['seconds']:.0f} s" + (" *" if r.get("best") else "")
        )

    log(f"fine-tune n={n}: {', '.join(names)}")
    t0 = time.perf_counter()
    result = train(
        train_samples,
        val_samples,
        settings,
        out,
        init=init,
        on_epoch=on_epoch,
        provenance={
            "data": {
                "set": "NanoShapes (bench_finetune)",
                "train": names,
                "validation": data["validation"],
            }
        },
    )
    seconds = time.perf_counter() - t0
    return {
        "train_images": names,
        "train_seconds": seconds,
        "checkpoint": str(result.path),
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "seconds_per_epoch": result.seconds_per_epoch,
        "foreground_threshold": result.foreground_threshold,
        "seed_threshold": result.seed_threshold,
        "validation": result.validation,
        "history": result.history,
    }


def run_row(row: dict[str, Any], fn, log=print) -> dict[str, Any]:
    """``row`` updated with ``fn()``'s dict, or with the error (the other rows still run)."""
    row["load_avg_1min_start"] = os.getloadavg()[0]
    try:
        row.update(fn())
    except Exception as exc:  # a failing row is reported, the others still run
        row["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {row['model']} failed: {row['error']}")
    row["load_avg_1min_end"] = os.getloadavg()[0]
    return row


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(results: dict[str, Any]) -> str:
    d = results["data"]
    s = results["settings"]
    lines = [
        f"### Fine-tuning on NanoShapes (bright-field TEM): {len(d['test'])} held-out test "
        f"images, {d['test_particles']} particles (instances matched at IoU >= 0.5)",
        "",
        "| model | n images | F1 | P | R | Dice | median ECD ratio | predicted | train s "
        "| best epoch | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for r in results["rows"]:
        n = "–" if r["n"] is None else str(r["n"])
        if "scores" not in r:
            lines.append(f"| {r['model']} | {n} | failed (below) " + "| – " * 8 + "|")
            failures.append(f"- {r['model']} (n = {n}) failed: {r.get('error', '?')}")
            continue
        sc = r["scores"]
        best = f"{r['best_epoch']} / {r['epochs']}" if "best_epoch" in r else "–"
        cells = [
            r["model"],
            n,
            fmt(sc["f1"]),
            fmt(sc["precision"]),
            fmt(sc["recall"]),
            fmt(sc["pixel_dice"]),
            fmt(sc["median_ecd_ratio"]),
            fmt(sc["predicted_particles"]),
            fmt(r.get("train_seconds"), 0),
            best,
            fmt(r["seconds_per_image"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *failures, ""] if failures else [""]
    env = results["environment"]
    lines.append(
        f"Fine-tuning from `{s['model']}`: the first n images of the pool "
        f"({', '.join(d['finetune_pool'])}), validated on {', '.join(d['validation'])}; "
        f"{s['epochs']} epochs x {s['steps_per_epoch']} steps x {s['batch']} crops of "
        f"{s['crop']} px, lr {s['lr']}, seed {s['seed']}. {env['cpus']} CPUs, torch threads "
        f"{env['torch_threads']}, 1-min load average {env['load_avg_1min']:.2f} at the start. "
        f"Command: `{results['command']}`"
    )
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[int]:
    sizes = [int(v) for v in text.split(",") if v.strip()]
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"--sizes: positive integers, comma-separated; got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="default", help="'default' (the shipped model) or a checkpoint"
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="training-set sizes")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256, help="crop side, a multiple of 32")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds the crops and batches")
    parser.add_argument("--split-seed", type=int, default=0, help="seeds the data split")
    parser.add_argument("--pool", type=int, default=11, help="images in the fine-tuning pool")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--limit-test", type=int, default=None, help="first N test images")
    parser.add_argument("--data", type=Path, default=_nanoshapes.ROOT, help="NanoShapes folder")
    parser.add_argument("--work", type=Path, default=None, help="export + checkpoints")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "finetune")
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if max(sizes) > args.pool:
        parser.error(f"--sizes: at most --pool ({args.pool}) images, got {max(sizes)}")
    if args.limit_test is not None and args.limit_test < 1:
        parser.error("--limit-test must be at least 1")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from mosaicflow.errors import CheckpointError
    from mosaicflow.segmentation.segmenter import load_model

    try:
        zero = load_model(args.model)
    except CheckpointError as exc:
        raise SystemExit(f"bench_finetune: {exc}; pass --model PATH to use another") from None
    if not zero.is_instance_model:
        raise SystemExit(f"bench_finetune: {zero.path} is not an instance model")

    work = args.work or args.out / "work"
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    data = _nanoshapes.export(work / "nanoshapes", args.split_seed, root=args.data, pool=args.pool)
    test = data["test"][: args.limit_test] if args.limit_test else data["test"]
    test_particles = sum(data["sources"][n]["particles"] for n in test)
    print(
        f"NanoShapes: {data['totals']['sources']} sources; validation {data['validation']}, "
        f"pool {len(data['finetune_pool'])}, test {len(test)} ({test_particles} particles)"
    )
    results: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_finetune.py", *(argv or sys.argv[1:])]),
        "environment": environment(
            (
                "torch",
                "numpy",
                "scikit-image",
                "segmentation-models-pytorch",
            )
        ),
        "settings": {**vars(args), "sizes": sizes},
        "data": {
            "root": str(args.data),
            "export": data["out_dir"],
            "finetune_pool": data["finetune_pool"],
            "validation": data["validation"],
            "test": test,
            "test_particles": test_particles,
            "totals": data["totals"],
        },
        "rows": [],
    }
    rows = results["rows"]
    rows.append(run_row({"model": "otsu", "n": None}, lambda: score(data, test, "otsu", "otsu")))
    rows.append(
        run_row(
            {
                "model": "zero-shot",
                "n": 0,
                "checkpoint": str(zero.path),
                "foreground_threshold": zero.threshold,
                "seed_threshold": zero.seed_threshold,
            },
            lambda: score(data, test, zero, "zero-shot"),
        )
    )
    for n in sizes:
        ckpt = work / "checkpoints" / f"n{n}.safetensors"

        def one(n: int = n, ckpt: Path = ckpt) -> dict[str, Any]:
            rec = finetune(data, n, zero.path, args, zero.meta.window, ckpt)
            return {**rec, **score(data, test, Path(rec["checkpoint"]), f"fine-tuned n={n}")}

        rows.append(run_row({"model": "fine-tuned", "n": n}, one))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune.json").write_text(json.dumps(finite(results), indent=1, default=str))
    md = markdown(results)
    (args.out / "finetune.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
