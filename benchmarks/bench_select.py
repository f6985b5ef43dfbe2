"""The rule that decides whether a candidate instance model replaces the shipped one, applied on
the validation images that training keeps out of the EMPS training split.

    python benchmarks/bench_select.py [--data DIR] [--seed 0] [--val-fraction 0.1] \
        [--threads N] [--out benchmarks/results/select] default cand1.safetensors ...

The first model is the incumbent (``default``: the shipped weights), the others candidates.
The validation images are those of ``mosaicflow train --seed S --val-fraction F`` on the
training split (``train.csv``); the shipped weights were trained with seed 0 and 0.1. Each model
segments each image whole, as training's validation does, at the operating point stored in its
checkpoint (foreground threshold, seed threshold, smallest seed); instances are matched at
IoU >= 0.5. Four measures:

- pooled F1 (counts summed over the images), and pooled pixel Dice;
- the mean of the per-image F1 (each image counts once, however many particles it holds);
- pooled F1 without the image holding the most true particles (on seed 0 a raft of 179 of the
  711 particles, which otherwise ranks models by itself).

A candidate **passes** when it is better than the incumbent on all four. A candidate whose
checkpoint records other validation images (its ``--seed`` picked another split) was trained on
some of these images: it is marked "not held out" and cannot pass. Writes ``select.json`` and
``select.md`` under ``--out`` and prints the markdown. The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from _util import environment, finite  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real" / "emps_particles"
MEASURES = ("pooled F1", "per-image mean F1", "F1 without the fullest image", "Dice")


def measures(model: str, val: list[Any]) -> dict[str, Any]:
    """The four measures of one model on the validation samples, and whether they are held
    out from it."""
    import numpy as np

    from mosaicflow.segmentation import load_model
    from mosaicflow.segmentation.metrics import Tally
    from mosaicflow.segmentation.operating import image_tallies
    from mosaicflow.segmentation.targets import probabilities_u8
    from mosaicflow.segmentation.train import softmax_whole

    ckpt = load_model(model)
    net = ckpt.model.float().eval()
    point = (ckpt.threshold, ckpt.seed_threshold, ckpt.min_seed_px)
    counts = [len(np.unique(s.labels)) - 1 for s in val]
    fullest = int(np.argmax(counts))
    pooled, without, per_image = Tally(), Tally(), []
    for i, s in enumerate(val):
        prob = probabilities_u8(softmax_whole(net, s.image.astype(np.float32)))
        (t,) = image_tallies(prob, s.labels, [point])
        pooled = pooled + t
        without = without if i == fullest else without + t
        per_image.append(t.scores()["f1"])
    recorded = ckpt.meta.extra.get("training", {}).get("data", {}).get("validation")
    held_out = None if not recorded else set(recorded) == {s.name for s in val}
    return {
        "model": model,
        "operating_point": list(point),
        "held_out": held_out,
        "pooled F1": pooled.scores()["f1"],
        "per-image mean F1": float(np.nanmean(per_image)),
        "F1 without the fullest image": without.scores()["f1"],
        "Dice": pooled.scores()["pixel_dice"],
        "fullest image": val[fullest].name,
    }


def verdict(row: dict[str, Any], incumbent: dict[str, Any]) -> str:
    if row["held_out"] is False:
        return "not held out"
    worse = [m for m in MEASURES if not row[m] > incumbent[m]]
    return "passes" if not worse else "no (" + ", ".join(worse) + ")"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="incumbent first (default: the shipped weights)")
    p.add_argument("--data", type=Path, default=REAL, help="the EMPS folder")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (mosaicflow train)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=HERE / "results" / "select")
    args = p.parse_args(argv)
    if not (args.data / "train.csv").is_file():
        p.error(f"--data: {args.data / 'train.csv'} not found (the EMPS folder)")
    from mosaicflow.segmentation import datasets
    from mosaicflow.segmentation.default import resolve_model_path
    from mosaicflow.segmentation.folds import split

    for m in args.models:  # a missing checkpoint is named before any image is read
        resolve_model_path(m, what="model")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = datasets.read_names(args.data / "train.csv")
    samples = datasets.load_pairs(args.data / "images", args.data / "segmaps", names)
    _, val = split(samples, args.val_fraction, args.seed)
    rows = []
    for m in args.models:
        rows.append(measures(m, val))
        print(f"{m}: done", file=sys.stderr, flush=True)
    lines = [
        f"### Validation: {len(val)} images of the EMPS training split (seed {args.seed}, "
        f"fraction {args.val_fraction}); each model at its stored operating point",
        "",
        "| model | " + " | ".join(MEASURES) + " | operating point | verdict |",
        "|---" * (len(MEASURES) + 3) + "|",
    ]
    for i, r in enumerate(rows):
        cells = " | ".join(f"{r[m]:.3f}" if math.isfinite(r[m]) else "-" for m in MEASURES)
        v = "incumbent" if i == 0 else verdict(r, rows[0])
        lines.append(f"| {r['model']} | {cells} | {tuple(r['operating_point'])} | {v} |")
    lines += [
        "",
        f"Fullest image: {rows[0]['fullest image']}. Command: `python "
        f"benchmarks/bench_select.py {' '.join(argv or sys.argv[1:])}`",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "select.md").write_text(text + "\n")
    record = {
        "rows": rows,
        "settings": vars(args) | {"out": str(args.out), "data": str(args.data)},
        "environment": environment(("torch", "segmentation_models_pytorch")),
    }
    (args.out / "select.json").write_text(json.dumps(finite(record), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
