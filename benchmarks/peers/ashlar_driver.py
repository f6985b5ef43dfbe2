"""ASHLAR (``ashlar.reg.EdgeAligner``) on a tile list, for ``benchmarks/bench_stitch_peers.py``.

    /work/peers-venv/bin/python benchmarks/peers/ashlar_driver.py TILES.json \
        [--filter-sigma 0] [--max-shift-um 15] [--alpha 0.01]

``TILES.json`` (written by the benchmark): ``{"pixel_size_um": float, "tiles": [{"path": str,
"y_px": float, "x_px": float}, ...]}`` with the nominal (stage) top-left of every tile in
pixels. The tiles are read with tifffile into memory and handed to ASHLAR through a numpy
``Reader``/``Metadata`` pair, so BioFormats never opens a file (the JVM still starts on import).
The defaults are those of the ``ashlar`` command line (``--filter-sigma 0``,
``--maximum-shift 15`` um, ``alpha`` 0.01). Prints one JSON object: ``positions`` (registered
top-left ``[y, x]`` px per tile, in input order), ``elapsed_s`` (reading the tiles plus
``EdgeAligner.run()``, without the import / JVM start, given as ``import_s``), the settings and
how many edges ASHLAR kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

t_import = time.perf_counter()
from ashlar import reg  # noqa: E402  (starts the JVM: timed separately)

IMPORT_S = time.perf_counter() - t_import


class ArrayMetadata(reg.Metadata):
    """Nominal positions (px, ``[y, x]``), one tile shape and the pixel size (um)."""

    def __init__(self, positions: np.ndarray, shape: tuple[int, int], pixel_um: float, dtype):
        self._pos = np.asarray(positions, dtype=float)
        self._shape = np.asarray(shape, dtype=int)
        self._pixel_um = float(pixel_um)
        self._dtype = np.dtype(dtype)

    @property
    def _num_images(self) -> int:
        return len(self._pos)

    @property
    def num_channels(self) -> int:
        return 1

    @property
    def pixel_size(self) -> float:
        return self._pixel_um

    @property
    def pixel_dtype(self) -> np.dtype:
        return self._dtype

    def tile_position(self, i: int) -> np.ndarray:
        return self._pos[i]

    def tile_size(self, i: int) -> np.ndarray:
        return self._shape


class ArrayReader(reg.Reader):
    """Tiles already in memory."""

    def __init__(self, images: list[np.ndarray], metadata: ArrayMetadata) -> None:
        self.images = images
        self.metadata = metadata

    def read(self, series: int, c: int) -> np.ndarray:
        return self.images[series]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiles_json")
    parser.add_argument("--filter-sigma", type=float, default=0.0)
    parser.add_argument("--max-shift-um", type=float, default=15.0)
    parser.add_argument("--alpha", type=float, default=0.01)
    args = parser.parse_args()
    spec = json.loads(Path(args.tiles_json).read_text())
    t0 = time.perf_counter()
    images = [tifffile.imread(t["path"]) for t in spec["tiles"]]
    nominal = np.array([[t["y_px"], t["x_px"]] for t in spec["tiles"]], dtype=float)
    meta = ArrayMetadata(nominal, images[0].shape, spec["pixel_size_um"], images[0].dtype)
    aligner = reg.EdgeAligner(
        ArrayReader(images, meta),
        channel=0,
        max_shift=args.max_shift_um,
        alpha=args.alpha,
        filter_sigma=args.filter_sigma,
        do_make_thumbnail=False,
        verbose=False,
    )
    aligner.run()
    elapsed = time.perf_counter() - t0
    errors = np.array([v[1] for v in aligner._cache.values()])
    out = {
        "positions": aligner.positions.tolist(),
        "elapsed_s": elapsed,
        "import_s": IMPORT_S,
        "settings": {
            "filter_sigma": args.filter_sigma,
            "max_shift_um": args.max_shift_um,
            "max_shift_px": aligner.max_shift_pixels,
            "alpha": args.alpha,
            "do_make_thumbnail": False,
        },
        "n_edges": int(aligner.neighbors_graph.number_of_edges()),
        "n_edges_kept": int(np.isfinite(errors).sum()),
        "max_error_threshold": float(aligner.max_error),
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
