"""``run_bench``, the throughput benchmark behind ``mosaicflow bench``: the whole pipeline on a
synthetic scenario or a tile folder, measured per stage on a local cluster, against a naive
single-process baseline and the machine's physical ceilings, written as ``bench.json``,
``bench.md``, ``bench.png`` and a Dask performance report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from mosaicflow import cluster
from mosaicflow.bench import baseline, outputs, scenarios, work
from mosaicflow.bench.ceilings import machine_ceilings
from mosaicflow.bench.fresh import run_fresh
from mosaicflow.config import Config
from mosaicflow.config.values import redact_options
from mosaicflow.errors import ConfigError, StoreError
from mosaicflow.io.remote import is_url
from mosaicflow.io.tiles import TileSet, read_tileset

__all__ = ["run_bench"]

#: How the reported run is chosen among repeats.
SUMMARY = (
    "median run by whole-run wall time (the lower middle one for an even count); each run "
    "in a fresh interpreter, each followed by a run of the naive baseline"
)


def _median_index(values: list[float]) -> int:
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[(len(order) - 1) // 2]


def _say(console: Console | None, message: str) -> None:
    if console is not None:
        console.print(f"[bold]bench[/bold] {message}", soft_wrap=True)


def _check(
    out: str | os.PathLike[str],
    config: Config,
    scenario: str | None,
    data: str | os.PathLike[str] | None,
    repeat: int,
    workers: int | None,
) -> scenarios.Scenario | None:
    """Every option checked before anything is written."""
    if (scenario is None) == (config.input is None):
        raise ConfigError("give either --scenario NAME or --input PATH (exactly one of them)")
    if data is not None and scenario is None:
        raise ConfigError("--data is where a --scenario's tiles are cached; it needs --scenario")
    if repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {repeat}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if config.cluster.address != "local":
        raise ConfigError(
            f"cluster.address {config.cluster.address!r}: the benchmark measures the worker "
            "processes of a local cluster it starts; use 'local'"
        )
    if is_url(str(out)):
        raise ConfigError(f"--out {str(out)!r}: the benchmark folder must be a local path")
    if config.input is not None and not is_url(config.input):
        given = Path(config.input).expanduser().resolve()
        folder = given if given.is_dir() or not given.exists() else given.parent
        target = Path(out).expanduser().resolve()
        if target == folder or folder in target.parents:
            raise StoreError(
                f"--out {str(out)!r} lies in the input folder {str(folder)!r}: mosaicflow never "
                "writes into its input; choose an output outside it"
            )
    if scenario is None:
        return None
    chosen = scenarios.get(scenario)
    root = Path(data) if data is not None else Path(out) / "input"
    scenarios.check_folder(chosen, root)  # a foreign grid folder refused before --out is made
    return chosen


def run_bench(
    out: str | os.PathLike[str],
    *,
    config: Config | None = None,
    scenario: str | None = None,
    data: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    naive: bool = True,
    ceilings: bool = True,
    repeat: int = 1,
    console: Console | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark the whole pipeline and write the results into ``out``.

    Parameters
    ----------
    out : str or path-like
        The benchmark folder: created, or one an earlier benchmark made (a folder of other
        files is refused). Holds ``bench.json``, ``bench.md``, ``bench.png``,
        ``dask-report.html``, the run store ``run.zarr`` and, by default, the scenarios' tiles
        under ``input/``.
    config : Config, optional
        The run's configuration; its ``input`` is the tile folder when no ``scenario`` is given.
    scenario : str, optional
        A synthetic grid of :data:`SCENARIOS` (``maps-48``, ``maps-120``, ``maps-1200``),
        synthesised once, untimed, and reused.
    data : str or path-like, optional
        Where scenario grids are cached (default ``out/input``); each in a folder named after
        its scenario.
    workers : int, optional
        Local worker processes (default: the configuration's, else one per core, at most 8).
    naive : bool
        Also run the naive single-process baseline where the mosaic fits in memory.
    ceilings : bool
        Also measure the machine's ceilings (``bench.ceilings``, a few seconds) and give each
        stage its fraction of the ceiling that bounds it (``bench.work``).
    repeat : int
        Runs of each; the median run (by wall time) is reported, every run is listed.
    console : rich.console.Console, optional
        One line per phase; None is silent.
    progress : bool
        Also show the pipeline's per-stage progress bars on ``console``.

    Returns
    -------
    dict
        What ``bench.json`` holds: ``format``, ``machine`` (with ``ceilings``), ``scenario``,
        ``settings``, ``config``, ``stages`` (each with its ``ceiling``), ``run``, ``runs``,
        ``naive``, ``ratio``, ``files``.

    Raises
    ------
    MosaicflowError
        A bad option, an output folder the benchmark did not make, or a failed run.
    """
    config = config if config is not None else Config()
    chosen = _check(out, config, scenario, data, repeat, workers)
    # A tile folder's headers are read (and checked) before the benchmark folder is made.
    tileset = None if chosen is not None else _read_tileset(config)
    folder = outputs.prepare_out(out)
    synth_s = None
    if chosen is not None:
        root = Path(data) if data is not None else folder / "input"
        grid, synth_s = scenarios.grid_folder(chosen, root, console=console)
        config = config.replace("input", value=str(grid))
        _say(console, f"scenario {chosen.name}: {chosen.describe()}, tiles in {grid}")
    n_workers = workers or config.cluster.n_workers or cluster.default_workers()
    config = config.replace("cluster", n_workers=n_workers)
    store = folder / outputs.FILES["run_store"]
    if ceilings:
        _say(console, "measuring this machine's ceilings (memory, codec, disk, FLOP rate)")
        limits = machine_ceilings(
            folder,
            workers=n_workers,
            threads_per_worker=config.cluster.threads_per_worker,
            chunk=config.chunk_px,
            torch_conv=config.segment.method == "model",
        )
    else:
        limits = _skipped("--no-ceilings given")

    # Each repeat is a pair, run in turn: the pipeline in a fresh interpreter, then the naive
    # baseline in another, so that a machine whose speed drifts moves both alike.
    plan = _naive_plan(config, tileset, console) if naive else _skipped("--no-naive given")
    measured: list[dict[str, Any]] = []
    naive_runs: list[dict[str, Any]] = []
    for i in range(repeat):
        _say(
            console,
            f"run {i + 1}/{repeat}: {n_workers} local worker(s), chunk {config.chunk_px} px "
            f"-> {store}",
        )
        report = folder / f".dask-report-{i}.html"
        measured.append(
            run_fresh(
                config,
                store,
                n_workers=n_workers,
                report_path=report,
                result_path=folder / f".run-{i}.json",
                progress=progress and console is not None,
            )
        )
        r = measured[-1]["run"]
        _say(
            console,
            f"run {i + 1}/{repeat} done: {r['wall_s']:.2f} s wall ({r['pipeline_s']:.2f} s "
            f"pipeline), {r['mpx_per_s']:.2f} Mpx/s end to end",
        )
        if "plan" in plan:
            one = _naive_once(plan, i, repeat, console)
            if "failed" in one:
                plan = {"status": "failed", "reason": one["failed"], **plan["sizes"]}
            else:
                naive_runs.append(one)
    best = _median_index([m["run"]["wall_s"] for m in measured])
    for i in range(repeat):
        report = folder / f".dask-report-{i}.html"
        if i == best:
            report.replace(folder / outputs.FILES["dask_report"])
        else:
            report.unlink(missing_ok=True)
    chosen_run = measured[best]
    _attach_ceilings(chosen_run["stages"], limits, store, config, console)

    naive_result = _naive_result(plan, naive_runs)
    ratio = None
    if naive_result["status"] == "measured":
        total = naive_result["steps"]["total"]
        pairs = [
            round(m["run"]["wall_s"] / n["steps"]["total"], 3)
            for m, n in zip(measured, naive_runs, strict=True)
        ]
        ratio = {
            "wall": round(chosen_run["run"]["wall_s"] / total, 3),
            "pipeline": round(chosen_run["run"]["pipeline_s"] / total, 3),
            "pairs": pairs,
            "pairs_median": pairs[_median_index(pairs)],
        }
    cfg = config.to_dict()
    cfg["storage"]["options"] = redact_options(cfg["storage"]["options"])
    result: dict[str, Any] = {
        "format": outputs.FORMAT,
        "machine": {**outputs.machine_info(), "ceilings": limits},
        "scenario": _scenario_info(chosen, tileset, config, synth_s),
        "settings": {
            "workers": n_workers,
            "threads_per_worker": config.cluster.threads_per_worker,
            "chunk": config.chunk_px,
            "segmenter": config.segment.method
            + (f" ({config.segment.model})" if config.segment.model else ""),
            "repeat": repeat,
            "summary": SUMMARY,
            "naive": naive,
            "ceilings": ceilings,
        },
        "config": cfg,
        "stages": chosen_run["stages"],
        "run": {**chosen_run["run"], "repeat_index": best},
        "runs": [m["run"] for m in measured],
        "naive": naive_result,
        "ratio": ratio,
        "files": dict(outputs.FILES),
    }
    outputs.write_json(folder, result)
    outputs.write_markdown(folder, result)
    outputs.write_plot(folder, result)
    written = ", ".join(outputs.FILES[k] for k in ("json", "markdown", "plot", "dask_report"))
    _say(console, f"wrote {written} in {folder}")
    return result


def _scenario_info(
    chosen: scenarios.Scenario | None,
    tileset: TileSet | None,
    config: Config,
    synth_s: float | None,
) -> dict[str, Any]:
    """What was benchmarked: the scenario, or the tile folder's grid."""
    if chosen is not None:
        grid, tile, overlap = [chosen.rows, chosen.cols], chosen.tile_height, chosen.overlap
        tile_shape, description = [tile, chosen.tile_width], chosen.describe()
    else:
        assert tileset is not None
        grid, tile_shape, overlap = [tileset.rows, tileset.cols], list(tileset.tile_shape), None
        description = (
            f"{len(tileset.tiles)} tiles ({tileset.rows}x{tileset.cols}) of "
            f"{tile_shape[1]}x{tile_shape[0]} px from {config.input}"
        )
    return {
        "name": chosen.name if chosen else "input",
        "description": description,
        "grid": grid,
        "tile_shape": tile_shape,
        "overlap": overlap,
        "input": config.input,
        "synthesis_s": None if synth_s is None else round(synth_s, 3),
    }


def _attach_ceilings(
    stages: dict[str, dict[str, Any]],
    limits: dict[str, Any],
    store: Path,
    config: Config,
    console: Console | None,
) -> None:
    """Each stage's ``ceiling`` (None without measured ceilings). A run whose work cannot be
    modelled keeps its measurements: every stage then says why it has no fraction."""
    if limits["status"] != "measured":
        for figures in stages.values():
            figures["ceiling"] = None
        return
    try:
        workload = work.workload_from_store(store, config)
        found = work.stage_ceilings(stages, workload, limits["machine"])
        limits["workload"] = workload.legend()
    except Exception as exc:  # the measurements are worth more than the model of their work
        _say(console, f"[yellow]warning:[/yellow] stage ceilings not computed: {exc}")
        found = {name: work.not_modelled(f"not modelled: {exc}") for name in stages}
    for name, figures in stages.items():
        figures["ceiling"] = found[name]


def _skipped(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, **extra}


def _read_tileset(config: Config) -> TileSet:
    """The run's tile set, as the pipeline reads it (headers only)."""
    assert config.input is not None
    return read_tileset(
        config.input, **config.tiles.reader_options(), storage_options=config.storage.options
    )


def _naive_plan(config: Config, tileset: TileSet | None, console: Console | None) -> dict[str, Any]:
    """Whether the naive baseline runs here (the mosaic must fit in memory) and its plan
    (``plan``), or why it is skipped; ``sizes`` either way."""
    tileset = tileset or _read_tileset(config)
    decision = baseline.decide(tileset)
    sizes = {
        k: decision[k]
        for k in ("mosaic_shape", "mosaic_bytes", "estimate_bytes", "available_bytes")
    }
    if not decision["run"]:
        _say(console, f"naive baseline skipped: {decision['reason']}")
        return _skipped(decision["reason"], **sizes)
    return {
        "status": "planned",
        "plan": baseline.plan(tileset, config),
        "sizes": sizes,
        "mosaic_mib": decision["mosaic_bytes"] / 2**20,
    }


def _naive_once(
    plan: dict[str, Any], i: int, repeat: int, console: Console | None
) -> dict[str, Any]:
    """One run of the baseline in a fresh interpreter (``{"failed": why}`` if it failed)."""
    _say(
        console,
        f"naive baseline {i + 1}/{repeat}: one process, {plan['mosaic_mib']:.0f} MiB mosaic",
    )
    one = baseline.run_once(plan["plan"])
    if "failed" in one:
        _say(console, f"naive baseline failed: {one['failed']}")
    else:
        _say(console, f"naive baseline {i + 1}/{repeat} done: {one['steps']['total']:.2f} s")
    return one


def _naive_result(plan: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The baseline's entry of ``bench.json``: the median run by total time with every run's
    steps, or why it was skipped or failed."""
    if plan["status"] != "planned":
        return plan
    best = runs[_median_index([r["steps"]["total"] for r in runs])]
    return {
        "status": "measured",
        "reason": None,
        **plan["sizes"],
        **best,
        "sigma": plan["plan"]["sigma"],
        "min_diameter_px": plan["plan"]["min_diameter_px"],
        "runs": [r["steps"] for r in runs],
    }
