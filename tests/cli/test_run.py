"""`mosaicflow run` from the command line: against a real scheduler, bad input and bad output
refused before any cluster starts, and nothing it did not make ever written or deleted."""

from __future__ import annotations

import pandas as pd
import pytest

from mosaicflow.cli import main
from mosaicflow.io.store import RunStore


@pytest.mark.cluster
def test_cli_run_on_scheduler_address(small_grid, client, tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    address = client.scheduler.address
    code = main(
        [
            "run",
            str(small_grid.folder),
            "--out",
            str(out),
            "--cluster",
            address,
            "--chunk",
            "256",
            "--denoise",
            "nl_means",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "particles found" in printed and "Mpx/s" in printed
    table = pd.read_parquet(out / "tables" / "particles.parquet")
    truth = pd.read_csv(small_grid.particles_csv)
    assert abs(len(table) - len(truth)) <= max(1, 0.1 * len(truth))
    denoised = RunStore(str(out), mode="r").meta["stages"]["denoised"]
    assert denoised["method"] == "nl_means" and denoised["noise_sigma"] > 0


def test_cli_bad_input_fails_before_any_cluster(tmp_path, capsys):
    code = main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o.zarr"), "--quiet"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().out
    assert not (tmp_path / "o.zarr").exists()


def test_cli_unreachable_scheduler(small_grid, tmp_path, capsys, monkeypatch):
    from mosaicflow import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1.0)
    code = main(
        [
            "run",
            str(small_grid.folder),
            "--out",
            str(tmp_path / "o.zarr"),
            "--cluster",
            "tcp://127.0.0.1:9",
            "--quiet",
        ]
    )
    assert code == 2
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' within 1 s" in (
        capsys.readouterr().out
    )


# -- the output is only ever a store mosaicflow made ----------------------------------------
def _snapshot(folder):
    """Every file under ``folder`` with its bytes (directories included as names)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _run_cli(argv, capsys):
    code = main(["run", *argv, "--quiet"])
    return code, " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_folder_of_user_files_survives(small_grid, tmp_path, capsys, flag):
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "important.txt").write_text("results of three years\n")
    (user / "sub" / "thesis.tex").write_text("\\documentclass{book}\n")
    before = _snapshot(user)
    code, out = _run_cli([str(small_grid.folder), "--out", str(user), flag], capsys)
    assert code == 2
    assert "is not a run store" in out and "important.txt" in out and "sub" in out
    assert _snapshot(user) == before  # nothing deleted, nothing written (no zarr.json either)


def test_another_programs_zarr_store_survives_overwrite(small_grid, tmp_path, capsys):
    import zarr

    other = tmp_path / "other.zarr"
    group = zarr.open_group(str(other), mode="w", zarr_format=3)
    group.create_array("data", shape=(4, 4), dtype="uint8")[:] = 7
    group.attrs["owner"] = "another program"
    before = _snapshot(other)
    code, out = _run_cli([str(small_grid.folder), "--out", str(other), "--overwrite"], capsys)
    assert code == 2 and "Zarr store that mosaicflow did not make" in out
    assert _snapshot(other) == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_the_input_folder_is_never_the_output(grid_copy, capsys, where):
    out = grid_copy if where == "same" else grid_copy / "run.zarr"
    before = _snapshot(grid_copy)
    code, printed = _run_cli([str(grid_copy), "--out", str(out), "--overwrite"], capsys)
    assert code == 2 and "never writes into its input" in printed
    assert _snapshot(grid_copy) == before


def test_overwrite_replaces_only_a_run_store(small_grid, tmp_path, capsys):
    out = tmp_path / "run.zarr"
    store = RunStore(str(out), mode="w")  # a store mosaicflow made, with a table in it
    store.write_table("tiles", pd.DataFrame({"a": [1]}))
    (out / "notes.txt").write_text("mine\n")  # ... and a file the user put beside it
    code, printed = _run_cli([str(small_grid.folder), "--out", str(out), "--overwrite"], capsys)
    assert code == 2 and "also holds entries a run does not write (notes.txt)" in printed
    assert (out / "notes.txt").read_text() == "mine\n"
    assert RunStore(str(out), mode="r").read_table("tiles")["a"].tolist() == [1]


def test_store_modes_refuse_what_mosaicflow_did_not_make(tmp_path):
    from mosaicflow.errors import StoreError

    user = tmp_path / "mine"
    user.mkdir()
    (user / "a.txt").write_text("x")
    for mode in ("r", "a", "w"):
        with pytest.raises(StoreError, match="not a run store"):
            RunStore(str(user), mode=mode)
    assert sorted(p.name for p in user.iterdir()) == ["a.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not RunStore.is_run_store(str(empty))
    RunStore(str(empty), mode="a")  # an empty folder becomes a store
    assert RunStore.is_run_store(str(empty))


def test_cli_tile_set_options_reach_the_config():
    from mosaicflow.cli import build_parser
    from mosaicflow.cli.run import config_from_args

    args = build_parser().parse_args(
        [
            "run",
            "acq",
            "--out",
            "r.zarr",
            "--layout",
            "layout.csv",
            "--pixel-size",
            "2.5",
            "--grid",
            "3x4",
            "--overlap",
            "0.15",
            "--crop-bottom",
            "60",
            "--missing-tiles",
            "blank",
        ]
    )
    tiles = config_from_args(args).tiles
    assert tiles.reader_options() == {
        "layout": "layout.csv",
        "pixel_size_nm": 2.5,
        "grid": (3, 4),
        "overlap": (0.15, 0.15),
        "crop_bottom": 60,
        "missing_tiles": "blank",
    }


def test_cli_bad_grid_option(tmp_path, capsys):
    code = main(["run", str(tmp_path), "--out", str(tmp_path / "r.zarr"), "--grid", "3by4"])
    assert code != 0
    assert "ROWSxCOLS" in capsys.readouterr().out.replace("\n", " ")


def test_cli_reads_plain_images_with_grid_options(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    acq = tmp_path / "acq"
    acq.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 60), 50 + 40 * i, np.uint8)).save(acq / f"t{i}.png")
    code, _ = _run_cli([str(acq), "--out", str(tmp_path / "none.zarr"), "--grid", "2x2"], capsys)
    assert code != 0  # no pixel size, no overlap: refused before any cluster starts
    assert not (tmp_path / "none.zarr").exists()


def test_a_layout_file_protects_the_tile_folders_not_its_own(small_grid, tmp_path, capsys):
    """A layout may name tiles in another folder: an output beside the layout is fine, one in
    the tiles' folder is refused."""
    from mosaicflow.config import Config
    from mosaicflow.pipeline import Pipeline

    tiles = sorted(small_grid.folder.glob("Tile_*.tif"))
    rows = [f"{p},{int(p.name[5:8])},{int(p.name[9:12])}" for p in tiles]
    layout = tmp_path / "layout.csv"
    layout.write_text("file,row,col\n" + "\n".join(rows) + "\n")
    config = Config(input=str(layout))
    Pipeline(config, tmp_path / "run.zarr").preflight()  # beside the layout: allowed
    code, printed = _run_cli([str(layout), "--out", str(small_grid.folder / "run.zarr")], capsys)
    assert code == 2 and "never writes into its input" in printed
    assert not (small_grid.folder / "run.zarr").exists()


@pytest.mark.parametrize(
    ("options", "chunk"),
    [([], 2048), (["--model", "default"], 1024), (["--model", "default", "--chunk", "2048"], 2048)],
)
def test_cli_chunk_default_follows_the_segmenter(options, chunk):
    from mosaicflow.cli import build_parser
    from mosaicflow.cli.run import config_from_args

    args = build_parser().parse_args(["run", "acq", "--out", "r.zarr", *options])
    assert config_from_args(args).chunk_px == chunk
