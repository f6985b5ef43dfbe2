"""Registration and fusion at scale: Maps-like grids of 1400x900 tiles, 10 % overlap, up to
the full 1,200-tile acquisition (1.5 Gpx), on a LocalCluster; wall time per stage, peak worker
memory, accuracy against the synthetic truth and the seam step before/after equalisation.

    python benchmarks/bench_stitch_scale.py --grids 4x5 8x10 --keep /tmp/scale   # small grids
    python benchmarks/bench_stitch_scale.py --folders /tmp/maps1200              # an existing grid

A grid is written with ``mosaicflow synth`` (stage error 8 px, the synth's per-tile gain,
offset and vignetting) unless ``--folders`` names folders already written that way. Each is
stitched the way ``mosaicflow stitch`` does (the pipeline's ``tiles``, ``register`` and
``mosaic`` stages into a run store). Peak RSS is sampled from the worker processes every 50 ms;
the driver's own RSS is reported too. Results: ``benchmarks/results/stitch_scale.json`` (merged
by grid name) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from _util import PeakRSS  # benchmarks/ is on sys.path when a script here runs
from mosaicflow import cluster, synth
from mosaicflow.config import Config
from mosaicflow.io import read_tileset
from mosaicflow.io.store import RunStore
from mosaicflow.pipeline import Pipeline
from mosaicflow.stitch import seam_contrast


def write_grid(folder: Path, rows: int, cols: int) -> None:
    from mosaicflow.cli import main as cli

    argv = ["synth", str(folder), "--rows", str(rows), "--cols", str(cols)]
    argv += ["--tile-height", "900", "--tile-width", "1400", "--overlap", "0.1"]
    if cli([*argv, "--stage-error", "8"]) != 0:
        raise SystemExit(f"mosaicflow synth failed for {folder}")


def accuracy(folder: Path, tiles) -> dict[str, float]:
    """Registered origins against the truth, after removing the mean offset (px)."""
    true = synth.read_ground_truth(folder)[1]
    merged = tiles.merge(true, on=["row", "col"], suffixes=("", "_true"))
    out = {}
    for name, cols in (
        ("nominal", ["nominal_y_px", "nominal_x_px"]),
        ("registered", ["y_px", "x_px"]),
    ):
        err = merged[cols].to_numpy(float) - merged[["y_px_true", "x_px_true"]].to_numpy(float)
        err -= err.mean(axis=0)
        norm = np.hypot(err[:, 0], err[:, 1])
        out[f"{name}_rms_px"] = float(np.sqrt(np.mean(norm**2)))
        out[f"{name}_max_px"] = float(norm.max())
    return out


def stitch(folder: Path, out: Path, workers: int, chunk: int) -> dict[str, object]:
    config = Config(input=str(folder)).replace("store", chunk=chunk)
    client = cluster.connect("local", n_workers=workers, threads_per_worker=1)
    try:
        with PeakRSS() as rss:
            start = time.perf_counter()
            Pipeline(config, str(out), client=client, overwrite=True).run(stop_after="mosaic")
            total = time.perf_counter() - start
    finally:
        cluster.close(client)
    store = RunStore(str(out), mode="r")
    stages = store.stages()
    tiles = store.read_table("tiles")
    shape = stages["mosaic"]["shape"]
    result: dict[str, object] = {
        "tiles": len(tiles),
        "mosaic_mpx": shape[0] * shape[1] / 1e6,
        "workers": workers,
        "chunk": chunk,
        "total_s": total,
        "stages_s": {s: stages[s]["seconds"] for s in ("tiles", "register", "mosaic")},
        "pairs": stages["register"].get("n_pairs"),
        "pairs_kept": stages["register"].get("n_pairs_kept"),
        "peak_worker_rss_mib": rss.max_mib,
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **accuracy(folder, tiles),
    }
    tileset = dataclasses.replace(read_tileset(folder), tiles=tiles)
    before = seam_contrast(tileset)["mean_step"]
    after = seam_contrast(tileset, gains=tiles[["gain", "offset"]])["mean_step"]
    result.update(seam_step_before=before, seam_step_after=after, seam_reduction=before / after)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grids", nargs="*", default=["4x5", "8x10"], help="ROWSxCOLS to write")
    parser.add_argument("--folders", nargs="*", default=[], help="grids already written")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--keep", default=None, help="folder for the grids and stores")
    parser.add_argument("--json", default="benchmarks/results/stitch_scale.json")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="stitch-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    jobs = [(Path(f), Path(f).name) for f in args.folders]
    for grid in args.grids if not args.folders else []:
        rows, cols = (int(v) for v in grid.split("x"))
        folder = work / f"grid-{grid}"
        if not folder.exists():
            t = time.perf_counter()
            write_grid(folder, rows, cols)
            print(f"wrote {grid} in {time.perf_counter() - t:.0f} s", flush=True)
        jobs.append((folder, grid))
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    for folder, name in jobs:
        result = stitch(folder, work / f"{name}.zarr", args.workers, args.chunk)
        results[name] = result
        print(json.dumps({name: result}, indent=1), flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "| grid | tiles | Mpx | register s | mosaic s | total s | peak worker MiB | "
        "RMS / max px (nominal -> registered) | seam step before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['tiles']} | {r['mosaic_mpx']:.0f} | {r['stages_s']['register']:.1f} | "
            f"{r['stages_s']['mosaic']:.1f} | {r['total_s']:.1f} | "
            f"{r['peak_worker_rss_mib']:.0f} | "
            f"{r['nominal_rms_px']:.2f} / {r['nominal_max_px']:.2f} -> {r['registered_rms_px']:.3f}"
            f" / {r['registered_max_px']:.3f} | {r['seam_step_before']:.2f} -> "
            f"{r['seam_step_after']:.3f} ({r['seam_reduction']:.0f}x) |"
        )


if __name__ == "__main__":
    main()
