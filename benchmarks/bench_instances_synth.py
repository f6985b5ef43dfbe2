"""Instance segmentation on synthetic SEM fields with exact labels: the instance model(s) and
the Otsu baseline at three noise levels, both contrast polarities, with a count of touching
particles kept apart; and the model's CPU throughput.

    python benchmarks/bench_instances_synth.py [--model default|PATH ...] [--kind sem|supported] \
        [--fields 4] [--size 512] [--snrs inf,15,7.5] [--density 30] [--seed 0] [--threads N] \
        [--throughput-size 2048] [--throughput-runs 3] [--out benchmarks/results/instances_synth]

Fields: ``mosaicflow.synth.sem.synth_field((size, size), snr=..., seed=..., pixel_size_nm=...,
touching_fraction=0.3, agglomerate_fraction=0.05, density=...)`` (image, exact uint32 labels,
catalogue). ``--fields`` fields per SNR; field i has seed ``7_000_000 + --seed * 1000 + i``
(the same seeds at every SNR: the same particles and substrate under more or less noise, so
the SNRs are compared pairwise), pixel size ``(2, 4, 1, 8)[i % 4]`` nm (particle diameters
30-120 nm: about 4-15 px at 8 nm, 30-120 px at 1 nm) and density ``--density * (2 / px)**2``
particles per um^2 (the same number of particles, about 30 with the default, at every pixel
size). Field i is contrast-inverted (``max + min - image``: dark particles on a bright
substrate) when ``(i + i // 4)`` is odd: with 4 fields, every pixel size once and two fields of
each polarity; with 8, every pixel size in both polarities. ``mosaicflow train --synthetic``
draws its fields' seeds from ``default_rng(seed).integers(2**31)``, so these fields are not
its training fields (up to a negligible chance).

Methods: each ``--model`` (``default``: the shipped model, or a checkpoint; repeat the option
for several) through ``segment(image, model=load_model(...))``, and ``otsu``
(``segment(image, model="otsu")``: Gaussian smoothing, Otsu's threshold, the minority side,
connected components). Every method is called once on the first field, unscored, before it is
timed (``warmup_s``).

Scores per method and SNR, summed over the fields (:mod:`mosaicflow.segmentation.metrics`):
instances matched one-to-one at IoU >= 0.5 (precision, recall, F1), pixel Dice, median matched
ECD ratio (predicted / true). **Touching pairs separated**: a pair of true instances touches
when some pixel of one is 8-adjacent to a pixel of the other (agglomerates give several pairs);
it counts as separated when both are matched (IoU >= 0.5, one-to-one, so to two different
predicted instances). Reported as separated / touching pairs and the fraction.

Throughput (the first ``--model`` only): wall seconds of ``segment(image, model=checkpoint)``
on one ``--throughput-size`` square synthetic field (SNR 15, 2 nm) with the default windowed
inference (the checkpoint's window, overlap 0.25, batch 4), after one unscored warm-up call;
the median of ``--throughput-runs`` calls, as Mpx/s. The whole call is timed: scaling, windowed
inference and the growth of instances. Also the mean seconds per training epoch from the
checkpoint's ``extra["training"]["history"]`` if it holds one (with the epoch's steps, batch
and crop), as trained, on whatever machine trained it.

Writes ``instances_synth.json`` (settings, environment, per-field scores and times) and
``instances_synth.md`` under ``--out`` and prints the markdown. ``--threads N`` sets torch's
intra-op threads. The 1-minute load average at the start and end of each method is kept.
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

import numpy as np

from _util import environment, finite  # benchmarks/ is on sys.path when a script here runs
from mosaicflow.segmentation import metrics

HERE = Path(__file__).resolve().parent
PIXEL_SIZES = (2.0, 4.0, 1.0, 8.0)
SEED_BASE = 7_000_000


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def field_spec(i: int, args: argparse.Namespace) -> dict[str, Any]:
    px = PIXEL_SIZES[i % len(PIXEL_SIZES)]
    return {
        "index": i,
        "seed": SEED_BASE + args.seed * 1000 + i,
        "pixel_size_nm": px,
        "density": args.density * (2.0 / px) ** 2,
        "inverted": bool((i + i // 4) % 2),
    }


def make_field(
    spec: dict[str, Any], snr: float | None, size: int, kind: str = "sem"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Image (inverted as the spec says), labels and the catalogue's particle count.

    ``kind="supported"``: particles on a catalyst's grainy support
    (``mosaicflow.synth.supported.supported_field``, the field's seed and SNR; its particle
    sizes are its own, so the spec's pixel size and density do not apply)."""
    if kind == "supported":
        from mosaicflow.synth.supported import supported_field

        image, labels = supported_field((size, size), seed=spec["seed"], snr=snr)
        if spec["inverted"]:
            image = (float(image.max()) + float(image.min()) - image).astype(np.float32)
        return image, np.asarray(labels, np.uint32), int(labels.max())
    from mosaicflow.synth.sem import synth_field

    image, labels, cat = synth_field(
        (size, size),
        snr=snr,
        seed=spec["seed"],
        pixel_size_nm=spec["pixel_size_nm"],
        touching_fraction=0.3,
        agglomerate_fraction=0.05,
        density=spec["density"],
    )
    if spec["inverted"]:
        image = (float(image.max()) + float(image.min()) - image).astype(np.float32)
    return image, np.asarray(labels, np.uint32), len(cat)


def parse_snr(text: str) -> float | None:
    v = float(text)
    if math.isinf(v) and v > 0:
        return None
    if not v > 0:
        raise ValueError(f"SNR must be positive or inf, got {text!r}")
    return v


def snr_key(snr: float | None) -> str:
    return "inf" if snr is None else f"{snr:g}"


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """``(k, 2)`` sorted unique pairs ``(a, b)``, ``a < b``, of labels with 8-adjacent pixels."""
    lab = np.asarray(labels).astype(np.int64)
    found = []
    for a, b in (
        (lab[:, :-1], lab[:, 1:]),
        (lab[:-1, :], lab[1:, :]),
        (lab[:-1, :-1], lab[1:, 1:]),
        (lab[:-1, 1:], lab[1:, :-1]),
    ):
        m = (a > 0) & (b > 0) & (a != b)
        if m.any():
            found.append(np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


def separated(pairs: np.ndarray, true: np.ndarray, pred: np.ndarray) -> int:
    """How many touching pairs have both members matched (IoU >= 0.5, one-to-one)."""
    if not len(pairs):
        return 0
    matched = np.asarray(sorted(t for t, _, _ in metrics.match_instances(true, pred)), np.int64)
    both = np.isin(pairs[:, 0], matched) & np.isin(pairs[:, 1], matched)
    return int(np.count_nonzero(both))


def ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def build_methods(models: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"fn", "settings", "checkpoint"}}`` or ``{"error"}`` for a model that does not
    load; Otsu last."""
    from mosaicflow.segmentation.segmenter import load_model, segment

    out: dict[str, dict[str, Any]] = {}
    for m in models:
        try:
            ckpt = load_model(m)
            if not ckpt.is_instance_model:
                raise ValueError(f"{ckpt.path} is not an instance model")
        except Exception as exc:  # recorded; the other methods still run
            out[m] = {"error": f"{type(exc).__name__}: {exc}", "settings": {"model": m}}
            continue
        out[m] = {
            "fn": (lambda image, c=ckpt: segment(image, model=c)),
            "checkpoint": ckpt,
            "settings": {
                "call": f"segment(image, model=load_model({m!r}))",
                "checkpoint": str(ckpt.path),
                "window": ckpt.meta.window,
                "foreground_threshold": ckpt.threshold,
                "seed_threshold": ckpt.seed_threshold,
            },
        }
    out["otsu"] = {
        "fn": lambda image: segment(image, model="otsu"),
        "settings": {"call": "segment(image, model='otsu')"},
    }
    return out


def run_method(
    name: str, method: dict[str, Any], fields: list[dict[str, Any]], log=print
) -> dict[str, Any]:
    rec: dict[str, Any] = {"settings": method["settings"]}
    if "error" in method:
        rec["error"] = method["error"]
        log(f"{name}: not run: {rec['error']}")
        return rec
    fn = method["fn"]
    log(f"{name}: {len(fields)} fields")
    rec["load_avg_1min_start"] = os.getloadavg()[0]
    per_field = []
    current = fields[0]["name"]
    try:
        t0 = time.perf_counter()
        fn(fields[0]["image"])
        rec["warmup_s"] = time.perf_counter() - t0
        for f in fields:
            current = f["name"]
            t0 = time.perf_counter()
            pred = np.asarray(fn(f["image"]))
            dt = time.perf_counter() - t0
            if pred.shape != f["labels"].shape:
                raise ValueError(f"labels {pred.shape} for an image {f['labels'].shape}")
            t = metrics.tally(f["labels"], pred)
            sep = separated(f["pairs"], f["labels"], pred)
            per_field.append(
                {"field": f["name"], "snr": f["snr"], "seconds": dt, "tally": t}
                | {"pairs": len(f["pairs"]), "separated": sep}
            )
    except Exception as exc:  # a failing method is reported, the others still run
        rec["error"] = f"field {current!r}: {type(exc).__name__}: {exc}"
        log(f"  failed: {rec['error']}")
    rec["load_avg_1min_end"] = os.getloadavg()[0]
    if "error" not in rec:
        groups: dict[str, list[dict[str, Any]]] = {}
        for p in per_field:
            groups.setdefault(p["snr"], []).append(p)
        groups["all"] = per_field
        rec["by_snr"] = {k: summary(v) for k, v in groups.items()}
    rec["per_field"] = [
        {k: v for k, v in p.items() if k != "tally"}
        | {"tp": p["tally"].tp, "fp": p["tally"].fp, "fn": p["tally"].fn}
        | {"f1": p["tally"].scores()["f1"], "pixel_dice": p["tally"].scores()["pixel_dice"]}
        for p in per_field
    ]
    return rec


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total = metrics.Tally()
    for r in rows:
        total = total + r["tally"]
    pairs = sum(r["pairs"] for r in rows)
    sep = sum(r["separated"] for r in rows)
    return {
        "fields": len(rows),
        "scores": total.scores(),
        "touching_pairs": pairs,
        "separated": sep,
        "separated_fraction": ratio(sep, pairs),
        "seconds_per_field": float(np.mean([r["seconds"] for r in rows])),
    }


def throughput(method: dict[str, Any], size: int, runs: int, log=print) -> dict[str, Any]:
    """Mpx/s of the whole ``segment`` call on one ``size`` x ``size`` field."""
    ckpt = method["checkpoint"]
    image, _, n = make_field(
        {"seed": SEED_BASE - 1, "pixel_size_nm": 2.0, "density": 30.0, "inverted": False},
        15.0,
        size,
    )
    log(f"throughput: {size}x{size} px ({n} particles), 1 warm-up + {runs} timed")
    t0 = time.perf_counter()
    method["fn"](image)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        method["fn"](image)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    out: dict[str, Any] = {
        "checkpoint": str(ckpt.path),
        "shape": [size, size],
        "window": ckpt.meta.window,
        "overlap": 0.25,
        "batch_size": 4,
        "warmup_s": warm,
        "seconds": times,
        "mpx_per_s": size * size / 1e6 / sec,
    }
    training = (ckpt.meta.extra or {}).get("training", {})
    history = training.get("history") or []
    secs = [h["seconds"] for h in history if isinstance(h, dict) and "seconds" in h]
    if secs:
        st = training.get("settings", {})
        out["training_epoch_s"] = float(np.mean(secs))
        out["training_epochs_in_history"] = len(secs)
        out["training_epoch"] = {k: st.get(k) for k in ("steps_per_epoch", "batch", "crop")}
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"### Synthetic SEM fields: {s['fields']} per SNR, {s['size']}x{s['size']} px, "
        f"both polarities (instances matched at IoU >= 0.5)",
        "",
        "| method | SNR | F1 | P | R | Dice | median ECD ratio | touching pairs separated "
        "| true / predicted | s / field |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for name, rec in results["methods"].items():
        if "by_snr" not in rec:
            lines.append(f"| {name} | failed (below) " + "| – " * 8 + "|")
            failures.append(f"- {name}: {rec.get('error', '?')}")
            continue
        for key, g in rec["by_snr"].items():
            sc = g["scores"]
            cells = [
                name,
                key,
                fmt(sc["f1"]),
                fmt(sc["precision"]),
                fmt(sc["recall"]),
                fmt(sc["pixel_dice"]),
                fmt(sc["median_ecd_ratio"]),
                f"{g['separated']} / {g['touching_pairs']} ({fmt(g['separated_fraction'])})",
                f"{sc['true_particles']} / {sc['predicted_particles']}",
                fmt(g["seconds_per_field"], 2),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *failures, ""] if failures else [""]
    tp = results.get("throughput")
    if tp and "mpx_per_s" in tp:
        lines.append(
            f"Throughput of `segment` with {tp['checkpoint']} on a {tp['shape'][0]}x"
            f"{tp['shape'][1]} px field: **{tp['mpx_per_s']:.3f} Mpx/s** "
            f"({fmt(float(np.median(tp['seconds'])), 1)} s per call, window {tp['window']}, "
            f"overlap {tp['overlap']}, batch {tp['batch_size']}; warm-up "
            f"{tp['warmup_s']:.1f} s)."
        )
        if "training_epoch_s" in tp:
            e = tp["training_epoch"]
            lines.append(
                f"Training, from the checkpoint's history: {tp['training_epoch_s']:.1f} s per "
                f"epoch (mean of {tp['training_epochs_in_history']}; {e['steps_per_epoch']} "
                f"steps x {e['batch']} crops of {e['crop']} px, on the machine that trained it)."
            )
        else:
            lines.append("Training: the checkpoint holds no training history.")
        lines.append("")
    elif tp:
        lines += [f"Throughput not measured: {tp.get('skipped') or tp.get('error')}", ""]
    env = results["environment"]
    lines.append(
        f"Touching pairs: true instances with 8-adjacent pixels; separated when both are "
        f"matched. Seconds: mean wall time of one call per field after one warm-up call; "
        f"{env['cpus']} CPUs, torch threads {env['torch_threads']}, 1-min load average "
        f"{env['load_avg_1min']:.2f} at the start. Command: `{results['command']}`"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="'default' (the shipped model) or a checkpoint; repeat for several (default: default)",
    )
    parser.add_argument(
        "--kind",
        choices=("sem", "supported"),
        default="sem",
        help="sem: particles on a flat substrate (default); supported: small particles on a "
        "catalyst's grainy support (mosaicflow.synth.supported)",
    )
    parser.add_argument("--fields", type=int, default=4, help="fields per SNR")
    parser.add_argument("--size", type=int, default=512, help="field side in px")
    parser.add_argument("--snrs", default="inf,15,7.5", help="comma-separated; inf: no noise")
    parser.add_argument("--density", type=float, default=30.0, help="per um^2 at 2 nm/px")
    parser.add_argument("--seed", type=int, default=0, help="shifts the field seeds")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--throughput-size", type=int, default=2048, help="side of the field timed (0: skip)"
    )
    parser.add_argument("--throughput-runs", type=int, default=3, help="timed calls (median)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "instances_synth")
    args = parser.parse_args(argv)
    models = args.model or ["default"]
    if "otsu" in models:
        parser.error("--model: otsu always runs; name instance models only")
    try:
        snrs = [parse_snr(v) for v in args.snrs.split(",") if v.strip()]
    except ValueError as exc:
        parser.error(f"--snrs: {exc}")
    if not snrs:
        parser.error("--snrs: none given")
    if args.fields < 1 or args.size < 32 or args.throughput_runs < 1:
        parser.error("--fields and --throughput-runs must be at least 1, --size at least 32")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    fields = []
    for snr in snrs:
        for i in range(args.fields):
            spec = field_spec(i, args)
            image, labels, n = make_field(spec, snr, args.size, args.kind)
            fields.append(
                {
                    "name": f"snr{snr_key(snr)}-{i:02d}",
                    "snr": snr_key(snr),
                    "image": image,
                    "labels": labels,
                    "pairs": touching_pairs(labels),
                }
                | spec
                | {"particles": len(np.unique(labels[labels > 0])), "catalogue": n}
            )
    print(
        f"{len(fields)} fields, {sum(f['particles'] for f in fields)} particles, "
        f"{sum(len(f['pairs']) for f in fields)} touching pairs"
    )
    methods = build_methods(models)
    results: dict[str, Any] = {
        "command": " ".join(
            ["python", "benchmarks/bench_instances_synth.py", *(argv or sys.argv[1:])]
        ),
        "environment": environment(
            (
                "torch",
                "numpy",
                "scipy",
                "segmentation-models-pytorch",
            )
        ),
        "settings": {**vars(args), "model": models, "snrs": [snr_key(s) for s in snrs]},
        "fields": [
            {k: v for k, v in f.items() if k not in ("image", "labels", "pairs")}
            | {"touching_pairs": len(f["pairs"])}
            for f in fields
        ],
        "methods": {},
    }
    for name, method in methods.items():
        results["methods"][name] = run_method(name, method, fields)

    first = methods[models[0]]
    if args.throughput_size <= 0:
        results["throughput"] = {"skipped": "--throughput-size 0"}
    elif "error" in first:
        results["throughput"] = {"skipped": f"{models[0]} did not load: {first['error']}"}
    else:
        try:
            results["throughput"] = throughput(first, args.throughput_size, args.throughput_runs)
        except Exception as exc:  # reported; the scores are still written
            results["throughput"] = {"error": f"{type(exc).__name__}: {exc}"}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instances_synth.json").write_text(
        json.dumps(finite(results), indent=1, default=str)
    )
    md = markdown(results)
    (args.out / "instances_synth.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
