"""`mosaicflow bench` from the command line: a tiny scenario through a real LocalCluster writes
every file with the documented schema (never asserting timings), the cached grid is reused, and
bad options or folders mosaicflow did not make are refused before anything is written."""

from __future__ import annotations

import json
import os

import pytest

from mosaicflow.bench.fresh import BenchRunError, run_fresh
from mosaicflow.cli import main
from mosaicflow.config import Config
from mosaicflow.pipeline import STAGES

STAGE_KEYS = {
    "seconds",
    "mpx_per_s",
    "started_at",
    "ended_at",
    "cpu_seconds",
    "cpu_utilisation",
    "peak_rss_mib",
    "read_bytes",
    "write_bytes",
    "driver_cpu_seconds",
    "tasks",
    "task_seconds",
    "erred",
    "info",
    "ceiling",
}
CEILING_KEYS = {"bound", "seconds_at_ceiling", "fraction", "seconds_by_bound", "work", "model"}
RUN_KEYS = {
    "wall_s",
    "cluster_start_s",
    "pipeline_s",
    "cluster_close_s",
    "mosaic_shape",
    "mosaic_mpx",
    "mpx_per_s",
    "peak_worker_rss_mib",
    "peak_rss_per_worker_mib",
    "cpu_utilisation",
    "read_bytes",
    "write_bytes",
    "tasks",
    "tasks_between_stages",
    "n_particles",
    "n_workers",
}
MACHINE_KEYS = {"cores_logical", "memory_bytes", "cpu_model", "platform", "date"}
NAIVE_STEPS = ["place", "gaussian", "otsu", "label", "table", "total"]


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _bench(argv, capsys):
    code = main(["bench", *argv])
    return code, " ".join(capsys.readouterr().out.split())


@pytest.mark.cluster
def test_tiny_scenario_writes_every_file_with_the_schema(tmp_path, capsys):
    out = tmp_path / "bench"
    config = tmp_path / "bench.yaml"
    config.write_text("denoise:\n  sigma: 1.5\n")
    argv = ["--scenario", "tiny", "--out", str(out), "--workers", "1", "--quiet"]
    argv += ["--config", str(config)]
    code, printed = _bench(argv, capsys)
    assert code == 0, printed
    assert "ratio mosaicflow / naive wall" in printed
    for name in ("bench.json", "bench.md", "bench.png", "dask-report.html"):
        assert (out / name).is_file(), name
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<html" in (out / "dask-report.html").read_text()[:2000].lower()
    assert not list(out.glob(".dask-report-*"))  # each repeat's report: only the chosen one kept
    result = json.loads((out / "bench.json").read_text())
    assert set(result) == {
        "format",
        "machine",
        "scenario",
        "settings",
        "config",
        "stages",
        "run",
        "runs",
        "naive",
        "ratio",
        "files",
    }
    assert result["format"] == "mosaicflow-bench/1"
    assert MACHINE_KEYS <= set(result["machine"])
    assert {"modules", "without_cached_bytecode"} <= set(result["machine"]["bytecode"])
    assert result["config"]["denoise"]["sigma"] == 1.5  # from --config
    limits = result["machine"]["ceilings"]
    assert limits["status"] == "measured" and limits["cores"] == 1
    assert {"memory_gbps", "codec", "disk", "gflops"} <= set(limits["machine"])
    assert result["scenario"]["name"] == "tiny" and result["scenario"]["synthesis_s"] is not None
    assert result["settings"]["workers"] == 1
    assert list(result["stages"]) == list(STAGES)
    for name, stage in result["stages"].items():
        assert STAGE_KEYS <= set(stage), name
        assert set(stage["peak_rss_mib"]) == {"max", "per_worker"}
        assert len(stage["peak_rss_mib"]["per_worker"]) == 1  # one worker process
        assert set(stage["ceiling"]) == CEILING_KEYS, name
        if name == "denoised":  # written by the mosaic stage, whose model counts it
            assert stage["info"]["written_by"] == "mosaic"
            assert stage["ceiling"]["fraction"] is None
            assert "mosaic stage" in stage["ceiling"]["model"]
        elif name != "report":  # every other stage of the Otsu path has a model of its work
            assert stage["ceiling"]["bound"] in ("memory", "codec", "disk", "flops"), name
            assert stage["ceiling"]["fraction"] > 0, name
    run = result["run"]
    assert RUN_KEYS <= set(run)
    assert run["mosaic_shape"] == result["stages"]["mosaic"]["info"]["shape"]
    assert run["peak_worker_rss_mib"] > 0 and run["n_workers"] == 1
    # every task of the stream is counted once: in a stage window or between stages
    counted = sum(s["tasks"] for s in result["stages"].values())
    assert counted + run["tasks_between_stages"] == run["tasks"] > 0
    naive = result["naive"]
    assert naive["status"] == "measured"
    assert list(naive["steps"]) == NAIVE_STEPS
    assert naive["n_particles"] > 0 and naive["peak_rss_bytes"] > 0
    assert "feret_diameter_max" in naive["properties"] and "moments_hu" in naive["properties"]
    assert set(result["ratio"]) == {"wall", "pipeline", "pairs", "pairs_median"}
    assert result["ratio"]["pairs"] == [result["ratio"]["pairs_median"]]
    md = (out / "bench.md").read_text()
    sections = ("## Stages", "## Whole run", "## Naive single-process baseline", "## Ceilings")
    for section in sections:
        assert section in md
    assert all(f"| {name} |" in md for name in STAGES)

    # Run again into the same folder: the grid is reused, the store replaced; no baseline,
    # no ceilings.
    code, printed = _bench([*argv, "--no-naive", "--no-ceilings"], capsys)
    assert code == 0, printed
    again = json.loads((out / "bench.json").read_text())
    assert again["scenario"]["synthesis_s"] is None
    assert again["naive"] == {"status": "skipped", "reason": "--no-naive given"}
    assert again["ratio"] is None
    assert again["machine"]["ceilings"] == {"status": "skipped", "reason": "--no-ceilings given"}
    assert all(stage["ceiling"] is None for stage in again["stages"].values())


@pytest.mark.cluster
def test_repeats_are_pairs_of_fresh_runs(tmp_path, capsys):
    # Each repeat: the pipeline in its own interpreter, then the baseline; each pair's ratio.
    out = tmp_path / "bench"
    argv = ["--scenario", "tiny", "--out", str(out), "--workers", "1", "--quiet"]
    code, printed = _bench([*argv, "--repeat", "2", "--no-ceilings"], capsys)
    assert code == 0, printed
    result = json.loads((out / "bench.json").read_text())
    runs, naive = result["runs"], result["naive"]["runs"]
    pids = {run["driver_pid"] for run in runs}
    assert len(pids) == 2 and os.getpid() not in pids
    assert result["ratio"]["pairs"] == [
        round(run["wall_s"] / steps["total"], 3) for run, steps in zip(runs, naive, strict=True)
    ]
    assert min(result["ratio"]["pairs"]) <= result["ratio"]["pairs_median"]
    assert result["ratio"]["pairs_median"] <= max(result["ratio"]["pairs"])
    assert "ratio of each pair" in printed
    assert "each pair, a run then a baseline run" in (out / "bench.md").read_text()
    assert not list(out.glob(".run-*")) and not list(out.glob(".dask-report-*"))


def test_a_failed_fresh_run_raises_the_pipelines_message(tmp_path):
    config = Config().replace("input", value=str(tmp_path / "no-such-grid"))
    with pytest.raises(BenchRunError, match="no-such-grid"):
        run_fresh(
            config,
            tmp_path / "run.zarr",
            n_workers=1,
            report_path=tmp_path / "r.html",
            result_path=tmp_path / "r.json",
        )
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "run.zarr").exists()


def test_a_config_naming_an_input_is_refused_with_a_scenario(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(f"input: {tmp_path}\n")
    out = tmp_path / "bench"
    argv = ["--scenario", "tiny", "--out", str(out), "--config", str(config)]
    code, printed = _bench(argv, capsys)
    assert code == 2 and "sets 'input'" in printed
    assert not out.exists()


def test_unknown_scenario_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "bench"
    code, printed = _bench(["--scenario", "maps-7", "--out", str(out)], capsys)
    assert code == 2
    assert "'maps-7' is not a benchmark scenario" in printed and "maps-48" in printed
    assert "tiny" not in printed  # the test suite's scenario is not advertised
    assert not out.exists()


def test_help_lists_the_public_scenarios(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("maps-48", "maps-120", "maps-1200", "10% overlap"))
    assert "tiny" not in printed


def test_scenario_and_input_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--scenario", "tiny", "--input", str(tmp_path), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_folder_of_user_files_is_never_written_into(tmp_path, capsys):
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "important.txt").write_text("results of three years\n")
    (user / "sub" / "thesis.tex").write_text("\\documentclass{book}\n")
    before = _snapshot(user)
    code, printed = _bench(["--scenario", "tiny", "--out", str(user), "--quiet"], capsys)
    assert code == 2
    assert "did not make" in printed and "important.txt" in printed
    assert _snapshot(user) == before


def test_a_foreign_data_folder_is_left_alone(tmp_path, capsys):
    data = tmp_path / "cache"
    (data / "tiny").mkdir(parents=True)
    (data / "tiny" / "tile.tif").write_bytes(b"not ours")
    before = _snapshot(data)
    out = tmp_path / "bench"
    argv = ["--scenario", "tiny", "--data", str(data), "--out", str(out), "--quiet"]
    code, printed = _bench(argv, capsys)
    assert code == 2 and "was not written by 'mosaicflow bench'" in printed
    assert _snapshot(data) == before
    assert not out.exists()


def test_a_missing_input_fails_before_the_folder_is_made(tmp_path, capsys):
    out = tmp_path / "bench"
    code, printed = _bench(["--input", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert code == 2 and "does not exist" in printed
    assert not out.exists()


def test_the_input_folder_is_never_the_output(small_grid, tmp_path, capsys):
    before = _snapshot(small_grid.folder)
    out = small_grid.folder / "bench"
    code, printed = _bench(["--input", str(small_grid.folder), "--out", str(out)], capsys)
    assert code == 2 and "never writes into its input" in printed
    assert _snapshot(small_grid.folder) == before
