"""multiview-stitcher (``registration.register``) on a tile list, for
``benchmarks/bench_stitch_peers.py``.

    /work/peers-venv/bin/python benchmarks/peers/mvs_driver.py TILES.json \
        [--overlap-tolerance-px 0] [--pruning alternating_pattern] [--quality-filter 0] \
        [--log-sigma 0] [--scheduler threads]

``TILES.json`` (written by the benchmark): ``{"pixel_size_um": float, "tiles": [{"path": str,
"y_px": float, "x_px": float}, ...]}`` with the nominal (stage) top-left of every tile in
pixels. Each tile becomes a 2-D spatial image (dims ``y, x``, spacing the pixel size in um,
translation the nominal origin, transform key ``stage_metadata``); ``register`` runs phase
correlation (its ``phase_correlation_registration``, upsample 10) on the overlap of every pair
the pruning keeps, ``reg_channel_index=0``, then ``global_optimization`` with a translation
model. ``--overlap-tolerance-px`` widens every overlap box (the package default 0: the nominal
intersection only); ``--quality-filter Q`` sets ``post_registration_do_quality_filter`` with
threshold Q; ``--log-sigma S`` wraps the pairwise function with a Laplacian-of-Gaussian
pre-filter of S px (the documented ``pairwise_reg_func`` hook; 0: none). Prints one JSON
object: ``positions`` (registered top-left ``[y, x]`` px per tile, input order), ``elapsed_s``
(reading the tiles plus ``register``, without the imports, given as ``import_s``) and the
settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

t_import = time.perf_counter()
import dask  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402
import tifffile  # noqa: E402
from multiview_stitcher import msi_utils, registration  # noqa: E402
from multiview_stitcher import spatial_image_utils as si_utils  # noqa: E402

IMPORT_S = time.perf_counter() - t_import
KEY = "stage_metadata"


def log_prefiltered(sigma: float):
    """``phase_correlation_registration`` on ``-LoG(sigma)`` filtered copies of both views."""

    def func(fixed_data, moving_data, **kwargs):
        def filt(x):
            arr = np.asarray(x.data, dtype=np.float32)
            nan = np.isnan(arr)
            out = -ndi.gaussian_laplace(np.nan_to_num(arr, nan=float(np.nanmean(arr))), sigma)
            out[nan] = np.nan
            return x.copy(data=out)

        return registration.phase_correlation_registration(
            filt(fixed_data), filt(moving_data), **kwargs
        )

    return func


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiles_json")
    parser.add_argument("--overlap-tolerance-px", type=float, default=0.0)
    parser.add_argument("--pruning", default="alternating_pattern")
    parser.add_argument("--quality-filter", type=float, default=0.0)
    parser.add_argument("--log-sigma", type=float, default=0.0)
    parser.add_argument("--scheduler", default="threads")
    args = parser.parse_args()
    spec = json.loads(Path(args.tiles_json).read_text())
    px = float(spec["pixel_size_um"])
    t0 = time.perf_counter()
    msims = []
    for t in spec["tiles"]:
        sim = si_utils.get_sim_from_array(
            tifffile.imread(t["path"]),
            dims=["y", "x"],
            scale={"y": px, "x": px},
            translation={"y": t["y_px"] * px, "x": t["x_px"] * px},
            transform_key=KEY,
        )
        msims.append(msi_utils.get_msim_from_sim(sim, scale_factors=[]))
    kwargs = {}
    if args.log_sigma > 0:
        kwargs["pairwise_reg_func"] = log_prefiltered(args.log_sigma)
    with dask.config.set(scheduler=args.scheduler):
        params = registration.register(
            msims,
            reg_channel_index=0,
            transform_key=KEY,
            new_transform_key="registered",
            overlap_tolerance=args.overlap_tolerance_px * px,
            pre_registration_pruning_method=None if args.pruning == "none" else args.pruning,
            post_registration_do_quality_filter=args.quality_filter > 0,
            post_registration_quality_threshold=args.quality_filter,
            groupwise_resolution_kwargs={"transform": "translation"},
            **kwargs,
        )
    elapsed = time.perf_counter() - t0
    positions = []
    for t, p in zip(spec["tiles"], params, strict=True):
        affine = np.asarray(p.squeeze()).reshape(3, 3)  # world_new = affine @ world_stage
        origin = affine @ np.array([t["y_px"] * px, t["x_px"] * px, 1.0])
        positions.append([origin[0] / px, origin[1] / px])
    out = {
        "positions": positions,
        "elapsed_s": elapsed,
        "import_s": IMPORT_S,
        "settings": {
            "pairwise_reg_func": "phase_correlation_registration"
            + (f" on -LoG(sigma={args.log_sigma} px)" if args.log_sigma > 0 else ""),
            "overlap_tolerance_px": args.overlap_tolerance_px,
            "pre_registration_pruning_method": args.pruning,
            "post_registration_quality_threshold": args.quality_filter or None,
            "groupwise_resolution": "global_optimization, translation",
            "reg_channel_index": 0,
            "scheduler": args.scheduler,
        },
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
