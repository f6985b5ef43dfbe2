"""``mosaicflow bench``: the throughput benchmark, per stage and end to end, on a synthetic
scenario or a tile folder, against a naive single-process baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mosaicflow.cli.run import add_stitch_options, add_tile_options, config_from_args
from mosaicflow.config import DEFAULT_CHUNK_PX, MODEL_CHUNK_PX


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to an ``add_subparsers()`` object."""
    from mosaicflow.bench.scenarios import PUBLIC, SCENARIOS

    # argparse expands % in help texts
    listed = "; ".join(f"{n}: {SCENARIOS[n].describe()}" for n in PUBLIC).replace("%", "%%")
    p = subparsers.add_parser(
        "bench",
        help="benchmark the pipeline per stage (Mpx/s, CPU, memory, I/O, tasks) against a naive "
        "single-process baseline",
        description="Runs the whole pipeline on a fresh local cluster and writes bench.json, "
        "bench.md, bench.png and dask-report.html into --out, with each stage's fraction of "
        "this machine's physical ceilings.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--scenario",
        metavar="NAME",
        help=f"a synthetic Maps-like grid, synthesised once (not timed) and reused: {listed}",
    )
    source.add_argument(
        "--input",
        metavar="PATH",
        help="a tile folder (or YAML configuration) as 'mosaicflow run' accepts it",
    )
    p.add_argument(
        "--config",
        metavar="YAML",
        default=None,
        help="a YAML configuration of the run's sections (e.g. stitch.device: gpu, cluster, "
        "denoise); with --scenario it must not set 'input'; the options below override it",
    )
    p.add_argument(
        "--out",
        required=True,
        help="benchmark folder (created; only a folder an earlier 'mosaicflow bench' made is "
        "written into again)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="where scenario grids are cached, one folder per scenario (default: OUT/input)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="local workers (default: cores, max 8)"
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help=f"store chunk size in px (default {DEFAULT_CHUNK_PX}; {MODEL_CHUNK_PX} with --model)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="segment with this instance model instead of Otsu: 'default' (the shipped one) or "
        "a checkpoint (windowed inference)",
    )
    p.add_argument(
        "--naive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the naive single-process baseline where the mosaic fits in memory "
        "(default: yes)",
    )
    p.add_argument(
        "--ceilings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure this machine's ceilings (memory bandwidth, the store's codec, "
        "disk, FLOP rate; a few seconds) and report each stage's fraction of the one that "
        "bounds it (default: yes)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="pairs of runs, each pipeline run followed by a naive baseline run, each in a fresh "
        "interpreter; the median run by wall time is reported, all are listed, with each "
        "pair's ratio (default 1)",
    )
    add_tile_options(p)
    add_stitch_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.set_defaults(func=main, cluster=None)
    return p


def main(args: argparse.Namespace, console: Console) -> int:
    """Handle ``mosaicflow bench``: the measurements, then the summary table."""
    from mosaicflow.bench import run_bench

    config = bench_config(args)
    result = run_bench(
        args.out,
        config=config,
        scenario=args.scenario,
        data=args.data,
        workers=args.workers,
        naive=args.naive,
        ceilings=args.ceilings,
        repeat=args.repeat,
        console=None if args.quiet else console,
    )
    print_summary(result, console)
    return 0


def bench_config(args: argparse.Namespace) -> Any:
    """The benchmark's configuration: ``--config`` (or a YAML ``--input``), then the options
    given, then the environment (``MOSAICFLOW_SECTION__KEY``).

    Raises
    ------
    ConfigError
        ``--config`` together with a YAML ``--input``, or a ``--config`` that names an input
        while a ``--scenario`` is given.
    """
    from mosaicflow.config import Config
    from mosaicflow.errors import ConfigError

    if args.config is None:
        return config_from_args(args)
    if args.input and Path(args.input).suffix.lower() in (".yaml", ".yml"):
        raise ConfigError(
            f"--config {args.config!r} and the YAML --input {args.input!r}: give the "
            "configuration once"
        )
    if Config.from_yaml(args.config).input is not None:
        what = "--scenario" if args.scenario else "--input"
        raise ConfigError(
            f"--config {args.config!r} sets 'input'; the benchmark takes its input from "
            f"{what}: leave 'input' out of the file"
        )
    config = config_from_args(argparse.Namespace(**{**vars(args), "input": args.config}))
    return config.replace("input", value=args.input)


def print_summary(result: dict[str, Any], console: Console) -> None:
    """The per-stage table, the whole run and the ratio to the naive baseline."""
    from mosaicflow.bench.outputs import FILES, STAGE_HEADER, stage_rows

    run = result["run"]
    table = Table(
        title=f"mosaicflow bench {result['scenario']['name']}: {run['mosaic_mpx']:.1f} Mpx, "
        f"{result['settings']['workers']} worker(s)"
    )
    for i, name in enumerate(STAGE_HEADER):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in stage_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(
        f"whole run: {run['wall_s']:.2f} s wall (cluster start {run['cluster_start_s']:.2f} s), "
        f"{run['mpx_per_s']:.2f} Mpx/s end to end, peak worker RSS "
        f"{run['peak_worker_rss_mib']:.0f} MiB, {run['tasks']} tasks",
        soft_wrap=True,
    )
    naive = result["naive"]
    if naive["status"] == "measured":
        console.print(
            f"naive baseline: {naive['steps']['total']:.2f} s, peak RSS "
            f"{naive['peak_rss_bytes'] / 2**20:.0f} MiB, {naive['n_particles']} particles; "
            f"ratio mosaicflow / naive wall {result['ratio']['wall']:.2f}",
            soft_wrap=True,
        )
        pairs = result["ratio"]["pairs"]
        if len(pairs) > 1:
            console.print(
                f"ratio of each pair (run, then baseline): "
                f"{', '.join(f'{p:.2f}' for p in pairs)}; median "
                f"{result['ratio']['pairs_median']:.2f}",
                soft_wrap=True,
            )
    else:
        console.print(f"naive baseline {naive['status']}: {naive['reason']}", soft_wrap=True)
    folder = result["run"]["store"].rsplit("/", 1)[0]
    console.print(
        f"Results: {folder}/{FILES['json']}, {FILES['markdown']}, {FILES['plot']}, "
        f"{FILES['dask_report']}",
        soft_wrap=True,
    )
