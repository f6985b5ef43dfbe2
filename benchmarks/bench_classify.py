"""Particle shape classification on real TEM nanocrystals (and synthetic HRTEM crops).

Real data: ``../shared/data/real/tem_nanoshapes_coco`` (bright-field TEM, 416x416 JPEG, COCO
polygons with a class per particle: Cube / Octahedron / Sphere). The export holds each source
micrograph three times: the original and two augmented copies, which are *mosaics* of four
images (often of other sources) with rotation and salt-and-pepper noise. Training on a mosaic
would put the same particles on both sides of a split, so for each source (the file-name stem
before ``_jpg.rf.`` / ``_png.rf.``) only the original is kept: the copy without a mosaic seam
(:func:`seam_score`: the strongest straight full-height or full-width intensity step over
the typical one; 5.0 to 95 in the 62 mosaic copies, 0.5 to 4.0 in the 35 originals kept,
which were also checked by eye on a montage). Train and test splits are pooled (35 sources;
every original shows one shape, apart from a few stray particles) and cross-validated with
folds that keep each source image whole (``StratifiedGroupKFold``): the score says how well
the forest names shapes in a micrograph it has never seen.

Each original is measured as one label image (every polygon rasterised with
``skimage.draw.polygon``, later polygons winning shared pixels) through
``mosaicflow.classify.features_from_crops``, i.e. the pipeline's ``regionprops_table``.
Particles cut by the image border, and particles that kept less than 80 % of their own
polygon after overlaps, are left out: their outline is not their shape.

Synthetic data (``--synthetic N``): ``mosaicflow.synth.hrtem.particle_crops(N, seed=...)``,
five classes, plain stratified 5-fold cross-validation (each crop its own particle).
Groschner et al. (2021) reached 86 % balanced accuracy on real HRTEM.

    python benchmarks/bench_classify.py [--trees 500] [--folds 5] [--synthetic 200]

Prints tables and writes JSON (default benchmarks/results/classify.json).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.ndimage as ndi
from rich.console import Console
from rich.table import Table
from skimage.draw import polygon

from mosaicflow.classify import (
    DEFAULT_FEATURES,
    GROSCHNER_FEATURES,
    HU_COLUMNS,
    ParticleClassifier,
    features_from_crops,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "real" / "tem_nanoshapes_coco"
MIN_OWN_FRACTION = 0.8
SEAM_LIMIT = 4.0
_STEM = re.compile(r"_(?:jpg|png)\.rf\.")

SCALE_FREE = (
    "circularity",
    "aspect_ratio",
    "solidity",
    "eccentricity",
    "roundness",
    "feret_ratio",
    *HU_COLUMNS,
)
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_FEATURES,
    "shape, scale-free": SCALE_FREE,
    "Fourier (Groschner five)": GROSCHNER_FEATURES,
}


def source_stem(file_name: str) -> str:
    """The source micrograph of a Roboflow export file: the name before ``_jpg.rf.``."""
    return _STEM.split(file_name)[0]


def seam_score(image: np.ndarray, *, border: int = 8) -> float:
    """Strongest straight seam of an image, relative to its typical pixel step.

    For every column boundary the median over rows of ``|I[:, c+1] - I[:, c]|`` (after a 3x3
    median filter that removes salt-and-pepper noise); a seam between two mosaic tiles makes
    it large along the whole height, an object edge only along part of it. Same for rows. The
    score is the largest such median away from the border, over ``1 +`` the median of all.
    """
    im = ndi.median_filter(np.asarray(image, dtype=np.float64), size=3)
    best = 0.0
    for a in (im, im.T):
        steps = np.median(np.abs(np.diff(a, axis=1)), axis=0)
        inner = steps[border : len(steps) - border]
        best = max(best, float(inner.max() / (np.median(steps) + 1.0)))
    return best


@dataclass
class Source:
    """One kept original: its grey image, label image and per-label class."""

    stem: str
    split: str
    file_name: str
    seam: float
    image: np.ndarray
    labels: np.ndarray
    classes: dict[int, str]
    own_fraction: dict[int, float]


def _rasterise(anns: list[dict[str, Any]], shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    labels = np.zeros(shape, dtype=np.uint32)
    pixels = {}
    for k, ann in enumerate(anns, start=1):
        rr_all, cc_all = [], []
        for poly in ann["segmentation"]:
            xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
            # COCO pixel (i, j) spans [j, j+1) x [i, i+1): centres sit at +0.5.
            rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
            rr_all.append(rr)
            cc_all.append(cc)
        rr = np.concatenate(rr_all)
        cc = np.concatenate(cc_all)
        labels[rr, cc] = k
        pixels[k] = (rr, cc)
    own = {
        k: float((labels[rr, cc] == k).mean()) if len(rr) else 0.0 for k, (rr, cc) in pixels.items()
    }
    return labels, own


def load_sources(data: Path = DATA) -> list[Source]:
    """The original (mosaic-free) copy of every source micrograph of both splits."""
    from PIL import Image

    out = []
    for split in ("train", "valid", "test"):
        ann_file = data / split / "_annotations.coco.json"
        if not ann_file.exists():
            continue
        coco = json.loads(ann_file.read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        copies: dict[str, list[tuple[float, dict[str, Any], np.ndarray]]] = {}
        for info in coco["images"]:
            grey = np.asarray(Image.open(data / split / info["file_name"]).convert("L"))
            copies.setdefault(source_stem(info["file_name"]), []).append(
                (seam_score(grey), info, grey)
            )
        for stem, items in sorted(copies.items()):
            score, info, grey = min(items, key=lambda t: t[0])
            if score > SEAM_LIMIT:
                print(f"skip {stem}: every copy has a mosaic seam (best {score:.1f})")
                continue
            anns = by_image.get(info["id"], [])
            if not anns:
                continue
            labels, own = _rasterise(anns, grey.shape)
            classes = {k: names[a["category_id"]] for k, a in enumerate(anns, start=1)}
            out.append(Source(stem, split, info["file_name"], score, grey, labels, classes, own))
    return out


def particle_table(sources: list[Source]) -> pd.DataFrame:
    """Features of every kept particle, with ``source`` and ``true_class`` columns."""
    table = features_from_crops([s.image for s in sources], [s.labels for s in sources])
    table["source"] = [sources[i].stem for i in table["crop"]]
    table["true_class"] = [
        sources[i].classes[int(k)] for i, k in zip(table["crop"], table["label"], strict=True)
    ]
    own = np.array(
        [
            sources[i].own_fraction[int(k)]
            for i, k in zip(table["crop"], table["label"], strict=True)
        ]
    )
    keep = (~table["touches_edge"].to_numpy(dtype=bool)) & (own >= MIN_OWN_FRACTION)
    table.attrs["dropped_edge"] = int(table["touches_edge"].sum())
    table.attrs["dropped_overlap"] = int((own < MIN_OWN_FRACTION).sum())
    return table[keep].reset_index(drop=True)


def evaluate(
    table: pd.DataFrame,
    *,
    features: tuple[str, ...] = DEFAULT_FEATURES,
    trees: int = 500,
    folds: int = 5,
    seed: int = 0,
    groups: str | None = "source",
    n_jobs: int = -1,
) -> ParticleClassifier:
    """Grouped cross-validation of the forest on the real-data table."""
    return train(
        table,
        table["true_class"],
        features=features,
        n_estimators=trees,
        random_state=seed,
        cv=folds,
        groups=groups,
        n_jobs=n_jobs,
    )


def _result(clf: ParticleClassifier, seconds: float) -> dict[str, Any]:
    return {
        "classes": list(clf.classes),
        "n_train": clf.n_train,
        "class_counts": clf.class_counts,
        "features": list(clf.features),
        "cv_folds": clf.cv_folds,
        "cv_grouped": clf.cv_grouped,
        "fold_balanced_accuracy": list(clf.cv_fold_scores),
        "balanced_accuracy_mean": clf.cv_balanced_accuracy,
        "balanced_accuracy_std": clf.cv_balanced_accuracy_std,
        "cv_confusion": None if clf.cv_confusion is None else clf.cv_confusion.tolist(),
        "oob_score": clf.oob_score,
        "oob_balanced_accuracy": clf.oob_balanced_accuracy,
        "importance_top10": clf.feature_importances().head(10).round(4).to_dict(),
        "notes": list(clf.notes),
        "seconds": round(seconds, 1),
    }


def _print(console: Console, title: str, clf: ParticleClassifier) -> None:
    scores = ", ".join(f"{s:.3f}" for s in clf.cv_fold_scores)
    console.print(
        f"[bold]{title}[/bold]: {clf.n_train} particles, balanced accuracy "
        f"{clf.cv_balanced_accuracy:.3f} ± {clf.cv_balanced_accuracy_std:.3f} over "
        f"{clf.cv_folds} {'grouped ' if clf.cv_grouped else ''}folds ({scores}); "
        f"OOB accuracy {clf.oob_score:.3f}"
    )
    for note in clf.notes:
        console.print(f"  note: {note}")
    conf = Table(title=f"{title}: held-out confusion (rows true, columns predicted)")
    conf.add_column("true")
    for c in clf.classes:
        conf.add_column(c, justify="right")
    conf.add_column("recall", justify="right")
    assert clf.cv_confusion is not None
    for c, row in zip(clf.classes, clf.cv_confusion, strict=True):
        recall = row[list(clf.classes).index(c)] / max(row.sum(), 1)
        conf.add_row(c, *(str(int(v)) for v in row), f"{recall:.3f}")
    console.print(conf)
    imp = Table(title=f"{title}: impurity importance, top 10")
    imp.add_column("feature")
    imp.add_column("importance", justify="right")
    for name, value in clf.feature_importances().head(10).items():
        imp.add_row(str(name), f"{value:.3f}")
    console.print(imp)


def run_real(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    start = time.perf_counter()
    sources = load_sources(Path(args.data))
    table = particle_table(sources)
    measured = time.perf_counter() - start
    per_class_sources = table.groupby("true_class")["source"].nunique().to_dict()
    console.print(
        f"{len(sources)} original micrographs kept (seam scores <= "
        f"{max(s.seam for s in sources):.1f}), {len(table)} particles "
        f"({table.attrs['dropped_edge']} on the border and {table.attrs['dropped_overlap']} "
        f"overlapped left out), measured in {measured:.1f} s; sources per class "
        f"{per_class_sources}"
    )
    out: dict[str, Any] = {
        "data": str(args.data),
        "sources": [s.file_name for s in sources],
        "particles": len(table),
        "dropped_edge": table.attrs["dropped_edge"],
        "dropped_overlap": table.attrs["dropped_overlap"],
        "sources_per_class": per_class_sources,
        "measure_seconds": round(measured, 1),
        "feature_sets": {},
    }
    for name, feats in FEATURE_SETS.items():
        t0 = time.perf_counter()
        clf = evaluate(table, features=feats, trees=args.trees, folds=args.folds, seed=args.seed)
        _print(console, f"real, {name}", clf)
        out["feature_sets"][name] = _result(clf, time.perf_counter() - t0)
    t0 = time.perf_counter()
    clf = evaluate(table, trees=args.trees, folds=args.folds, seed=args.seed, groups=None)
    console.print(
        f"[bold]for contrast, ungrouped folds[/bold] (particles of one micrograph on both "
        f"sides): balanced accuracy {clf.cv_balanced_accuracy:.3f} ± "
        f"{clf.cv_balanced_accuracy_std:.3f}"
    )
    out["ungrouped_default"] = _result(clf, time.perf_counter() - t0)
    return out


def run_synthetic(args: argparse.Namespace, console: Console) -> dict[str, Any] | None:
    try:
        synth_hrtem = importlib.import_module("mosaicflow.synth.hrtem")
    except ModuleNotFoundError:
        console.print("synthetic: mosaicflow.synth.hrtem is not available; skipped")
        return None
    t0 = time.perf_counter()
    images, masks, classes = synth_hrtem.particle_crops(args.synthetic, seed=args.seed)
    table = features_from_crops(images, masks)
    labels = pd.Series(np.asarray(classes, dtype=object), index=table.index)
    clf = train(
        table,
        labels,
        n_estimators=args.trees,
        random_state=args.seed,
        cv=args.folds,
        n_jobs=-1,
    )
    _print(console, "synthetic HRTEM crops", clf)
    return {"n_per_class": args.synthetic, **_result(clf, time.perf_counter() - t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA), help="tem_nanoshapes_coco folder")
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--synthetic", type=int, default=0, help="also N synthetic crops per class (0: skip)"
    )
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classify.json"))
    args = parser.parse_args()
    console = Console()
    result: dict[str, Any] = {
        "machine": platform.platform(),
        "trees": args.trees,
        "folds": args.folds,
        "seed": args.seed,
    }
    if not args.skip_real:
        if not Path(args.data).exists():
            console.print(f"real data not found at {args.data}; skipped")
        else:
            result["real"] = run_real(args, console)
    if args.synthetic:
        result["synthetic"] = run_synthetic(args, console)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
