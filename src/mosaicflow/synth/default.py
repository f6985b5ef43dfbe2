"""The built-in default input: the synthetic SEM grid described by ``config.synth``, written once
into the temp folder and reused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

from rich.console import Console

from mosaicflow.config import Config, SynthConfig
from mosaicflow.synth.grid import GridTruth
from mosaicflow.synth.sem import write_maps_grid

__all__ = ["default_input", "synthesize"]


def synthesize(folder: str | os.PathLike[str], settings: SynthConfig) -> GridTruth:
    """Write the synthetic Maps-like grid described by ``settings`` into ``folder``.

    Parameters
    ----------
    folder : str or path-like
        Acquisition folder (created).
    settings : SynthConfig
        Grid size, tile size, overlap, stage error, pixel size, SNR, bit depth and seed.

    Returns
    -------
    GridTruth
    """
    options = dataclasses.asdict(settings)
    tile_shape = (options.pop("tile_height"), options.pop("tile_width"))
    return write_maps_grid(Path(folder), tile_shape=tile_shape, **options)


def default_input(config: Config, *, console: Console | None = None) -> Path:
    """The built-in synthetic grid for ``config.synth``, written once into the temp folder.

    The folder name carries a hash of the synth settings, so the same settings reuse the same
    (deterministic) files, and a half-written folder (no ``.complete`` marker) is never reused.

    Parameters
    ----------
    config : Config
        Its ``synth`` section describes the grid.
    console : rich.console.Console, optional
        Told when the grid is being written.

    Returns
    -------
    Path
        The acquisition folder.
    """
    settings = dataclasses.asdict(config.synth)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"mosaicflow-default-grid-{digest}"
    done = folder / ".complete"
    if done.exists():
        return folder
    if console is not None:
        console.print(
            f"Synthesizing the default {config.synth.rows}x{config.synth.cols} grid in {folder}"
        )
    synthesize(folder, config.synth)
    done.write_text("ok\n")
    return folder
