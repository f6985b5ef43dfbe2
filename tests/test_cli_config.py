"""The command line (against a real scheduler address) and configuration handling."""

from __future__ import annotations

import pandas as pd
import pytest

from mosaicflow.cli import main
from mosaicflow.config import Config
from mosaicflow.errors import ConfigError
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


def test_cli_unreachable_scheduler(small_grid, tmp_path, capsys):
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
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in capsys.readouterr().out


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


def test_config_roundtrip_env_and_errors(tmp_path):
    config = Config.from_dict({"denoise": {"sigma": 2}, "store": {"chunk": 512}})
    assert config.denoise.sigma == 2.0 and config.store.chunk == 512
    assert Config.from_dict(config.to_dict()) == config
    env = {"MOSAICFLOW_LABEL__CONNECTIVITY": "2", "MOSAICFLOW_CLUSTER__ADDRESS": "tcp://h:8786"}
    over = config.with_env(env)
    assert over.label.connectivity == 2 and over.cluster.address == "tcp://h:8786"
    with pytest.raises(ConfigError, match=r"unknown key denoise\.sigmaa"):
        Config.from_dict({"denoise": {"sigmaa": 1}})
    with pytest.raises(ConfigError, match="unknown configuration section"):
        Config.from_dict({"denoiser": {}})
    with pytest.raises(ConfigError, match=r"denoise\.sigma must be > 0"):
        Config.from_dict({"denoise": {"sigma": -1}})
    with pytest.raises(ConfigError, match=r"store\.chunk: expected int"):
        Config.from_dict({"store": {"chunk": "big"}})
    path = tmp_path / "run.yaml"
    path.write_text("input: /data/acq\ndenoise:\n  sigma: 1.5\n")
    assert Config.from_yaml(path).input == "/data/acq"
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Config.from_yaml(path)
