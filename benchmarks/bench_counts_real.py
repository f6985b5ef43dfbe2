"""Particle counts on the real tile grids in ``../shared/data/real/``: every object the threshold
finds, against those listed with the default minimum size and edge policy.

    python benchmarks/bench_counts_real.py [--json benchmarks/results/counts_real.json]

Until mosaicflow reads JPEG/BMP tile sets directly, each grid is written as a Maps-like TIFF
folder first (FEI metadata, stage positions from the reference positions or the nominal overlap,
pixel size unknown: 1 nm). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from PIL import Image
from rich.console import Console
from rich.table import Table

from mosaicflow.config import Config
from mosaicflow.pipeline import Pipeline

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
PIXEL_M = 1e-9  # the grids carry no pixel size


def _fei_tile(path: Path, image: np.ndarray, origin: tuple[float, float]) -> None:
    h, w = image.shape
    cy, cx = origin[0] + (h - 1) / 2, origin[1] + (w - 1) / 2
    ini = (
        f"[Scan]\nPixelWidth={PIXEL_M!r}\nPixelHeight={PIXEL_M!r}\n"
        f"[Stage]\nStageX={cx * PIXEL_M!r}\nStageY={-cy * PIXEL_M!r}\n"
        f"[Image]\nResolutionX={w}\nResolutionY={h}\n"
    )
    tifffile.imwrite(path, image, photometric="minisblack", extratags=[(34682, "s", 0, ini, True)])


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def sem_bse(folder: Path) -> Path:
    """stitch2d's 2x3 SEM-BSE grid at its reference positions (``Grid@col row``)."""
    src = REAL / "sem_bse_2x3_stitch2d"
    ref = pd.read_csv(src / "reference_positions.csv")
    for rec in ref.itertuples():
        col, row = (int(v) for v in re.search(r"Grid@(\d+) (\d+)", rec.filename).groups())
        name = f"Tile_{row + 1:03d}-{col + 1:03d}-000000_0-000.tif"
        _fei_tile(folder / name, _grey(src / rec.filename), (rec.y_px, rec.x_px))
    return folder


def ssem(folder: Path) -> Path:
    """vEMstitch's 3x3 serial-section grid at its nominal overlap (190 px down, 196 px across)."""
    src = REAL / "ssem_3x3_vemstitch"
    for path in sorted(src.glob("165_*_*.bmp")):
        row, col = (int(v) for v in path.stem.split("_")[1:])
        image = _grey(path)
        h, w = image.shape
        origin = ((row - 1) * (h - 190), (col - 1) * (w - 196))
        _fei_tile(folder / f"Tile_{row:03d}-{col:03d}-000000_0-000.tif", image, origin)
    return folder


def count(folder: Path, out: Path, polarity: str = "auto", **measure: str) -> dict[str, object]:
    config = Config(input=str(folder)).replace("store", chunk=1024)
    config = config.replace("segment", polarity=polarity)
    if measure:
        config = config.replace("measure", **measure)
    store = Pipeline(config, str(out), overwrite=True).run(stop_after="particles")
    stage = store.stages()["particles"]
    keys = ("n_objects", "n_below_min_size", "n_at_edge", "n_particles", "min_diameter_nm")
    return {
        **{k: stage.get(k) for k in keys},
        "polarity": store.stages()["probability"]["polarity"],
        "warnings": stage.get("warnings", []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/counts_real.json")
    args = parser.parse_args()
    if not REAL.exists():
        raise SystemExit(f"real data not found at {REAL}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("sem_bse_2x3_stitch2d", sem_bse), ("ssem_3x3_vemstitch", ssem)):
            Path(tmp, name).mkdir()
            folder = build(Path(tmp, name))
            results[name] = {
                "every object (min_size 0, edge keep)": count(
                    folder, Path(tmp, f"{name}-all.zarr"), min_size="0", edge_policy="keep"
                ),
                "defaults (min_size auto, edge flag)": count(folder, Path(tmp, f"{name}.zarr")),
            }
            if name.startswith("sem_bse"):  # backscatter: bright grains in a grey matrix
                results[name]["defaults, --polarity bright"] = count(
                    folder, Path(tmp, f"{name}-bright.zarr"), polarity="bright"
                )
    table = Table(title="particle counts on the real grids (Otsu, Gaussian, 1 nm/px assumed)")
    columns = (
        "grid",
        "selection",
        "objects",
        "< min size",
        "at edge",
        "listed",
        "polarity",
        "warned",
    )
    for col in columns:
        table.add_column(col)
    for grid, runs in results.items():
        for selection, r in runs.items():
            table.add_row(
                grid,
                selection,
                str(r["n_objects"]),
                str(r["n_below_min_size"]),
                str(r["n_at_edge"]),
                str(r["n_particles"]),
                str(r["polarity"]),
                "yes" if r["warnings"] else "",
            )
    Console().print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
