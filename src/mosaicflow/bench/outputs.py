"""The benchmark's folder and what it writes there: ``bench.json``, ``bench.md`` (tables) and
``bench.png`` (per-stage wall time, mosaicflow against the naive baseline's steps)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from mosaicflow import __version__
from mosaicflow.errors import StoreError

#: The file that marks a folder as one ``mosaicflow bench`` made (and may write into again).
MARKER = ".mosaicflow-bench"
FORMAT = "mosaicflow-bench/1"
FILES = {
    "json": "bench.json",
    "markdown": "bench.md",
    "plot": "bench.png",
    "dask_report": "dask-report.html",
    "run_store": "run.zarr",
}


def prepare_out(out: str | os.PathLike[str]) -> Path:
    """The benchmark folder, created (or adopted when empty) and marked as the benchmark's.

    A folder that holds anything and no :data:`MARKER` is refused and left untouched: the
    benchmark writes only into a folder it made.

    Raises
    ------
    StoreError
        ``out`` is a file, or a folder of other files.
    """
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise StoreError(
            f"--out {str(out)!r} is a file, not a benchmark folder; choose another --out"
        )
    if path.is_dir() and not (path / MARKER).is_file():
        names = sorted(p.name for p in path.iterdir())
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise StoreError(
                f"--out {str(out)!r} is a folder that 'mosaicflow bench' did not make (it holds "
                f"{len(names)} entries: {shown}); nothing is written into or deleted from it: "
                "choose another --out"
            )
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():
        (path / MARKER).write_text(
            json.dumps({"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        )
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bytecode_info(package: Path | None = None) -> dict[str, Any]:
    """Whether the modules of ``package`` (default: mosaicflow's) have cached bytecode: without
    it (an editable install run with ``PYTHONDONTWRITEBYTECODE``), every process of a run, the
    workers included, compiles each module it imports from source, as an installed wheel never
    does."""
    import importlib.util

    package = package or Path(__file__).resolve().parents[1]
    sources = sorted(package.rglob("*.py"))
    missing = 0
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists() or cached.stat().st_mtime < source.stat().st_mtime:
            missing += 1
    return {
        "modules": len(sources),
        "without_cached_bytecode": missing,
        "dont_write_bytecode": bool(sys.dont_write_bytecode),
    }


def machine_info() -> dict[str, Any]:
    """Where the benchmark ran: cores, memory, CPU model, platform, date and versions."""
    import dask
    import distributed

    memory = psutil.virtual_memory()
    return {
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": int(memory.total),
        "memory_available_bytes": int(memory.available),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mosaicflow_version": __version__,
        "dask_version": dask.__version__,
        "distributed_version": distributed.__version__,
        "bytecode": bytecode_info(),
    }


def write_json(folder: Path, result: dict[str, Any]) -> Path:
    """``bench.json``: the whole result."""
    path = folder / FILES["json"]
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


# -- bench.md ----------------------------------------------------------------------------------
def _num(value: Any, fmt: str = ".2f", scale: float = 1.0) -> str:
    if value is None:
        return "n/a"
    return format(value / scale if scale != 1.0 else value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _fraction(ceiling: dict[str, Any] | None) -> str:
    """A stage's fraction of its ceiling and the ceiling's name, e.g. ``12.5 % codec``."""
    if not ceiling or ceiling.get("fraction") is None:
        return "n/a"
    return f"{100 * ceiling['fraction']:.1f} % {ceiling['bound']}"


def stage_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per stage: wall s, Mpx/s, CPU %, peak RSS per worker, MiB read and written,
    tasks, fraction of the ceiling (the console table shows the same rows)."""
    rows = []
    mib = 2**20
    for name, s in result["stages"].items():
        util = s.get("cpu_utilisation")
        rows.append(
            [
                name,
                _num(s.get("seconds")),
                _num(s.get("mpx_per_s"), ".1f"),
                "n/a" if util is None else f"{100 * util:.0f}",
                _num(s.get("peak_rss_mib", {}).get("max"), ".0f"),
                _num(s.get("read_bytes"), ".1f", mib),
                _num(s.get("write_bytes"), ".1f", mib),
                _num(s.get("tasks"), "d"),
                _fraction(s.get("ceiling")),
            ]
        )
    return rows


STAGE_HEADER = [
    "stage",
    "wall s",
    "Mpx/s",
    "CPU %",
    "peak RSS/worker MiB",
    "read MiB",
    "written MiB",
    "tasks",
    "of ceiling",
]


def _bytecode_line(found: dict[str, Any] | None) -> list[str]:
    """A line for bench.md when mosaicflow's modules were compiled at each import."""
    if not found or not found["without_cached_bytecode"]:
        return []
    return [
        f"- Python bytecode: {found['without_cached_bytecode']} of {found['modules']} mosaicflow "
        "modules had none cached, so each process compiled them as it imported them (an "
        "installed wheel has it; `python -m compileall` of the package caches it)"
    ]


def write_markdown(folder: Path, result: dict[str, Any]) -> Path:
    """``bench.md``: the machine, the configuration, per-stage and whole-run tables, the naive
    baseline and the ratio."""
    m, run, sc = result["machine"], result["run"], result["scenario"]
    settings = result["settings"]
    gib = 2**30
    lines = [
        f"# mosaicflow bench: {sc['name']}",
        "",
        f"- input: {sc['description']}",
        f"- mosaic: {run['mosaic_shape'][0]} x {run['mosaic_shape'][1]} px "
        f"({run['mosaic_mpx']:.1f} Mpx)",
        f"- machine: {m['cpu_model']}, {m['cores_logical']} cores "
        f"({m['cores_usable']} usable), {m['memory_bytes'] / gib:.1f} GiB; {m['platform']}",
        f"- mosaicflow {m['mosaicflow_version']}, dask {m['dask_version']}, "
        f"distributed {m['distributed_version']}, Python {m['python']}; {m['date']}",
        *_bytecode_line(m.get("bytecode")),
        f"- cluster: {settings['workers']} local worker process(es) x "
        f"{settings['threads_per_worker']} thread(s), chunk {settings['chunk']} px, segmenter "
        f"{settings['segmenter']}",
        f"- repeats: {settings['repeat']}; reported: the {settings['summary']}",
        "",
        "## Stages",
        "",
        *_table(STAGE_HEADER, stage_rows(result)),
        "",
        "CPU % = busy CPU seconds of the worker processes / (stage wall x worker threads); "
        f"memory, CPU and bytes (read_chars / write_chars) sampled every "
        f"{run['sample_interval_s']:g} s; tasks counted by their start time.",
        "",
        "## Whole run",
        "",
        *_table(
            ["", "value"],
            [
                ["wall s (cluster start + pipeline + cluster close)", _num(run["wall_s"])],
                ["benchmark instruments s (not in the wall)", _num(run.get("instrumentation_s"))],
                ["cluster start s", _num(run["cluster_start_s"])],
                ["pipeline s", _num(run["pipeline_s"])],
                ["Mpx/s end to end", _num(run["mpx_per_s"], ".2f")],
                ["peak worker RSS MiB", _num(run["peak_worker_rss_mib"], ".0f")],
                ["CPU %", _num(run["cpu_utilisation"] and 100 * run["cpu_utilisation"], ".0f")],
                ["read MiB", _num(run["read_bytes"], ".1f", 2**20)],
                ["written MiB", _num(run["write_bytes"], ".1f", 2**20)],
                ["tasks", str(run["tasks"])],
                ["particles", str(run["n_particles"])],
            ],
        ),
        "",
        "## Naive single-process baseline",
        "",
        *naive_lines(result),
        "",
        "## Ceilings",
        "",
        *ceiling_lines(result),
    ]
    if len(result.get("runs", [])) > 1:
        lines += [
            "",
            "## Repeats",
            "",
            *_table(
                ["run", "wall s", "pipeline s", "Mpx/s"],
                [
                    [str(i + 1), _num(r["wall_s"]), _num(r["pipeline_s"]), _num(r["mpx_per_s"])]
                    for i, r in enumerate(result["runs"])
                ],
            ),
        ]
    path = folder / FILES["markdown"]
    path.write_text("\n".join(lines) + "\n")
    return path


def naive_lines(result: dict[str, Any]) -> list[str]:
    """The baseline's section of ``bench.md``: its steps, particle count, memory and the
    ratio, or why it did not run."""
    naive = result["naive"]
    if naive["status"] != "measured":
        return [f"Not run: {naive['reason']}"]
    steps = naive["steps"]
    rows = [[name, _num(seconds)] for name, seconds in steps.items()]
    ratio = result["ratio"]
    return [
        "One process holding the whole mosaic: tiles (tifffile) pasted at their nominal origins, "
        f"scipy.ndimage.gaussian_filter (sigma {naive['sigma']:g}), "
        "skimage.filters.threshold_otsu, scipy.ndimage.label, "
        f"skimage.measure.regionprops_table ({len(naive['properties'])} properties).",
        "",
        *_table(["step", "s"], rows),
        "",
        f"- objects {naive['n_objects']}, particles (>= {naive['min_diameter_px']:g} px across) "
        f"{naive['n_particles']}; mosaicflow listed {result['run']['n_particles']}",
        f"- peak RSS {naive['peak_rss_bytes'] / 2**20:.0f} MiB (estimated "
        f"{naive['estimate_bytes'] / 2**20:.0f} MiB before running)",
        f"- ratio mosaicflow wall / naive wall: **{ratio['wall']:.2f}** (whole run, cluster start "
        f"included: {result['run']['wall_s']:.2f} s / {steps['total']:.2f} s); pipeline only: "
        f"{ratio['pipeline']:.2f}",
        *(
            [
                f"- each pair, a run then a baseline run, each in a fresh interpreter: "
                f"{', '.join(f'{p:.2f}' for p in ratio['pairs'])}; median "
                f"**{ratio['pairs_median']:.2f}**"
            ]
            if len(ratio["pairs"]) > 1
            else []
        ),
    ]


def ceiling_lines(result: dict[str, Any]) -> list[str]:
    """The ceilings section of ``bench.md``: the measured rates (one core and the machine),
    each stage's bound, time at the ceiling and fraction, and the model of its work."""
    limits = result["machine"].get("ceilings") or {"status": "skipped", "reason": "not measured"}
    if limits["status"] != "measured":
        return [f"Not measured: {limits['reason']}"]
    one, all_, cores = limits["per_core"], limits["machine"], limits["cores"]
    method = limits["method"]
    rows = [
        [
            "memory GB/s (read + written)",
            _num(one["memory_gbps"]["used"], ".1f"),
            _num(all_["memory_gbps"]["used"], ".1f"),
        ],
    ]
    codec = one["codec"]
    for kind, k in codec["kinds"].items():
        scaled = all_["codec"]["kinds"][kind]
        rows.append(
            [
                f"codec {kind} ({k['dtype']}, ratio {k['ratio']:.3g}) encode / decode MB/s",
                f"{k['encode_mbps']:.0f} / {k['decode_mbps']:.0f}",
                f"{scaled['encode_mbps']:.0f} / {scaled['decode_mbps']:.0f}",
            ]
        )
    disk = one["disk"]
    rows.append(
        [
            f"disk write (fsync) / read{' (cold)' if disk['read_cold'] else ''} MB/s",
            f"{disk['write_mbps']:.0f} / {disk['read_mbps']:.0f}",
            "same (one device)",
        ]
    )
    for key, label in (("matmul_f32", "float32"), ("matmul_f64", "float64")):
        rows.append(
            [
                f"{label} matmul GFLOP/s",
                _num(one["gflops"][key], ".1f"),
                _num(all_["gflops"][key], ".1f"),
            ]
        )
    conv = one["gflops"].get("conv2d_f32")
    rows.append(
        [
            "torch conv2d float32 GFLOP/s",
            _num(conv, ".1f"),
            _num(all_["gflops"].get("conv2d_f32"), ".1f"),
        ]
        if conv is not None
        else ["torch conv2d float32 GFLOP/s", one["gflops"].get("conv2d_note") or "n/a", ""]
    )
    stages = []
    models = []
    for name, s in result["stages"].items():
        c = s.get("ceiling") or {}
        by = ", ".join(f"{k} {v:.3g}" for k, v in (c.get("seconds_by_bound") or {}).items())
        stages.append(
            [
                name,
                c.get("bound") or "n/a",
                _num(c.get("seconds_at_ceiling"), ".3g"),
                _num(s.get("seconds")),
                _fraction(c),
                by or "n/a",
            ]
        )
        models.append(f"- **{name}**: {c.get('model') or 'n/a'}")
    how = (
        f"Measured on one core in {limits['seconds']:.2f} s: memory, NumPy copy and add of "
        f"{method['memory_array_mib']} MiB arrays; codec, {codec['codec']} (Zarr v3's default, "
        f"the run store's) on {codec['chunk_px']} x {codec['chunk_px']} px chunks written to "
        f"and read from memory; disk, a {disk['file_mib']} MiB file in the benchmark folder "
        "written with fsync and read after it is dropped from the page cache; FLOPs, "
        f"{method['matmul_n']} x {method['matmul_n']} matrix products on one BLAS thread and "
        f"torch conv2d ({method['conv2d']}). {limits['scaling']}; here {cores} core(s). "
        f"{limits['units']}."
    )
    load = limits.get("workload") or {}
    legend = ", ".join(f"{k} = {v:,}" for k, v in load.items() if isinstance(v, int))
    return [
        how,
        "",
        *_table(["ceiling", "one core", f"machine ({cores} cores)"], rows),
        "",
        "Each stage's minimum work (below) at each ceiling alone; the bound is the slowest of "
        "them, fraction = seconds at the bound / wall seconds (1 = at the ceiling). Stored "
        "data that the page cache still holds is read faster than the disk figure, so a "
        "disk-bound stage can exceed 1.",
        "",
        *_table(["stage", "bound", "s at ceiling", "wall s", "fraction", "s per ceiling"], stages),
        "",
        "Work models (P: mosaic pixels, T: acquired tile pixels, S: strip pixels of all "
        "registered pairs; b_t, b_m, b_d: bytes per tile, mosaic and denoised pixel; pyr(X): "
        "every stored level of X encoded, every level but the last decoded to compute the "
        "next; store reads and writes also count their compressed bytes against the disk"
        + (f"; here {legend}" if legend else "")
        + "):",
        "",
        *models,
    ]


# -- bench.png ---------------------------------------------------------------------------------
def write_plot(folder: Path, result: dict[str, Any]) -> Path:
    """``bench.png``: wall time per stage, and mosaicflow's run against the naive baseline's
    steps as stacked bars (Matplotlib, Agg)."""
    from matplotlib.figure import Figure

    stages = result["stages"]
    names = list(stages)
    seconds = [stages[n].get("seconds") or 0.0 for n in names]
    fig = Figure(figsize=(11, 5.5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1])
    bars = left.barh(names[::-1], seconds[::-1], color="#4363d8")
    for bar, name in zip(bars, names[::-1], strict=True):
        rate = stages[name].get("mpx_per_s")
        if rate:
            left.annotate(
                f" {rate:.1f} Mpx/s",
                (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                va="center",
                fontsize=8,
            )
    left.set_xlabel("wall time (s)")
    left.set_title("mosaicflow, per stage")
    left.margins(x=0.25)
    _stacked(right, result)
    fig.suptitle(
        f"mosaicflow bench {result['scenario']['name']}: {result['run']['mosaic_mpx']:.1f} Mpx, "
        f"{result['settings']['workers']} worker(s)"
    )
    path = folder / FILES["plot"]
    fig.savefig(path, format="png", dpi=100)
    return path


def _stacked(ax: Any, result: dict[str, Any]) -> None:
    from matplotlib import colormaps

    palettes = ([colormaps["tab20"](i) for i in range(0, 20, 2)], colormaps["Set2"].colors)
    run = result["run"]
    parts = [(n, s.get("seconds") or 0.0) for n, s in result["stages"].items()]
    overhead = max(0.0, run["wall_s"] - sum(v for _, v in parts))
    parts.append(("cluster, other", overhead))
    bars = [("mosaicflow", parts)]
    naive = result["naive"]
    if naive["status"] == "measured":
        steps = [(k, v) for k, v in naive["steps"].items() if k != "total"]
        bars.append(("naive", steps))
    widest = max(sum(v for _, v in items) for _, items in bars) or 1.0
    for y, (label, items) in enumerate(bars):
        left = 0.0
        colours = palettes[y]
        for i, (name, value) in enumerate(items):
            ax.barh(
                y,
                value,
                left=left,
                color=colours[i % len(colours)],
                edgecolor="white",
                label=f"{label}: {name}",
            )
            if value > 0.08 * widest:  # named inside the bar where the name fits
                ax.text(
                    left + value / 2, y, name, ha="center", va="center", fontsize=7, rotation=90
                )
            left += value
        ax.annotate(f" {left:.1f} s", (left, y), va="center", fontsize=9)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.margins(x=0.15)
    if naive["status"] == "measured":
        ax.set_title(f"whole run vs naive: ratio {result['ratio']['wall']:.2f}")
    else:
        ax.set_title("naive baseline not run", fontsize=10)
        ax.text(
            0.5,
            0.15,
            _wrap(naive["reason"], 60),
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=7,
        )


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
