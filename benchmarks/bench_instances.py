"""Particle instance segmentation on real EM images: mosaicflow's default model, the Otsu
baseline and BPartIS (Yildirim & Cole 2021) side by side on the same images in one invocation.

    python benchmarks/bench_instances.py [--methods default,default-tta,otsu,bpartis] \
        [--sets emps,stem] [--limit N] [--out benchmarks/results/instances] [--threads N] \
        [--bpartis-mc 0]

BPartIS runs from the unpacked ``imagedataextractor`` 2.0.4 wheel (``benchmarks/peers/
fetch_bpartis.sh`` once; ``benchmarks/peers/bpartis.py`` says how, and what differs from the
package's own entry point); ``--bpartis-mc 30`` switches it from the single pass to the package
default (30 Monte Carlo dropout passes and its uncertainty filter).

Data (``../shared/data/real/``; a missing folder skips its set with a message):

- ``emps``: the EMPS test split (``emps_particles/test.csv``, 99 images; BPartIS was trained on
  the other 366). RGB PNG figure panels with grey content, read as grey by averaging the
  channels (rounded back to the file's dtype; all 99 have three identical channels, so this is
  exactly the file's grey). Truth: ``segmaps/<stem>.png`` instance maps. Scored with
  ``mosaicflow.segmentation.metrics.tally`` summed over the images: pixel Dice (particle vs
  background), instances matched one-to-one at IoU >= 0.5 (precision, recall, F1), median
  matched ECD ratio (predicted / true) and size distance (Wasserstein-1 between the true and
  predicted ECD distributions over the mean true ECD).
- ``stem``: 33 HAADF-STEM / TEM catalyst images (``stem_catalysts_yolo``, JPEG, grey or RGB,
  averaged the same way), truth only YOLO boxes (``labels/<stem>.txt``, ``cls cx cy w h``
  normalised). Each predicted instance's bounding box (``metrics.label_boxes``) is matched
  against the true boxes at box IoU >= 0.5 (``metrics.box_tally``), summed: P, R, F1 only.

``default-tta`` is the default model with ``segment(..., tta=True)``: each window's
probabilities averaged over the 8 flips and quarter turns of the square (8x the inference).

Every method gets the same 2-D grey array and returns uint32 instance labels of its shape.
Time: wall seconds per image of the call alone (no reading, no scoring), the mean over the
images; before each set every method is called once on the set's first image, unscored
(model loading, lazy initialisation), and that call's time is kept apart (``warmup_s``), as is
building the method (``setup_s``). The 1-minute load average at the start and end of each
method's run is kept: the machine may be shared. ``--threads N`` sets torch's intra-op threads.

Writes ``instances.json`` (settings, environment, per-image counts and times) and
``instances.md`` (one table per set) under ``--out`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _util import environment, finite  # benchmarks/ is on sys.path when a script here runs
from mosaicflow.segmentation import metrics
from peers.bpartis import DEFAULT as BPARTIS_ROOT
from peers.bpartis import FETCH as BPARTIS_FETCH
from peers.bpartis import BPartIS, BPartISMissing, check_root

HERE = Path(__file__).resolve().parent
REAL = HERE.parents[1] / "shared" / "data" / "real"
METHODS = ("default", "default-tta", "otsu", "bpartis")
SETS = ("emps", "stem")
Segmenter = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One image as every method sees it and its truth (an instance map or ``(n, 4)`` boxes)."""

    name: str
    image: np.ndarray
    truth: np.ndarray


@dataclass
class DataSet:
    key: str
    title: str
    folder: Path
    names: list[str]
    load: Callable[[str], Sample]
    scoring: str  # "instances" or "boxes"

    def samples(self) -> Iterator[Sample]:
        for name in self.names:
            yield self.load(name)


def grey(path: Path) -> np.ndarray:
    """The image at ``path`` as 2-D grey: colour channels averaged (alpha dropped), an integer
    image rounded back to its dtype."""
    a = np.asarray(Image.open(path))
    if a.ndim == 3:
        a3 = a[..., :3]
        if np.all(a3 == a3[..., :1]):
            return np.ascontiguousarray(a3[..., 0])
        m = a3.mean(axis=2)
        a = np.rint(m).astype(a.dtype) if np.issubdtype(a.dtype, np.integer) else m
    return a


def yolo_boxes(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """YOLO ``cls cx cy w h`` (normalised) lines as ``(n, 4)`` pixel boxes ``(y0, x0, y1, x1)``."""
    h, w = shape
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return np.zeros((0, 4))
    b = np.asarray(rows, dtype=np.float64)
    if b.shape[1] != 5:
        raise ValueError(f"{path}: expected 5 columns 'cls cx cy w h', got {b.shape[1]}")
    cx, cy, bw, bh = b[:, 1] * w, b[:, 2] * h, b[:, 3] * w, b[:, 4] * h
    return np.stack([cy - bh / 2, cx - bw / 2, cy + bh / 2, cx + bw / 2], axis=1)


def emps_set(root: Path) -> DataSet:
    folder = root / "emps_particles"
    names = [s.strip() for s in (folder / "test.csv").read_text().splitlines() if s.strip()]

    def load(name: str) -> Sample:
        image = grey(folder / "images" / f"{name}.png")
        truth = np.asarray(Image.open(folder / "segmaps" / f"{name}.png"))
        if truth.shape != image.shape:
            raise ValueError(f"EMPS {name}: segmap {truth.shape} vs image {image.shape}")
        return Sample(name, image, truth)

    return DataSet("emps", "EMPS test split", folder, names, load, "instances")


def stem_set(root: Path) -> DataSet:
    folder = root / "stem_catalysts_yolo"
    names = sorted(p.stem for p in (folder / "images").glob("*.jpg"))

    def load(name: str) -> Sample:
        image = grey(folder / "images" / f"{name}.jpg")
        return Sample(name, image, yolo_boxes(folder / "labels" / f"{name}.txt", image.shape))

    return DataSet("stem", "STEM catalysts (YOLO boxes)", folder, names, load, "boxes")


def data_set(key: str, root: Path, limit: int | None) -> DataSet | str:
    """The set, or why it is skipped."""
    make, need = {
        "emps": (emps_set, ("emps_particles/test.csv", "emps_particles/images")),
        "stem": (stem_set, ("stem_catalysts_yolo/images", "stem_catalysts_yolo/labels")),
    }[key]
    missing = [str(root / p) for p in need if not (root / p).exists()]
    if missing:
        return f"{key}: skipped, not found: {', '.join(missing)}"
    ds = make(root)
    if limit is not None:
        ds.names = ds.names[:limit]
    if not ds.names:
        return f"{key}: skipped, no images in {ds.folder}"
    return ds


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def mosaicflow_method(model: str, checkpoint: Path | None) -> tuple[Segmenter, dict[str, Any]]:
    """``segment(image, model=...)``; an instance model's checkpoint is loaded once here (as
    ``segment`` would on every call), so the time per image is inference alone."""
    try:
        from mosaicflow.segmentation.segmenter import load_model, segment
    except ImportError as exc:
        raise SystemExit(
            f"bench_instances: method {model!r} needs mosaicflow.segmentation.segment.segment "
            f"({type(exc).__name__}: {exc}); run with --methods bpartis to go without it"
        ) from exc
    if model == "otsu":
        return (lambda image: segment(image, model="otsu")), {
            "call": "mosaicflow.segmentation.segment(image, model='otsu')"
        }
    source = "default" if checkpoint is None else str(checkpoint)
    tta = model == "default-tta"
    try:
        ckpt = load_model(source)
    except Exception as exc:  # recorded like a failure on the first image
        return _raiser(exc), {"call": f"segment(image, model={source!r}, tta={tta})"}
    settings = {
        "call": f"mosaicflow.segmentation.segment(image, model=load_model({source!r}), tta={tta})",
        "checkpoint": str(ckpt.path),
        "foreground_threshold": ckpt.threshold,
        "seed_threshold": ckpt.seed_threshold,
    }
    return (lambda image: segment(image, model=ckpt, tta=tta)), settings


def _raiser(exc: Exception) -> Segmenter:
    def run(image: np.ndarray) -> np.ndarray:
        raise exc

    return run


def build_methods(names: list[str], args: argparse.Namespace) -> dict[str, tuple]:
    """``{name: (callable, settings, setup seconds)}``; exits naming the fetch script when
    BPartIS is asked for and not unpacked."""
    out: dict[str, tuple] = {}
    for name in names:
        t0 = time.perf_counter()
        if name == "bpartis":
            try:
                check_root(args.bpartis_root)
            except BPartISMissing as exc:
                raise SystemExit(f"bench_instances: {exc}") from None
            mc = args.bpartis_mc
            fn = BPartIS(args.bpartis_root, bayesian=mc > 0, n_samples=max(mc, 1))
            settings = {"call": "benchmarks/peers/bpartis.py BPartIS", **fn.settings}
        else:
            fn, settings = mosaicflow_method(name, args.default_model)
        out[name] = (fn, settings, time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score_one(ds: DataSet, sample: Sample, pred: np.ndarray) -> metrics.Tally:
    if ds.scoring == "instances":
        return metrics.tally(sample.truth, pred)
    return metrics.box_tally(sample.truth, metrics.label_boxes(pred))


def call(fn: Segmenter, image: np.ndarray) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    pred = np.asarray(fn(image))
    elapsed = time.perf_counter() - t0
    if pred.shape != image.shape:
        raise ValueError(f"labels of shape {pred.shape} for an image of shape {image.shape}")
    return pred, elapsed


def run_set(ds: DataSet, methods: dict[str, tuple], log=print) -> dict[str, Any]:
    """Every method on every image of ``ds``; a method that fails is recorded with the image
    and its error, the others go on."""
    samples = list(ds.samples())
    result: dict[str, Any] = {
        "title": ds.title,
        "folder": str(ds.folder),
        "scoring": ds.scoring,
        "images": len(samples),
        "true_particles": int(sum(len(np.unique(s.truth[s.truth > 0])) for s in samples))
        if ds.scoring == "instances"
        else int(sum(len(s.truth) for s in samples)),
        "methods": {},
    }
    for name, (fn, settings, setup_s) in methods.items():
        log(f"{ds.key}: {name} on {len(samples)} images")
        rec: dict[str, Any] = {"settings": settings, "setup_s": setup_s}
        rec["load_avg_1min_start"] = os.getloadavg()[0]
        total = metrics.Tally()
        per_image = []
        try:
            current = samples[0].name
            rec["warmup_s"] = call(fn, samples[0].image)[1]
            for s in samples:
                current = s.name
                pred, elapsed = call(fn, s.image)
                t = score_one(ds, s, pred)
                total = total + t
                per_image.append(
                    {"image": s.name, "shape": list(s.image.shape), "seconds": elapsed}
                    | {"tp": t.tp, "fp": t.fp, "fn": t.fn}
                )
        except Exception as exc:  # a failing method is reported, the others still run
            rec["error"] = f"image {current!r}: {type(exc).__name__}: {exc}"
            log(f"  failed: {rec['error']}")
        rec["load_avg_1min_end"] = os.getloadavg()[0]
        if "error" not in rec:
            rec["scores"] = total.scores()
            rec["seconds_per_image"] = float(np.mean([p["seconds"] for p in per_image]))
        rec["per_image"] = per_image
        result["methods"][name] = rec
    return result


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for key, res in results["sets"].items():
        if "skipped" in res:
            lines += [f"### {key}", "", res["skipped"], ""]
            continue
        scored = f"{res['scoring']} matched at IoU >= 0.5"
        lines += [
            f"### {res['title']}: {res['images']} images, {res['true_particles']} particles "
            f"({scored})",
            "",
            "| method | pixel Dice | P | R | F1 | median ECD ratio | size distance "
            "| predicted | s / image |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        failures: list[str] = []
        for name, rec in res["methods"].items():
            if "scores" not in rec:
                lines.append(f"| {name} | failed (below) " + "| – " * 7 + "|")
                failures.append(f"- {name} failed: {rec.get('error', '?')}")
                continue
            s = rec["scores"]
            cells = [
                name,
                fmt(s["pixel_dice"]),
                fmt(s["precision"]),
                fmt(s["recall"]),
                fmt(s["f1"]),
                fmt(s["median_ecd_ratio"]),
                fmt(s["size_distance"]),
                fmt(s["predicted_particles"]),
                fmt(rec["seconds_per_image"], 2),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *failures, ""] if failures else [""]
    env = results["environment"]
    lines.append(
        f"Seconds: mean wall time of one call per image, after one unscored warm-up call; "
        f"{env['cpus']} CPUs, torch threads {env['torch_threads']}, 1-min load average "
        f"{env['load_avg_1min']:.2f} at the start. Command: `{results['command']}`"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="first N images per set")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "instances")
    parser.add_argument("--data", type=Path, default=REAL, help="the real-data folder")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--default-model",
        type=Path,
        default=None,
        help="checkpoint the 'default' method runs (default: the shipped default model)",
    )
    parser.add_argument("--bpartis-root", type=Path, default=BPARTIS_ROOT)
    parser.add_argument(
        "--bpartis-mc",
        type=int,
        default=0,
        help="BPartIS Monte Carlo dropout passes (0: the single pass; 30: the package default)",
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for kind, got, valid in (("method", methods, METHODS), ("set", sets, SETS)):
        bad = [g for g in got if g not in valid]
        if bad or not got:
            parser.error(f"--{kind}s: {bad or 'none given'}; valid: {', '.join(valid)}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    built = build_methods(methods, args)
    results: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_instances.py", *(argv or sys.argv[1:])]),
        "environment": environment(
            (
                "torch",
                "numpy",
                "pillow",
                "scipy",
            )
        ),
        "bpartis_fetch": str(BPARTIS_FETCH.relative_to(HERE.parent)),
        "sets": {},
    }
    for key in sets:
        ds = data_set(key, args.data, args.limit)
        if isinstance(ds, str):
            print(ds)
            results["sets"][key] = {"skipped": ds}
            continue
        results["sets"][key] = run_set(ds, built)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instances.json").write_text(json.dumps(finite(results), indent=1))
    md = markdown(results)
    (args.out / "instances.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
