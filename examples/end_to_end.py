"""End to end from Python: synthesize a small Maps-like grid, run every stage, compare with truth.

python examples/end_to_end.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mosaicflow import cluster, open_run, synth
from mosaicflow.config import Config
from mosaicflow.pipeline import Pipeline


def main(out: Path) -> None:
    truth = synth.write_maps_grid(out / "acquisition", rows=3, cols=3, snr=15.0, seed=7)
    client = cluster.connect("local", n_workers=2)
    try:
        config = Config(input=str(truth.folder))
        Pipeline(config, str(out / "run.zarr"), client=client, overwrite=True).run()
    finally:
        cluster.close(client)
    ds = open_run(str(out / "run.zarr"))
    table = pd.read_parquet(out / "run.zarr" / "tables" / "particles.parquet")
    true = pd.read_csv(truth.particles_csv)
    print(ds)
    print(f"particles: found {len(table)}, true {len(true)}")
    print(
        f"median ECD: found {np.median(table['equivalent_diameter_area']):.1f} nm, "
        f"true {np.median(true['ecd_nm']):.1f} nm"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
