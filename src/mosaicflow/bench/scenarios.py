"""The benchmark's synthetic scenarios (Maps-like grids of 1400x900 tiles, 10 % overlap) and the
folders their tiles are cached in, written once by mosaicflow and reused."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from mosaicflow.config import SynthConfig
from mosaicflow.errors import ConfigError, StoreError

#: The file that marks a grid folder as one the benchmark wrote, with its settings.
MARKER = ".mosaicflow-bench-input.json"
FORMAT = "mosaicflow-bench-input/1"


@dataclass(frozen=True)
class Scenario:
    """One synthetic grid the benchmark runs.

    Attributes
    ----------
    name : str
        The ``--scenario`` name.
    rows, cols : int
        Grid size in tiles.
    tile_height, tile_width : int
        Tile size in pixels.
    overlap : float
        Fraction of a tile shared with its neighbour.
    hidden : bool
        Left out of the help and the error listing the scenarios (the test suite's tiny grid).
    """

    name: str
    rows: int
    cols: int
    tile_height: int = 900
    tile_width: int = 1400
    overlap: float = 0.10
    hidden: bool = False

    @property
    def synth(self) -> SynthConfig:
        """The synthetic-grid settings (the default SEM appearance, seed 0)."""
        return SynthConfig(
            rows=self.rows,
            cols=self.cols,
            tile_height=self.tile_height,
            tile_width=self.tile_width,
            overlap=self.overlap,
        )

    @property
    def acquired_mpx(self) -> float:
        """Acquired megapixels (overlaps counted twice)."""
        return self.rows * self.cols * self.tile_height * self.tile_width / 1e6

    def describe(self) -> str:
        """One line: grid, tile size and acquired pixels."""
        return (
            f"{self.rows}x{self.cols} tiles of {self.tile_width}x{self.tile_height} px, "
            f"{self.overlap:.0%} overlap ({self.acquired_mpx:,.1f} Mpx acquired)"
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("maps-48", rows=6, cols=8),
        Scenario("maps-120", rows=10, cols=12),
        Scenario("maps-1200", rows=30, cols=40),
        # 2x2 small tiles: a seconds-fast run for the test suite
        Scenario("tiny", rows=2, cols=2, tile_height=300, tile_width=400, hidden=True),
    )
}
#: The scenarios ``--help`` lists.
PUBLIC = tuple(name for name, s in SCENARIOS.items() if not s.hidden)


def get(name: str) -> Scenario:
    """The scenario called ``name``.

    Raises
    ------
    ConfigError
        No such scenario; the message lists the known ones.
    """
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigError(
            f"--scenario {name!r} is not a benchmark scenario; choose one of {', '.join(PUBLIC)}"
        ) from None


def _settings(scenario: Scenario) -> dict[str, object]:
    return {"scenario": scenario.name, "synth": dataclasses.asdict(scenario.synth)}


def check_folder(scenario: Scenario, root: str | Path) -> tuple[Path, str]:
    """Where the scenario's grid lives under ``root`` and what is there, written nowhere.

    Returns
    -------
    folder : Path
        ``root/<scenario name>``.
    state : str
        ``"ready"`` (a complete grid the benchmark wrote with these settings), ``"stale"`` (a
        grid the benchmark wrote, half-written or with other settings), ``"empty"`` (nothing,
        or an empty folder).

    Raises
    ------
    StoreError
        ``root`` is a file, or the grid folder holds files the benchmark did not write.
    """
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise StoreError(f"--data {str(root)!r} is a file, not a folder; choose another --data")
    folder = root / scenario.name
    marker = folder / MARKER
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError):
            found = {}
        complete = found.get("complete") and found.get("settings") == _settings(scenario)
        return folder, "ready" if complete else "stale"
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StoreError(
            f"grid folder {str(folder)!r} exists and was not written by 'mosaicflow bench' (no "
            f"{MARKER}); it is left untouched: choose another --data or --out"
        )
    return folder, "empty"


def grid_folder(
    scenario: Scenario, root: str | Path, *, console: Console | None = None
) -> tuple[Path, float | None]:
    """The scenario's tile folder under ``root``, synthesised there unless already written.

    ``root/<scenario name>`` is reused when it holds a complete grid the benchmark wrote with
    the same settings (:data:`MARKER`); a grid the benchmark left half-written, or wrote with
    other settings, is written again. A folder that exists without the marker and is not empty
    is never written into.

    Parameters
    ----------
    scenario : Scenario
        The grid to provide.
    root : str or Path
        The cache folder (``--data``, by default ``<out>/input``); created if missing.
    console : rich.console.Console, optional
        Told when the grid is being written.

    Returns
    -------
    folder : Path
        The acquisition folder.
    seconds : float or None
        Seconds the synthesis took, None when the cached grid was reused.

    Raises
    ------
    StoreError
        ``root`` or the grid folder is something the benchmark did not make.
    """
    folder, state = check_folder(scenario, root)
    if state == "ready":
        return folder, None
    if state == "stale":
        shutil.rmtree(folder)  # a grid the benchmark wrote, incomplete or from other settings
    wanted = _settings(scenario)
    marker = folder / MARKER
    if console is not None:
        console.print(
            f"[bold]bench[/bold] synthesising {scenario.name}: {scenario.describe()} in {folder} "
            "(not timed)",
            soft_wrap=True,
        )
    from mosaicflow.synth.default import synthesize  # here: the help lists scenarios cheaply

    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"format": FORMAT, "settings": wanted, "complete": False}))
    start = time.perf_counter()
    synthesize(folder, scenario.synth)
    seconds = time.perf_counter() - start
    marker.write_text(
        json.dumps({"format": FORMAT, "settings": wanted, "complete": True}, indent=2)
    )
    return folder, seconds
