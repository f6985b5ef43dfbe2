"""Command line: ``mosaicflow run`` (the whole job), ``mosaicflow stitch`` (registration and
fusion only), ``mosaicflow synth`` (test data), ``mosaicflow classify-train`` (a particle
classifier), ``mosaicflow bench`` (the throughput benchmark), ``mosaicflow train`` (an instance
segmentation model) and ``mosaicflow evaluate`` (a segmenter scored against masks or boxes).
One module per command; this one builds the parser and turns mosaicflow's errors into one red
line and exit status 2, and Ctrl-C into one line and exit status 130."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from mosaicflow.cli import bench, classify, evaluate, run, stitch, synth, train
from mosaicflow.errors import Interrupted, MosaicflowError


def build_parser() -> argparse.ArgumentParser:
    """The ``mosaicflow`` parser with one subcommand per module of this package."""
    parser = argparse.ArgumentParser(prog="mosaicflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    stitch.add_parser(sub)
    synth.add_parser(sub)
    classify.add_parser(sub)
    bench.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a mosaicflow error)."""
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        return int(args.func(args, console))
    except Interrupted as exc:
        console.print(f"[bold yellow]interrupted:[/bold yellow] {exc}", soft_wrap=True)
        return 130
    except KeyboardInterrupt:  # before any stage started: nothing was written
        console.print("[bold yellow]interrupted:[/bold yellow] stopped by the user", soft_wrap=True)
        return 130
    except MosaicflowError as exc:
        console.print(f"[bold red]error:[/bold red] {type(exc).__name__}: {exc}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
