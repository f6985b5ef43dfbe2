"""``mosaicflow run``: the whole job, from a tile set (or the built-in default) to the report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mosaicflow.config import (
    AUTO_MIN_DIAMETER_PX,
    BLEND_MODES,
    DEFAULT_CHUNK_PX,
    DENOISE_METHODS,
    EDGE_POLICIES,
    MISSING_TILE_POLICIES,
    MODEL_CHUNK_PX,
    POLARITIES,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to an ``add_subparsers()`` object."""
    run = subparsers.add_parser(
        "run", help="run the whole job (default input: a synthetic Maps-like grid)"
    )
    run.add_argument(
        "input",
        nargs="?",
        help="acquisition folder or YAML config (default: built-in synthetic grid)",
    )
    run.add_argument("--out", required=True, help="run store path or URL (e.g. run.zarr)")
    add_tile_options(run)
    add_stitch_options(run)
    add_cluster_options(run)
    run.add_argument(
        "--chunk",
        type=int,
        default=None,
        help=f"store chunk size in px (default {DEFAULT_CHUNK_PX}; {MODEL_CHUNK_PX} with --model)",
    )
    run.add_argument(
        "--denoise",
        choices=DENOISE_METHODS,
        default=None,
        help="denoiser (default gaussian); nl_means estimates the noise over the mosaic",
    )
    run.add_argument(
        "--sigma", type=float, default=None, help="Gaussian denoise sigma in px (default 1)"
    )
    run.add_argument(
        "--polarity",
        choices=POLARITIES,
        default=None,
        help="particles brighter (SEM backscatter, HAADF) or darker (bright-field TEM) than "
        "their support; auto (default) decides from the mosaic and records it",
    )
    run.add_argument(
        "--min-size",
        default=None,
        metavar="SIZE",
        help="smallest equivalent diameter listed, e.g. '10 nm' or '3 px'; '0' lists every "
        f"object (default auto: {AUTO_MIN_DIAMETER_PX:g} px)",
    )
    run.add_argument(
        "--edge-policy",
        choices=EDGE_POLICIES,
        default=None,
        help="particles touching the mosaic edge or an uncovered area: keep, flag (default: "
        "listed, left out of the statistics) or drop",
    )
    run.add_argument(
        "--model",
        default=None,
        help="segment particles with a model instead of Otsu: 'default' (the shipped instance "
        "model) or a checkpoint (windowed U-Net/FPN inference; see docs/INSTANCES.md)",
    )
    run.add_argument(
        "--classifier",
        default=None,
        help="classify particles with this random forest (from 'mosaicflow classify-train')",
    )
    run.add_argument(
        "--trust-classifier-pickle",
        action="store_true",
        default=None,
        help="read a --classifier file of the old pickle-based format (it can run code when "
        "loaded: only for files whose origin you trust)",
    )
    add_store_options(run)
    run.set_defaults(func=main)
    return run


def add_tile_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how a tile set is read (``tiles`` configuration section)."""
    tiles = parser.add_argument_group("tile set (any image format; see docs/GRID_FORMAT.md)")
    tiles.add_argument(
        "--layout",
        default=None,
        help="tile layout: a CSV file,row,col[,stage_y_nm,stage_x_nm,pixel_size_nm] or a Fiji "
        "TileConfiguration.txt (file names relative to it)",
    )
    tiles.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        metavar="NM",
        help="pixel size in nm (overrides the layout and the tile metadata)",
    )
    tiles.add_argument(
        "--grid",
        default=None,
        metavar="ROWSxCOLS",
        help="grid size; without a layout the image files are taken in sorted name order, "
        "row by row",
    )
    tiles.add_argument(
        "--overlap",
        default=None,
        metavar="F[,FX]",
        help="fraction of a tile shared with its neighbour (grid model, e.g. 0.1), or the "
        "vertical and horizontal fractions, e.g. 0.1,0.25",
    )
    tiles.add_argument(
        "--crop-bottom",
        type=int,
        default=None,
        metavar="PX",
        help="rows of data bar to cut from each tile (default: from FEI metadata, else none)",
    )
    tiles.add_argument(
        "--missing-tiles",
        choices=MISSING_TILE_POLICIES,
        default=None,
        help="a grid position without a tile: error (default) or blank (left uncovered)",
    )


def add_stitch_options(parser: argparse.ArgumentParser) -> None:
    """Registration and fusion options (``stitch`` configuration section)."""
    group = parser.add_argument_group("stitching (see docs/STITCHING.md)")
    group.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        default=None,
        help="fuse at the stage positions (default: register every overlapping pair and solve)",
    )
    group.add_argument(
        "--blend",
        choices=BLEND_MODES,
        default=None,
        help="linear: feathered across overlaps (default); nearest: each pixel from one tile",
    )
    group.add_argument(
        "--no-equalize",
        dest="equalize",
        action="store_false",
        default=None,
        help="keep each tile's brightness (default: per-tile gain and offset from the overlaps)",
    )
    group.add_argument(
        "--flatfield",
        action="store_true",
        default=None,
        help="divide every tile by the shading all tiles share, estimated from the tiles",
    )


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where the work runs."""
    parser.add_argument(
        "--cluster",
        default=None,
        help="where the work runs: local (default, sized from the machine), local-cuda (one "
        "worker per GPU), tcp://host:port (a running scheduler), kubernetes (a new DaskCluster "
        "from deployments/kubernetes) or kubernetes://NAME (an existing one)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="local workers (default: cores, max 8)"
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        default=None,
        help="a local cluster also serves Dask's dashboard, its address printed at the start "
        "(off by default: about 2 s of CPU per run on a small machine)",
    )


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """What to do with an existing store, how object storage is reached, and progress output."""
    parser.add_argument(
        "--storage-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="an fsspec storage option for an input or --out at a URL (s3://...), e.g. "
        "endpoint_url=http://127.0.0.1:9000, key=..., secret=..., anon=true, "
        "client_kwargs.region_name=us-east-1; repeatable, over the configuration's storage "
        "section. Credentials are never printed nor stored in the run store",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an earlier run, skipping finished stages"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run store (only a store mosaicflow made is ever replaced)",
    )
    parser.add_argument(
        "--break-lock",
        action="store_true",
        help="break the store's lock when the run holding it is gone (dead process or expired "
        "lease); a live run's lock is never broken",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> Any:
    """The run's configuration: YAML or defaults, then the options given, then the environment.

    Shared by the commands that run the pipeline; options a command does not have are unset.
    """
    from mosaicflow.config import Config
    from mosaicflow.config.values import storage_options_from_args

    def opt(name: str) -> Any:
        return getattr(args, name, None)

    if args.input and Path(args.input).suffix.lower() in (".yaml", ".yml"):
        config = Config.from_yaml(args.input)
    else:
        config = Config(input=args.input)
    overrides: dict[str, dict[str, Any]] = {
        "tiles": {
            "layout": args.layout,
            "pixel_size_nm": args.pixel_size,
            "grid": args.grid,
            "overlap": args.overlap,
            "crop_bottom": args.crop_bottom,
            "missing_tiles": args.missing_tiles,
        },
        "stitch": {
            "register": args.register,
            "blend": args.blend,
            "equalize": args.equalize,
            "flatfield": args.flatfield,
        },
        "store": {"chunk": opt("chunk")},
        "denoise": {"method": opt("denoise"), "sigma": opt("sigma")},
        "segment": {
            "method": "model" if opt("model") else None,
            "model": opt("model"),
            "polarity": opt("polarity"),
        },
        "measure": {"min_size": opt("min_size"), "edge_policy": opt("edge_policy")},
        "classify": {
            "model": opt("classifier"),
            "trust_pickle": opt("trust_classifier_pickle"),
        },
        "cluster": {
            "address": args.cluster,
            "n_workers": args.workers,
            "dashboard": getattr(args, "dashboard", None),
        },
        # --storage-option KEY=VALUE set over the configuration's own options
        "storage": {
            "options": storage_options_from_args(opt("storage_option"), config.storage.options)
            if opt("storage_option")
            else None
        },
    }
    for section, values in overrides.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            config = config.replace(section, **values)
    return config.with_env()


def run_pipeline(args: argparse.Namespace, console: Console, stop_after: str | None = None) -> Any:
    """Check everything, start the cluster, run the stages (up to ``stop_after``), close the
    cluster; returns the run store. Shared by the commands that run the pipeline."""
    from mosaicflow import cluster
    from mosaicflow.pipeline import Pipeline

    config = config_from_args(args)
    pipeline = Pipeline(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        console=None if args.quiet else console,
        break_lock=args.break_lock,
    )
    pipeline.preflight()  # bad input, files or store fail here, before any cluster starts
    client = cluster.connect(
        config.cluster.address,
        n_workers=config.cluster.n_workers,
        threads_per_worker=config.cluster.threads_per_worker,
        memory_limit=config.cluster.memory_limit,
        start_method=config.cluster.start_method,
        dashboard=config.cluster.dashboard,
    )
    try:
        return pipeline.run(client=client, stop_after=stop_after)
    finally:
        cluster.close(client)


def main(args: argparse.Namespace, console: Console) -> int:
    """Handle ``mosaicflow run``: the whole job, then a summary."""
    print_summary(run_pipeline(args, console), console)
    return 0


def print_summary(store: Any, console: Console) -> None:
    """The run's key figures from its ``report/summary.json``, and where its outputs are."""
    summary = store.read_report_json("summary.json")
    table = Table(title="mosaicflow run", show_header=True)
    table.add_column("")
    table.add_column("value", justify="right")
    parts = summary["particles"]
    table.add_row("particles found", str(parts["count"]))
    truth = summary.get("ground_truth")

    def rel(percent: float | None) -> str:
        return "" if percent is None else f" ({percent:+.1f} %)"

    if truth:
        table.add_row(
            "ground-truth particles",
            f"{truth['true_count']}{rel(truth.get('count_error_percent'))}",
        )
    if parts["median_nm"] is not None:
        table.add_row("median ECD (nm)", f"{parts['median_nm']:.1f}")
    if truth and truth.get("true_median_ecd_nm") is not None:
        table.add_row(
            "ground-truth median ECD (nm)",
            f"{truth['true_median_ecd_nm']:.1f}{rel(truth.get('median_ecd_error_percent'))}",
        )
    match = (truth or {}).get("matching")
    if match and match.get("f1_percent") is not None:
        table.add_row(
            "one-to-one with ground truth (IoU >= 0.5)",
            f"F1 {match['f1_percent']:.1f} % (precision {match['precision_percent']:.1f} %, "
            f"recall {match['recall_percent']:.1f} %)",
        )
        size_error = match.get("median_ecd_error_percent")
        table.add_row(
            "size error of matched particles",
            "no particle matched" if size_error is None else f"{size_error:+.1f} % median",
        )
    if parts.get("below_min_size"):
        table.add_row(
            "objects below the minimum size",
            f"{parts['below_min_size']} (< {parts['min_diameter_nm']:.3g} nm, not listed)",
        )
    if parts.get("at_edge"):
        policy = parts.get("edge_policy")
        table.add_row("particles at an edge", f"{parts['at_edge']} ({policy})")
    classes = summary.get("classes")
    for row in (classes or {}).get("fractions", []):
        text = f"{row['fraction']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]"
        if row.get("adjusted_fraction") is not None:
            text += f", adjusted {row['adjusted_fraction']:.1%}"
        table.add_row(f"class {row['class']}", f"{row['count']} ({text})")
    for name, s in summary["stages"].items():
        rate = f"{s['mpx_per_s']:.1f} Mpx/s" if s.get("mpx_per_s") else ""
        table.add_row(f"stage {name}", f"{s['seconds']:.2f} s {rate}".strip())
    console.print(table)
    console.print(f"Run store: {store.url}")
    console.print(f"Particle table: {store.table_path('particles')}")
    console.print(f"Report: {store.report_path('index.html')}")
