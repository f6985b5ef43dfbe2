"""``mosaicflow stitch``: read a tile set, register it and fuse it into the run store's mosaic.

The same stages as the first part of ``mosaicflow run`` (``tiles``, ``register``, ``mosaic``),
into a store that ``mosaicflow run INPUT --out PATH --resume`` continues with the same options.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from mosaicflow.cli.run import (
    add_cluster_options,
    add_stitch_options,
    add_store_options,
    add_tile_options,
    run_pipeline,
)
from mosaicflow.config import DEFAULT_CHUNK_PX


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``stitch`` subcommand to an ``add_subparsers()`` object."""
    parser = subparsers.add_parser(
        "stitch", help="register and fuse a tile set into an OME-Zarr mosaic (no segmentation)"
    )
    parser.add_argument(
        "input",
        nargs="?",
        help="acquisition folder, layout file or single image (default: built-in synthetic grid)",
    )
    parser.add_argument("--out", required=True, help="run store path or URL (e.g. mosaic.zarr)")
    add_tile_options(parser)
    add_stitch_options(parser)
    add_cluster_options(parser)
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help=f"store chunk size in px (default {DEFAULT_CHUNK_PX})",
    )
    add_store_options(parser)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace, console: Console) -> int:
    """Handle ``mosaicflow stitch``: the ``tiles``, ``register`` and ``mosaic`` stages."""
    print_summary(run_pipeline(args, console, stop_after="mosaic"), console)
    return 0


def print_summary(store: Any, console: Console) -> None:
    """Tiles, registration and fusion figures from the store's stage records."""
    stages = store.stages()
    tiles = store.read_table("tiles")
    register, mosaic = stages.get("register", {}), stages.get("mosaic", {})
    table = Table(title="mosaicflow stitch", show_header=True)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("tiles", str(len(tiles)))
    if register.get("registered"):
        moved = (
            (tiles["y_px"] - tiles["nominal_y_px"]) ** 2
            + (tiles["x_px"] - tiles["nominal_x_px"]) ** 2
        ) ** 0.5
        table.add_row(
            "overlapping pairs kept", f"{register.get('n_pairs_kept')} of {register.get('n_pairs')}"
        )
        table.add_row("largest tile residual", f"{register.get('max_residual_px', 0):.2f} px")
        table.add_row("largest correction of a stage position", f"{moved.max():.1f} px")
    else:
        table.add_row("registration", "off: tiles fused at their stage positions")
    if "gain_range" in mosaic:
        lo, hi = mosaic["gain_range"]
        table.add_row("tile gains (equalisation)", f"{lo:.3f} - {hi:.3f}")
    if "flatfield_range" in mosaic:
        lo, hi = mosaic["flatfield_range"]
        table.add_row("flat field", f"{lo:.3f} - {hi:.3f}")
    shape = mosaic.get("shape")
    if shape:
        table.add_row("mosaic", f"{shape[1]} x {shape[0]} px ({mosaic.get('blend')} blending)")
    for name in ("tiles", "register", "mosaic"):
        s = stages.get(name, {})
        if "seconds" in s:
            table.add_row(f"stage {name}", f"{s['seconds']:.2f} s")
    console.print(table)
    console.print(f"Mosaic (OME-Zarr): {store.url}")
    console.print(f"Tile positions: {store.table_path('tiles')}")
