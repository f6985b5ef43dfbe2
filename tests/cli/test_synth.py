"""``mosaicflow synth`` in both modes, and its handling of mode-specific options."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from mosaicflow import cli
from mosaicflow.cli import main
from mosaicflow.errors import ConfigError
from mosaicflow.io.tiles import read_tileset


def test_cli_synth(tmp_path):
    assert (
        main(
            [
                "synth",
                str(tmp_path / "g"),
                "--rows",
                "1",
                "--cols",
                "2",
                "--tile-height",
                "64",
                "--tile-width",
                "80",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "g").glob("Tile_*.tif"))) == 2


def _run(argv: list[str]) -> int:
    """Run ``mosaicflow`` on ``argv`` without its error handling, so errors reach the test."""
    args = cli.build_parser().parse_args(argv)
    return args.func(args, Console(file=io.StringIO()))


def test_cli_hrtem_and_sem_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--rows", "1", "--cols", "2", "--tile-height", "500", "--tile-width", "600"]
    argv = [
        "synth",
        str(tmp_path / "h"),
        "--mode",
        "hrtem",
        *small,
        "--n-particles",
        "3",
        "--class-weights",
        "crystalline=1,agglomerate=1",
    ]
    assert _run(argv) == 0
    hrtem = read_tileset(tmp_path / "h")
    assert hrtem.pixel_size_nm == pytest.approx((0.05, 0.05))
    classes = pd.read_csv(tmp_path / "h" / "ground_truth" / "particles.csv")["class"]
    assert len(classes) == 3 and set(classes) <= {"crystalline", "agglomerate"}

    assert _run(["synth", str(tmp_path / "s"), *small]) == 0
    assert read_tileset(tmp_path / "s").pixel_size_nm == pytest.approx((2.0, 2.0))

    with pytest.raises(ConfigError, match="--density apply to --mode hrtem only"):
        _run(["synth", str(tmp_path / "x"), *small, "--density", "10"])
    with pytest.raises(ConfigError, match="--class-weights: bad item 'big=1'"):
        _run(["synth", str(tmp_path / "y"), "--mode", "hrtem", "--class-weights", "big=1"])

    # Through main: the error is one line and exit status 2.
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "z"), *small, "--density", "10"]) == 2
    assert "--density apply to --mode hrtem only" in capsys.readouterr().out
