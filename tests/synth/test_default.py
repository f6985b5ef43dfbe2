"""Tests for the built-in default input (mosaicflow.synth.default)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from rich.console import Console

from mosaicflow import synth
from mosaicflow.config import Config, SynthConfig
from mosaicflow.synth.default import default_input, synthesize

TINY = SynthConfig(rows=1, cols=2, tile_height=64, tile_width=80)


def test_default_input_is_written_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    config = Config(synth=TINY)
    out = io.StringIO()
    folder = default_input(config, console=Console(file=out))
    assert folder.parent == tmp_path
    assert folder.name.startswith("mosaicflow-default-grid-")
    assert (folder / ".complete").read_text() == "ok\n"
    assert sorted(p.name for p in folder.glob("Tile_*.tif")) == [
        synth.tile_name(1, 1),
        synth.tile_name(1, 2),
    ]
    assert "Synthesizing the default 1x2 grid" in out.getvalue()

    # Same settings: the same folder, not written again.
    stamp = (folder / synth.tile_name(1, 1)).stat().st_mtime_ns
    out = io.StringIO()
    assert default_input(Config(synth=TINY), console=Console(file=out)) == folder
    assert out.getvalue() == ""
    assert (folder / synth.tile_name(1, 1)).stat().st_mtime_ns == stamp

    # Other settings: another folder.
    other = default_input(Config(synth=SynthConfig(rows=1, cols=2, tile_height=64, tile_width=96)))
    assert other != folder and (other / ".complete").exists()


def test_half_written_default_input_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    config = Config(synth=TINY)
    folder = default_input(config)
    (folder / ".complete").unlink()
    (folder / synth.tile_name(1, 2)).unlink()
    assert default_input(config) == folder
    assert (folder / synth.tile_name(1, 2)).exists()
    assert (folder / ".complete").exists()


def test_synthesize_follows_the_settings(tmp_path: Path) -> None:
    truth = synthesize(tmp_path / "acq", TINY)
    assert truth.folder == tmp_path / "acq"
    assert truth.mosaic_shape == (64, 80 + round(80 * 0.9))
    assert len(truth.tiles) == 2
