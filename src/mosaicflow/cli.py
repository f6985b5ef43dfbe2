"""Command line: ``mosaicflow run`` (the whole job), ``mosaicflow synth`` (test data) and
``mosaicflow classify-train`` (a particle classifier)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mosaicflow.config import DENOISE_METHODS
from mosaicflow.errors import MosaicflowError


def _run(args: argparse.Namespace, console: Console) -> int:
    from mosaicflow import cluster
    from mosaicflow.config import Config
    from mosaicflow.pipeline import Pipeline

    if args.input and Path(args.input).suffix.lower() in (".yaml", ".yml"):
        config = Config.from_yaml(args.input)
    else:
        config = Config(input=args.input)
    overrides: dict[str, dict[str, Any]] = {
        "store": {"chunk": args.chunk},
        "denoise": {"method": args.denoise, "sigma": args.sigma},
        "segment": {"method": "model" if args.model else None, "model": args.model},
        "classify": {"model": args.classifier},
        "cluster": {"address": args.cluster, "n_workers": args.workers},
    }
    for section, values in overrides.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            config = config.replace(section, **values)
    config = config.with_env()
    if config.input is not None:
        from mosaicflow.io.tiles import read_tileset

        read_tileset(config.input)  # fail on bad input before starting or reaching a cluster
    if config.segment.method == "model" and config.segment.model:
        from mosaicflow.segmentation import read_checkpoint_metadata

        read_checkpoint_metadata(config.segment.model)  # a bad checkpoint fails here too
    if config.classify.model:
        from mosaicflow.classify import read_header

        read_header(config.classify.model)  # so does a bad classifier file
    client = cluster.connect(
        config.cluster.address,
        n_workers=config.cluster.n_workers,
        threads_per_worker=config.cluster.threads_per_worker,
        memory_limit=config.cluster.memory_limit,
    )
    try:
        pipeline = Pipeline(
            config,
            args.out,
            client=client,
            resume=args.resume,
            overwrite=args.overwrite,
            console=None if args.quiet else console,
        )
        store = pipeline.run()
    finally:
        cluster.close(client)
    _print_summary(store, console)
    return 0


def _print_summary(store: Any, console: Console) -> None:
    import json

    with store._fs.open(store.url.rstrip("/") + "/report/summary.json") as fh:
        summary = json.load(fh)
    table = Table(title="mosaicflow run", show_header=True)
    table.add_column("")
    table.add_column("value", justify="right")
    parts = summary["particles"]
    table.add_row("particles found", str(parts["count"]))
    truth = summary.get("ground_truth")

    def rel(value: float | None) -> str:
        return "" if value is None else f" ({value:+.1%})"

    if truth:
        table.add_row("ground-truth particles", f"{truth['true_count']}{rel(truth['count_error'])}")
    if parts["median_nm"] is not None:
        table.add_row("median ECD (nm)", f"{parts['median_nm']:.1f}")
    if truth and truth.get("true_median_ecd_nm") is not None:
        table.add_row(
            "ground-truth median ECD (nm)",
            f"{truth['true_median_ecd_nm']:.1f}{rel(truth['median_ecd_error'])}",
        )
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
    base = store.url.rstrip("/")
    console.print(f"Run store: {base}")
    console.print(f"Particle table: {base}/tables/particles.parquet")
    console.print(f"Report: {base}/report/index.html")


def _synth(args: argparse.Namespace, console: Console) -> int:
    from mosaicflow.config import Config, SynthConfig
    from mosaicflow.pipeline import synthesize

    settings = SynthConfig(
        rows=args.rows,
        cols=args.cols,
        tile_height=args.tile_height,
        tile_width=args.tile_width,
        overlap=args.overlap,
        stage_error_px=args.stage_error,
        pixel_size_nm=args.pixel_size,
        snr=args.snr,
        bit_depth=args.bit_depth,
        seed=args.seed,
    )
    Config(synth=settings)  # validates the settings
    truth = synthesize(args.out, settings)
    console.print(f"Wrote a {args.rows}x{args.cols} tile grid with ground truth to {args.out}")
    console.print(
        f"{truth.n_particles} particles, mosaic {truth.mosaic_shape[1]}x{truth.mosaic_shape[0]} px"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mosaicflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run the whole job (default input: a synthetic Maps-like grid)"
    )
    run.add_argument(
        "input",
        nargs="?",
        help="acquisition folder or YAML config (default: built-in synthetic grid)",
    )
    run.add_argument("--out", required=True, help="run store path or URL (e.g. run.zarr)")
    run.add_argument(
        "--cluster", default=None, help="'local' (default) or a scheduler address tcp://host:port"
    )
    run.add_argument(
        "--workers", type=int, default=None, help="local workers (default: cores, max 8)"
    )
    run.add_argument(
        "--chunk", type=int, default=None, help="store chunk size in px (default 1024)"
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
        "--model",
        default=None,
        help="segment with this checkpoint (windowed U-Net/FPN inference) instead of Otsu",
    )
    run.add_argument(
        "--classifier",
        default=None,
        help="classify particles with this random forest (from 'mosaicflow classify-train')",
    )
    run.add_argument(
        "--resume", action="store_true", help="continue an earlier run, skipping finished stages"
    )
    run.add_argument("--overwrite", action="store_true", help="replace an existing run store")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    syn = sub.add_parser("synth", help="write a synthetic Maps-like tile grid with ground truth")
    syn.add_argument("out", help="output folder")
    syn.add_argument("--rows", type=int, default=4)
    syn.add_argument("--cols", type=int, default=5)
    syn.add_argument("--tile-height", type=int, default=900)
    syn.add_argument("--tile-width", type=int, default=1400)
    syn.add_argument("--overlap", type=float, default=0.10)
    syn.add_argument(
        "--stage-error", type=float, default=8.0, help="stage position error sigma, px"
    )
    syn.add_argument("--pixel-size", type=float, default=2.0, help="nm per pixel")
    syn.add_argument("--snr", type=float, default=20.0, help="mean particle signal / noise std")
    syn.add_argument("--bit-depth", type=int, choices=(8, 16), default=8)
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_synth)
    from mosaicflow import cli_classify, cli_synth_hrtem

    cli_synth_hrtem.add_arguments(syn)  # --mode hrtem; --mode sem goes back to _synth

    cli_classify.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        return int(args.func(args, console))
    except MosaicflowError as exc:
        console.print(f"[bold red]error:[/bold red] {type(exc).__name__}: {exc}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
