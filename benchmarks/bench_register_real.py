"""Registration on the real tile grids in ``../shared/data/real/``: how well the overlaps match.

    python benchmarks/bench_register_real.py [--out benchmarks/results/register_real]

Per grid, the mean raw-pixel NCC of side-by-side neighbours over their common overlap (offsets
rounded to whole pixels) at (a) the nominal positions, (b) mosaicflow's registered positions
(``register_tileset``, the register stage's call: by default diagonal pairs only where the
side pairs leave a tile apart, and again with every diagonal pair), (c) each pair's own best
integer offset within +-max_shift of the nominal one (an upper bound: one set of rigid
positions need not reach every pair's best at once); for stitch2d's SEM-BSE grid also the
largest error against ``reference_positions.csv`` (mean offset over all tiles removed), and
the registration time.
stitch2d's JPEGs are read at a nominal 10 % / 26 % overlap grid (as ``tests/stitch``), vEMstitch's
BMPs with the grid options (3x3, 10 %). Prints a table, writes ``.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from mosaicflow.io import TileSet, read_tileset
from mosaicflow.stitch import register_tileset
from mosaicflow.stitch.agreement import overlap_ncc

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
BSE_TILE = (442, 512)


def sem_bse(folder: Path) -> tuple[TileSet, np.ndarray]:
    """stitch2d's 2x3 grid (``Grid@COL ROW``: the first index runs along x) at a nominal
    10 % / 26 % overlap grid, and the reference origins in the tile set's order."""
    src = REAL / "sem_bse_2x3_stitch2d"
    ref = pd.read_csv(src / "reference_positions.csv")
    h, w = BSE_TILE
    layout, truth = [], {}
    for rec in ref.itertuples():
        col, row = (int(v) for v in re.search(r"Grid@(\d+) (\d+)", rec.filename).groups())
        layout.append((src / rec.filename, row + 1, col + 1, row * h * 0.90, col * w * 0.74, 1.0))
        truth[(row + 1, col + 1)] = (rec.y_px, rec.x_px)
    columns = ["file", "row", "col", "stage_y_nm", "stage_x_nm", "pixel_size_nm"]
    pd.DataFrame(layout, columns=columns).to_csv(folder / "layout.csv", index=False)
    tileset = read_tileset(folder / "layout.csv")
    rc = zip(tileset.tiles["row"], tileset.tiles["col"], strict=True)
    return tileset, np.array([truth[k] for k in rc])


def ssem(folder: Path) -> tuple[TileSet, None]:
    """vEMstitch's 3x3 serial-section grid (``165_ROW_COL.bmp``) by the grid options."""
    src = REAL / "ssem_3x3_vemstitch"
    return read_tileset(src, grid=(3, 3), overlap=0.1, pixel_size_nm=1.0), None


def max_error(positions: np.ndarray, true: np.ndarray) -> float:
    """Largest distance to the reference after removing the mean offset over all tiles."""
    err = positions - true
    err -= err.mean(axis=0)
    return float(np.hypot(err[:, 0], err[:, 1]).max())


def measure(tileset: TileSet, true: np.ndarray | None, corners: str) -> dict[str, object]:
    t0 = time.perf_counter()
    solved, judged, _ = register_tileset(tileset, corners=corners)
    t1 = time.perf_counter()
    nominal = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    registered = solved[["y_px", "x_px"]].to_numpy(float)
    scores = overlap_ncc(tileset, {"nominal": nominal, "registered": registered})
    out: dict[str, object] = {
        "tiles": len(nominal),
        "tile_shape": list(tileset.tile_shape),
        "pairs": len(scores),
        "ncc_nominal": float(scores["ncc_nominal"].mean()),
        "ncc_registered": float(scores["ncc_registered"].mean()),
        "ncc_best_per_pair": float(scores["best_ncc"].mean()),
        "pairs_measured": int((judged["kind"] == "neighbour").sum()),
        "pairs_kept": int(judged["kept"].sum()),
        "corners": corners,
        "register_s": round(t1 - t0, 2),
        "per_pair": scores.round(4).to_dict(orient="records"),
    }
    out["registered_over_best"] = out["ncc_registered"] / out["ncc_best_per_pair"]
    if true is not None:
        out["max_error_nominal_px"] = max_error(nominal, true)
        out["max_error_registered_px"] = max_error(registered, true)
    return out


def markdown(results: dict[str, dict]) -> str:
    lines = [
        "| grid | diagonal pairs | pairs (kept / measured) | NCC nominal | NCC registered "
        "| NCC best per pair | registered / best | max error vs reference (px) "
        "| registration (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        err = (
            f"{r['max_error_nominal_px']:.2f} -> {r['max_error_registered_px']:.2f}"
            if "max_error_registered_px" in r
            else "no reference"
        )
        lines.append(
            f"| {r['grid']} | {r['corners']} | {r['pairs_kept']} / {r['pairs_measured']} "
            f"| {r['ncc_nominal']:.3f} "
            f"| {r['ncc_registered']:.3f} | {r['ncc_best_per_pair']:.3f} "
            f"| {r['registered_over_best']:.3f} | {err} | {r['register_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/register_real")
    args = parser.parse_args()
    if not REAL.exists():
        raise SystemExit(f"real data not found at {REAL}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("sem_bse_2x3_stitch2d", sem_bse), ("ssem_3x3_vemstitch", ssem)):
            for corners in ("auto", "all"):
                results[f"{name} ({corners})"] = {
                    "grid": name,
                    **measure(*build(Path(tmp)), corners=corners),
                }
    table = Table(title="registration on the real grids (raw-pixel overlap NCC, mean of pairs)")
    for col in ("grid", "kept/pairs", "nominal", "registered", "best/pair", "reg/best", "err px"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['pairs_kept']}/{r['pairs_measured']}",
            f"{r['ncc_nominal']:.3f}",
            f"{r['ncc_registered']:.3f}",
            f"{r['ncc_best_per_pair']:.3f}",
            f"{r['registered_over_best']:.3f}",
            f"{r.get('max_error_registered_px', float('nan')):.2f}",
        )
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
