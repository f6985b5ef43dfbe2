"""Stitching accuracy and speed: mosaicflow's registration against ASHLAR and
multiview-stitcher on the same synthetic Maps grid, side by side in one invocation.

    python benchmarks/bench_stitch_peers.py --peers-python /work/peers-venv/bin/python \
        [--rows 4 --cols 5 --seed 1 --density 11] [--repeat 1] [--featureless]

The peers run in their own virtual environment, never in the project's (made once with
``python -m venv /work/peers-venv && /work/peers-venv/bin/pip install ashlar
multiview-stitcher``), each variant in its own subprocess through ``benchmarks/peers/``
(``ashlar_driver.py``, ``mvs_driver.py``); a peer that cannot be started or fails is recorded
with its error and the others go on.

Grid: ``mosaicflow.synth.write_maps_grid`` (the library form of ``mosaicflow synth``, which
does not expose the particle density, gain or offset of the SEM mode), default 4x5 tiles of
1400x900 px, 10 % overlap, 2 nm pixels, SNR 20, stage error 8 px, per-tile gain ``N(1, 0.1)``
and offset ``N(0, 0.05)`` (relative units, substrate ~0.2), vignetting 0.1, 11 particles/um^2.

Truth: ``ground_truth/tile_origins.csv`` holds every tile's true top-left, the exact grid
``((row - 1) * round(900 * 0.9), (col - 1) * round(1400 * 0.9))`` px. The FEI stage position in
each tile's metadata is that true centre plus the stage error, ``N(0, 8 px)`` per axis and
tile; ``read_tileset(folder).tiles[["y_px", "x_px"]]`` are those stage positions as top-left
pixels (the "nominal" row below, and the input of every method).

Metric, the same for all methods: the error of every tile's registered top-left against its
true one after removing the mean error over the tiles (the mosaic frame is arbitrary); RMS is
``sqrt(mean(|e|^2))`` over the tiles of the Euclidean error, max the largest. Time is wall
seconds from reading the tiles to the positions (mosaicflow: ``read_tileset`` +
``register_tileset``; peers: reading the TIFFs into memory + registration), without imports,
JVM start or Dask cluster start (reported apart); with ``--repeat N`` the fastest of N runs
(all kept, with the 1-minute load average at each start: the machine may be shared).
mosaicflow runs twice: on the threaded scheduler and on a 2-worker ``distributed.LocalCluster``
(1 thread each); the ratios use the faster. Each peer variant's settings are stated in the
results; "best" per peer is the variant with the lowest RMS on that grid (chosen with the
truth: the most a user could get from it).

``--featureless`` adds a second grid, the same with two neighbouring tiles ((2, 2) and (2, 3))
rewritten as flat (the tile's median) + Gaussian noise (the tile's own noise level), their FEI
tag copied. There the mean offset removed is that of the other tiles (the frame the textured
part defines), and each method's worst tile is set against that tile's own stage error (its
nominal error in the same frame), and so are the two flat tiles.

Writes ``benchmarks/results/stitch_peers.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import tifffile
from rich.console import Console
from rich.table import Table

from mosaicflow import synth
from mosaicflow.io import read_tileset
from mosaicflow.runner import Runner
from mosaicflow.stitch import register_tileset
from mosaicflow.stitch.register import default_max_shift

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
FEI_TAG = 34682
FLAT_TILES = ((2, 2), (2, 3))


# --------------------------------------------------------------------------------------------
# Grid and truth
# --------------------------------------------------------------------------------------------


def make_grid(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = {
        "rows": args.rows,
        "cols": args.cols,
        "tile_shape": (args.tile_height, args.tile_width),
        "overlap": args.overlap,
        "stage_error_px": args.stage_error,
        "pixel_size_nm": args.pixel_size,
        "snr": args.snr,
        "gain_sigma": args.gain_sigma,
        "offset_sigma": args.offset_sigma,
        "vignetting": args.vignetting,
        "seed": args.seed,
        "density": args.density,
    }
    synth.write_maps_grid(folder, **params)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def flatten(path: Path, rng: np.random.Generator) -> dict[str, float]:
    """Rewrite a tile as its median + Gaussian noise of its own level, keeping the FEI tag."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        tag = page.tags[FEI_TAG]
        tif.filehandle.seek(tag.valueoffset)
        raw = tif.filehandle.read(tag.count)
        image = page.asarray()
    d = np.diff(image.astype(np.float64), axis=1).ravel()
    sigma = float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))
    value = float(np.median(image))
    top = float(np.iinfo(image.dtype).max)
    flat = np.clip(np.rint(value + rng.normal(0.0, sigma, image.shape)), 0, top)
    tifffile.imwrite(
        path,
        flat.astype(image.dtype),
        photometric="minisblack",
        extratags=[(FEI_TAG, "s", 0, raw, True)],
    )
    return {"value": value, "noise_sigma": sigma}


def truth_for(tiles: pd.DataFrame, folder: Path) -> np.ndarray:
    origins = pd.read_csv(folder / "ground_truth" / "tile_origins.csv")
    merged = tiles[["row", "col"]].merge(origins, on=["row", "col"], how="left")
    return merged[["y_px", "x_px"]].to_numpy(float)


def errors(positions: np.ndarray, true: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-tile Euclidean error after removing the mean offset of the tiles ``ref``."""
    e = np.asarray(positions, float) - true
    e -= e[ref].mean(axis=0)
    return np.hypot(e[:, 0], e[:, 1])


def score(
    positions: np.ndarray, true: np.ndarray, nominal_err: np.ndarray, ref: np.ndarray
) -> dict[str, Any]:
    err = errors(positions, true, ref)
    worst = int(np.argmax(err))
    return {
        "rms_px": float(np.sqrt(np.mean(err**2))),
        "max_px": float(err.max()),
        "worst_tile_index": worst,
        "worst_tile_stage_error_px": float(nominal_err[worst]),
        "per_tile_error_px": [round(float(v), 4) for v in err],
    }


# --------------------------------------------------------------------------------------------
# mosaicflow
# --------------------------------------------------------------------------------------------


def run_mosaicflow(folder: Path, runner: Runner | None) -> tuple[np.ndarray, float, dict]:
    t0 = time.perf_counter()
    tileset = read_tileset(folder)
    tiles, _, info = register_tileset(tileset, runner=runner)
    elapsed = time.perf_counter() - t0
    return tiles[["y_px", "x_px"]].to_numpy(float), elapsed, info


def timed(record: dict[str, Any], times: list[float], loads: list[float]) -> dict[str, Any]:
    """``elapsed_s`` the fastest of the repeats; all of them and the 1-min load average at each
    start (other processes on the machine) kept."""
    record.update(elapsed_s=min(times), elapsed_all_s=times, load_avg_1min=loads)
    return record


def mosaicflow_runs(folder: Path, workers: int, repeat: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    settings = {
        "log_sigma_px": 1.0,
        "upsample": 10,
        "max_shift_px": "default (tile side / 10)",
        "solve": "weighted least squares, a weak prior per stage position, outlier rejection",
    }
    times, loads = [], []
    with dask.config.set(scheduler="threads", num_workers=os.cpu_count()):
        for _ in range(repeat):
            loads.append(os.getloadavg()[0])
            pos, elapsed, info = run_mosaicflow(folder, None)
            times.append(elapsed)
    out["mosaicflow (threads)"] = timed(
        {
            "positions": pos.tolist(),
            "settings": {**settings, "scheduler": f"threads ({os.cpu_count()})"},
            "info": info,
        },
        times,
        loads,
    )
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        start = time.perf_counter() - t0
        times, loads = [], []
        for _ in range(repeat):
            loads.append(os.getloadavg()[0])
            pos, elapsed, info = run_mosaicflow(folder, Runner(client))
            times.append(elapsed)
    scheduler = f"distributed LocalCluster, {workers} workers x 1"
    out[f"mosaicflow (LocalCluster {workers}x1)"] = timed(
        {
            "positions": pos.tolist(),
            "cluster_start_s": start,
            "settings": {**settings, "scheduler": scheduler},
            "info": info,
        },
        times,
        loads,
    )
    return out


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------


def peer_variants(max_shift_px: float, pixel_um: float) -> list[tuple[str, str, list[str]]]:
    """(name, driver, options): ASHLAR's command-line defaults and LoG-filtered variants with
    mosaicflow's search window; multiview-stitcher's defaults, a widened overlap and a LoG
    pre-filter through its ``pairwise_reg_func`` hook."""
    shift_um = f"{max_shift_px * pixel_um:.6g}"
    tol = f"{max_shift_px:g}"
    return [
        ("ASHLAR default", "ashlar_driver.py", []),
        (
            "ASHLAR tuned (LoG 1 px)",
            "ashlar_driver.py",
            ["--filter-sigma", "1", "--max-shift-um", shift_um],
        ),
        (
            "ASHLAR tuned (LoG 2 px)",
            "ashlar_driver.py",
            ["--filter-sigma", "2", "--max-shift-um", shift_um],
        ),
        ("multiview-stitcher default", "mvs_driver.py", []),
        (
            f"multiview-stitcher tolerance {tol} px",
            "mvs_driver.py",
            ["--overlap-tolerance-px", tol],
        ),
        ("multiview-stitcher LoG 1 px", "mvs_driver.py", ["--log-sigma", "1"]),
        (
            f"multiview-stitcher LoG 1 px, tolerance {tol} px",
            "mvs_driver.py",
            ["--log-sigma", "1", "--overlap-tolerance-px", tol],
        ),
    ]


def run_peer(python: str, driver: str, tiles_json: Path, options: list[str], timeout: float):
    cmd = [python, str(PEERS / driver), str(tiles_json), *options]
    record: dict[str, Any] = {"command": " ".join(cmd)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    record["process_s"] = time.perf_counter() - t0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        record["error"] = f"exit {proc.returncode}: " + (
            proc.stderr.strip()[-2000:] or proc.stdout[-2000:]
        )
        return record
    try:
        record.update(json.loads(lines[-1]))
    except json.JSONDecodeError:
        record["error"] = f"unparsable output: {lines[-1][:500]!r}"
    return record


def peer_versions(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "v = {}\n"
        "for p in ('ashlar', 'multiview-stitcher', 'scikit-image', 'numpy'):\n"
        "    try:\n"
        "        v[p] = m.version(p)\n"
        "    except m.PackageNotFoundError:\n"
        "        v[p] = 'not installed'\n"
        "print(json.dumps(v))\n"
    )
    try:
        proc = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# --------------------------------------------------------------------------------------------
# One grid
# --------------------------------------------------------------------------------------------


def bench_grid(
    folder: Path, args: argparse.Namespace, console: Console, flat: tuple = ()
) -> dict[str, Any]:
    """Every method on one grid; the mean offset removed is that of the tiles not in ``flat``."""
    tileset = read_tileset(folder)
    tiles = tileset.tiles
    true = truth_for(tiles, folder)
    rc = list(zip(tiles["row"], tiles["col"], strict=True))
    ref = np.array([k for k, t in enumerate(rc) if t not in flat])
    nominal = tiles[["y_px", "x_px"]].to_numpy(float)
    nominal_err = errors(nominal, true, ref)
    pixel_um = tileset.pixel_size_nm[0] / 1000.0
    spec = {
        "pixel_size_um": pixel_um,
        "tiles": [
            {
                "path": str(r.path),
                "row": int(r.row),
                "col": int(r.col),
                "y_px": float(r.y_px),
                "x_px": float(r.x_px),
            }
            for r in tiles.itertuples()
        ],
    }
    tiles_json = folder / "peer_tiles.json"
    tiles_json.write_text(json.dumps(spec, indent=1))
    result: dict[str, Any] = {
        "tiles": [f"{int(r)},{int(c)}" for r, c in zip(tiles["row"], tiles["col"], strict=True)],
        "mean_offset_over": "all tiles" if not flat else "the tiles that are not flat",
        "nominal": score(nominal, true, nominal_err, ref),
        "methods": {},
    }
    console.print(f"[bold]{folder.name}[/]: mosaicflow")
    for name, rec in mosaicflow_runs(folder, args.workers, args.repeat).items():
        rec.update(score(np.asarray(rec.pop("positions")), true, nominal_err, ref))
        result["methods"][name] = rec
    max_shift = default_max_shift(tileset.tile_shape)
    for name, driver, options in peer_variants(max_shift, pixel_um):
        console.print(f"[bold]{folder.name}[/]: {name}")
        times, loads = [], []
        for _ in range(args.repeat):
            loads.append(os.getloadavg()[0])
            rec = run_peer(args.peers_python, driver, tiles_json, options, args.peer_timeout)
            if "error" in rec:
                break
            times.append(rec["elapsed_s"])
        if "positions" in rec:
            timed(rec, times, loads)
            rec.update(score(np.asarray(rec.pop("positions")), true, nominal_err, ref))
        else:
            console.print(f"  [red]failed[/]: {rec['error'][-300:]}")
        result["methods"][name] = rec
    methods = result["methods"]
    ours = min(
        (k for k in methods if k.startswith("mosaicflow")), key=lambda k: methods[k]["elapsed_s"]
    )
    result["mosaicflow_headline"] = ours
    for rec in methods.values():
        if "rms_px" in rec:
            rec["rms_ratio_vs_mosaicflow"] = rec["rms_px"] / methods[ours]["rms_px"]
            rec["time_ratio_vs_mosaicflow"] = rec["elapsed_s"] / methods[ours]["elapsed_s"]
    for peer in ("ASHLAR", "multiview-stitcher"):
        ok = [k for k in methods if k.startswith(peer) and "rms_px" in methods[k]]
        result[f"best_{peer}"] = min(ok, key=lambda k: methods[k]["rms_px"]) if ok else None
    return result


def flat_summary(result: dict[str, Any], flat_index: list[int]) -> dict[str, Any]:
    nominal = result["nominal"]["per_tile_error_px"]
    out: dict[str, Any] = {
        "flat_tiles": [result["tiles"][k] for k in flat_index],
        "flat_tiles_stage_error_px": [nominal[k] for k in flat_index],
        "methods": {},
    }
    for name, rec in result["methods"].items():
        if "per_tile_error_px" not in rec:
            continue
        err = np.asarray(rec["per_tile_error_px"])
        others = np.setdiff1d(np.arange(len(err)), flat_index)
        out["methods"][name] = {
            "flat_tiles_error_px": [float(err[k]) for k in flat_index],
            "other_tiles_rms_px": float(np.sqrt(np.mean(err[others] ** 2))),
            "other_tiles_max_px": float(err[others].max()),
            "worst_tile": result["tiles"][rec["worst_tile_index"]],
            "worst_tile_error_px": float(rec["max_px"]),
            "worst_tile_stage_error_px": float(rec["worst_tile_stage_error_px"]),
        }
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def settings_text(rec: dict[str, Any]) -> str:
    s = rec.get("settings", {})
    return ", ".join(f"{k}={v}" for k, v in s.items() if v is not None)


def fmt(v: Any, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def grid_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [
        [
            "nominal (stage)",
            fmt(result["nominal"]["rms_px"]),
            fmt(result["nominal"]["max_px"]),
            "",
            "",
            "",
            "",
        ]
    ]
    for name, rec in result["methods"].items():
        if "rms_px" not in rec:
            rows.append([name, "failed", "", "", "", "", rec.get("error", "")[-160:]])
            continue
        mark = " *" if name == result["mosaicflow_headline"] else ""
        best = name in (result.get("best_ASHLAR"), result.get("best_multiview-stitcher"))
        rows.append(
            [
                name + mark + (" (best)" if best else ""),
                fmt(rec["rms_px"]),
                fmt(rec["max_px"]),
                fmt(rec["elapsed_s"], 2),
                fmt(rec["rms_ratio_vs_mosaicflow"], 2),
                fmt(rec["time_ratio_vs_mosaicflow"], 2),
                "",
            ]
        )
    return rows


HEADER = [
    "method",
    "RMS (px)",
    "max (px)",
    "time (s)",
    "RMS / ours",
    "time / ours",
    "error",
]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Stitching accuracy and speed: mosaicflow vs ASHLAR vs multiview-stitcher",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. Versions: {report['versions']}.",
        "",
        "Error: every tile's registered top-left against the truth, mean offset removed; RMS and "
        "max over the tiles (px). Time: wall seconds from reading the tiles to the positions "
        "(no imports / JVM / cluster start). `*`: the mosaicflow run the ratios use (the "
        "faster); `(best)`: the peer variant with the lowest RMS.",
        "",
    ]
    for key, result in report["grids"].items():
        lines += [
            f"## {key}",
            "",
            f"Grid: `{json.dumps(result['grid'])}`; mean offset removed over "
            f"{result['mean_offset_over']}.",
            "",
        ]
        if "flattened" in result:
            lines += [f"Flattened tiles: `{json.dumps(result['flattened'])}`", ""]
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in grid_rows(result)]
        lines += ["", "Settings:", ""]
        for name, rec in result["methods"].items():
            extra = ""
            if "cluster_start_s" in rec:
                extra = f" (cluster start {rec['cluster_start_s']:.1f} s, not in the time)"
            if "import_s" in rec:
                extra = f" (import / JVM start {rec['import_s']:.1f} s, not in the time)"
            if "load_avg_1min" in rec:
                times = ", ".join(f"{t:.2f}" for t in rec["elapsed_all_s"])
                loads = ", ".join(f"{v:.1f}" for v in rec["load_avg_1min"])
                extra += f"; runs {times} s at load {loads}"
            if "n_edges" in rec:
                extra += f"; edges kept {rec['n_edges_kept']}/{rec['n_edges']}"
            lines.append(f"* {name}: {settings_text(rec)}{extra}")
        if "featureless" in result:
            f = result["featureless"]
            lines += [
                "",
                f"Flat tiles {f['flat_tiles']}, their own stage error (px): "
                f"{[round(v, 2) for v in f['flat_tiles_stage_error_px']]}",
                "",
                "| method | flat tiles' error (px) | other tiles RMS / max (px) | worst tile | "
                "its error (px) | its own stage error (px) |",
                "|---|---|---|---|---|---|",
            ]
            for name, m in f["methods"].items():
                lines.append(
                    f"| {name} | {', '.join(f'{v:.2f}' for v in m['flat_tiles_error_px'])} | "
                    f"{m['other_tiles_rms_px']:.3f} / {m['other_tiles_max_px']:.3f} | "
                    f"{m['worst_tile']} | {m['worst_tile_error_px']:.2f} | "
                    f"{m['worst_tile_stage_error_px']:.2f} |"
                )
        lines.append("")
    return "\n".join(lines)


def print_tables(report: dict[str, Any], console: Console) -> None:
    for key, result in report["grids"].items():
        table = Table(title=f"{key}: tile origin error vs truth (mean removed)")
        for col in HEADER:
            table.add_column(col)
        for row in grid_rows(result):
            table.add_row(*row)
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", default="/work/peers-venv/bin/python")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=5)
    parser.add_argument("--tile-height", type=int, default=900)
    parser.add_argument("--tile-width", type=int, default=1400)
    parser.add_argument("--overlap", type=float, default=0.1)
    parser.add_argument("--stage-error", type=float, default=8.0)
    parser.add_argument("--pixel-size", type=float, default=2.0, help="nm")
    parser.add_argument("--snr", type=float, default=20.0)
    parser.add_argument("--gain-sigma", type=float, default=0.1)
    parser.add_argument("--offset-sigma", type=float, default=0.05)
    parser.add_argument("--vignetting", type=float, default=0.1)
    parser.add_argument("--density", type=float, default=11.0, help="particles per um^2")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    parser.add_argument("--peer-timeout", type=float, default=600.0)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs; the fastest counts")
    parser.add_argument("--featureless", action="store_true", help="also the flat-tile grid")
    parser.add_argument("--work", default=None, help="keep the grids here (default: temporary)")
    parser.add_argument("--json", default="benchmarks/results/stitch_peers.json")
    parser.add_argument("--md", default="benchmarks/results/stitch_peers.md")
    args = parser.parse_args()
    console = Console(width=160)
    report: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "versions": {
            "mosaicflow": metadata.version("mosaicflow"),
            **peer_versions(args.peers_python),
        },
        "grids": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        folder = work / "grid"
        grid = make_grid(folder, args)
        result = bench_grid(folder, args, console)
        report["grids"]["default grid"] = {"grid": grid, **result}
        if args.featureless:
            folder = work / "grid_featureless"
            grid = make_grid(folder, args)
            rng = np.random.default_rng(0)
            flattened = {
                f"{r},{c}": flatten(folder / synth.tile_name(r, c), rng) for r, c in FLAT_TILES
            }
            result = bench_grid(folder, args, console, FLAT_TILES)
            flat_index = [result["tiles"].index(f"{r},{c}") for r, c in FLAT_TILES]
            result["featureless"] = flat_summary(result, flat_index)
            report["grids"]["featureless: two flat tiles"] = {
                "grid": grid,
                "flattened": flattened,
                **result,
            }
    print_tables(report, console)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    Path(args.md).write_text(markdown(report))
    console.print(f"wrote {args.json} and {args.md}")


if __name__ == "__main__":
    main()
