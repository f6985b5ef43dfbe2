"""`mosaicflow stitch`: registration and fusion only, on a real scheduler; the store it makes
is the mosaic `mosaicflow run --resume` continues from; bad input refused before any cluster."""

from __future__ import annotations

import numpy as np
import pytest

from mosaicflow import synth
from mosaicflow.cli import main
from mosaicflow.io.store import RunStore


@pytest.mark.cluster
def test_stitch_then_run_resumes_from_the_mosaic(small_grid, client, tmp_path, capsys):
    out = tmp_path / "st.zarr"
    address = client.scheduler.address
    args = [str(small_grid.folder), "--out", str(out), "--cluster", address, "--chunk", "256"]
    assert main(["stitch", *args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "overlapping pairs kept" in printed and "tile gains" in printed
    store = RunStore(str(out), mode="r")
    assert [s for s, v in store.stages().items() if v["status"] == "done"] == [
        "tiles",
        "register",
        "mosaic",
    ]
    tiles = store.read_table("tiles")
    assert list(tiles["file"]) == [p.rsplit("/", 1)[-1] for p in tiles["path"]]
    for column in (
        "file",
        "row",
        "col",
        "y_px",
        "x_px",
        "nominal_y_px",
        "nominal_x_px",
        "residual_px",
        "n_pairs_kept",
        "gain",
        "offset",
    ):
        assert column in tiles, column
    # registered positions are the true ones (a constant offset aside), the stage's are not
    true = synth.read_ground_truth(small_grid.folder)[1]
    merged = tiles.merge(true, on=["row", "col"], suffixes=("", "_true"))
    err = merged[["y_px", "x_px"]].to_numpy() - merged[["y_px_true", "x_px_true"]].to_numpy()
    err -= err.mean(axis=0)
    assert np.abs(err).max() < 0.5
    mosaic = store.read_image("mosaic")
    assert mosaic.attrs.get("blend", "linear") and mosaic.shape[0] > 300
    # the whole job continues from the stitched store with the same options
    assert main(["run", *args, "--resume", "--quiet"]) == 0
    store = RunStore(str(out), mode="r")
    assert all(v["status"] == "done" for v in store.stages().values())
    assert "already done" not in capsys.readouterr().out  # --quiet prints no progress
    assert len(store.read_table("particles")) > 0


def test_stitch_options_reach_the_configuration(small_grid, tmp_path):
    from mosaicflow.cli import build_parser
    from mosaicflow.cli.run import config_from_args

    args = build_parser().parse_args(
        [
            "stitch",
            str(small_grid.folder),
            "--out",
            str(tmp_path / "o.zarr"),
            "--no-register",
            "--blend",
            "nearest",
            "--no-equalize",
            "--flatfield",
        ]
    )
    stitch = config_from_args(args).stitch
    assert (stitch.register, stitch.blend, stitch.equalize, stitch.flatfield) == (
        False,
        "nearest",
        False,
        True,
    )


def test_stitch_bad_input_fails_before_any_cluster(tmp_path, capsys):
    code = main(["stitch", str(tmp_path / "nope"), "--out", str(tmp_path / "o.zarr"), "--quiet"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().out
    assert not (tmp_path / "o.zarr").exists()


def test_stitch_of_an_image_folder_without_metadata_names_the_options(tmp_path, capsys):
    folder = tmp_path / "pngs"
    folder.mkdir()
    from PIL import Image

    for k in range(4):
        Image.fromarray(np.full((32, 48), 10 * k, np.uint8)).save(folder / f"t{k}.png")
    code = main(["stitch", str(folder), "--out", str(tmp_path / "o.zarr"), "--grid", "2x2"])
    assert code == 2
    out = capsys.readouterr().out
    assert "--pixel-size" in out and not (tmp_path / "o.zarr").exists()


def test_flatfield_without_equalisation(small_grid, tmp_path):
    """``--flatfield --no-equalize``: the flat field divides every tile, no gains are solved."""
    out = tmp_path / "ff.zarr"
    args = [str(small_grid.folder), "--out", str(out), "--chunk", "256", "--workers", "1"]
    assert main(["stitch", *args, "--flatfield", "--no-equalize", "--quiet"]) == 0
    store = RunStore(str(out), mode="r")
    record = store.stages()["mosaic"]
    lo, hi = record["flatfield_range"]
    assert 0.5 < lo < 1.0 < hi < 1.5  # the synth's vignetting, normalised to mean 1
    assert "gain_range" not in record and "gain" not in store.read_table("tiles")
