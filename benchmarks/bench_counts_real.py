"""Particle counts on the real tile grids in ``../shared/data/real/``: every object the threshold
finds, against those listed with the default minimum size and edge policy.

    python benchmarks/bench_counts_real.py [--json benchmarks/results/counts_real.json]

The grids are read as they are: stitch2d's JPEGs through a layout CSV at their reference
positions, vEMstitch's BMPs with the grid options; their pixel size is unknown (1 nm assumed).
Registration runs as in any run. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from mosaicflow.config import Config
from mosaicflow.pipeline import Pipeline

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
PIXEL_NM = 1.0  # the grids carry no pixel size


def sem_bse(folder: Path) -> tuple[Path, dict]:
    """stitch2d's 2x3 SEM-BSE JPEGs at their reference positions (``Grid@col row``): a layout."""
    src = REAL / "sem_bse_2x3_stitch2d"
    ref = pd.read_csv(src / "reference_positions.csv")
    rows = []
    for rec in ref.itertuples():
        col, row = (int(v) for v in re.search(r"Grid@(\d+) (\d+)", rec.filename).groups())
        rows.append((src / rec.filename, row + 1, col + 1, rec.y_px, rec.x_px))
    layout = pd.DataFrame(rows, columns=["file", "row", "col", "stage_y_nm", "stage_x_nm"])
    layout[["stage_y_nm", "stage_x_nm"]] *= PIXEL_NM
    layout.assign(pixel_size_nm=PIXEL_NM).to_csv(folder / "layout.csv", index=False)
    return folder / "layout.csv", {}


def ssem(folder: Path) -> tuple[Path, dict]:
    """vEMstitch's 3x3 serial-section BMPs (``165_ROW_COL.bmp``): the grid options."""
    return REAL / "ssem_3x3_vemstitch", {"grid": "3x3", "overlap": 0.1, "pixel_size_nm": PIXEL_NM}


def count(
    source: Path, out: Path, tiles: dict, polarity: str = "auto", **measure: str
) -> dict[str, object]:
    config = Config(input=str(source)).replace("store", chunk=1024)
    if tiles:
        config = config.replace("tiles", **tiles)
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
            source, tiles = build(Path(tmp))
            results[name] = {
                "every object (min_size 0, edge keep)": count(
                    source, Path(tmp, f"{name}-all.zarr"), tiles, min_size="0", edge_policy="keep"
                ),
                "defaults (min_size auto, edge flag)": count(
                    source, Path(tmp, f"{name}.zarr"), tiles
                ),
            }
            if name.startswith("sem_bse"):  # backscatter: bright grains in a grey matrix
                results[name]["defaults, --polarity bright"] = count(
                    source, Path(tmp, f"{name}-bright.zarr"), tiles, polarity="bright"
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
