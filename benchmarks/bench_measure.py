"""Labelling and particle-table throughput against dask-image and scikit-image, in one run.

A dense synthetic particle field (blobs from thresholded smoothed noise; a few thousand to a
million particles) is written to a Zarr store, then:

* labelling: ``mosaicflow.measure.label`` (scratch Zarr for the local labels, as the pipeline
  does) and ``dask_image.ndmeasure.label`` on the same LocalCluster, and
  ``scipy.ndimage.label`` on the whole in-memory image: Mpx/s and ratios;
* the table: ``mosaicflow.measure.regionprops_table`` (the columns scikit-image also has, and
  the full table with Fourier features and flags, written to Parquet) on the cluster, the
  dask-image measurement functions (``area``, ``center_of_mass``, ``mean``, ``minimum``,
  ``maximum``, ``standard_deviation``; timed on the first ``--dask-image-labels`` labels, as
  their cost grows with labels x pixels) and ``skimage.measure.regionprops_table`` with the
  shared columns on the whole image in one process: rows/s and ratios;
* peak RSS of the worker processes, per size (bounded memory: flat in the mosaic size).

Prints a table and writes ``benchmarks/results/measure.json``.

    python benchmarks/bench_measure.py --sizes 4096 8192 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pyarrow.dataset as pads
import scipy.ndimage as ndi
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PeakRSS  # benchmarks/ is on sys.path when a script here runs

SKIMAGE_SHARED = (
    "label",
    "num_pixels",
    "area",
    "equivalent_diameter_area",
    "centroid",
    "bbox",
    "perimeter",
    "feret_diameter_max",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "eccentricity",
    "solidity",
    "area_convex",
    "moments_hu",
    "intensity_mean",
    "intensity_std",
    "intensity_min",
    "intensity_max",
)


def dense_field(size: int, *, sigma: float, seed: int, chunk: int, folder: Path) -> dict[str, Any]:
    """Mask and intensity of a dense particle field, written tile by tile to Zarr."""
    rng = np.random.default_rng(seed)
    mask_z = zarr.open_array(
        folder / "mask.zarr", mode="w", shape=(size, size), chunks=(chunk, chunk), dtype=bool
    )
    img_z = zarr.open_array(
        folder / "image.zarr",
        mode="w",
        shape=(size, size),
        chunks=(chunk, chunk),
        dtype="float32",
    )
    pad = int(4 * sigma)
    # Smoothed noise computed in strips with a margin, so the field is seamless.
    strip = 2048
    for y0 in range(0, size, strip):
        y1 = min(size, y0 + strip)
        a, b = max(0, y0 - pad), min(size, y1 + pad)
        noise = np.random.default_rng([seed, y0]).standard_normal((b - a, size)).astype("f4")
        smooth = ndi.gaussian_filter(noise, sigma, mode="wrap")[y0 - a : y0 - a + (y1 - y0)]
        mask = smooth > 0.55 * smooth.std()
        mask_z[y0:y1] = mask
        img_z[y0:y1] = (mask * 0.6 + 0.2 + rng.normal(0, 0.05, mask.shape)).astype("f4")
    return {"mask": mask_z, "image": img_z}


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_size(size: int, args: argparse.Namespace, client: Any, work: Path) -> dict[str, Any]:
    from dask_image import ndmeasure
    from skimage.measure import regionprops_table as sk_table

    from mosaicflow.measure import label, regionprops_table

    folder = work / f"s{size}"
    folder.mkdir()
    field = dense_field(size, sigma=args.sigma, seed=0, chunk=args.chunk, folder=folder)
    mpx = size * size / 1e6
    mask = da.from_zarr(field["mask"])
    image = da.from_zarr(field["image"])
    res: dict[str, Any] = {"size": size, "mpx": mpx, "chunk": args.chunk}

    # -- labelling ----------------------------------------------------------------------
    out_z = zarr.open_array(
        folder / "labels.zarr",
        mode="w",
        shape=(size, size),
        chunks=(args.chunk, args.chunk),
        dtype="uint32",
    )
    lazy = label(mask, scratch=str(folder / "local.zarr"))
    with PeakRSS() as rss:
        _, t = timed(lambda: da.store(lazy, out_z, lock=False, compute=True))
    res["label_mosaicflow_s"] = t
    res["label_peak_worker_mib"] = rss.max_mib
    whole_mask = np.asarray(field["mask"][:])
    (ref, n), t = timed(lambda: ndi.label(whole_mask))
    res["label_scipy_s"] = t
    res["n_particles"] = int(n)
    stored = np.asarray(out_z[:])
    res["label_equal_scipy"] = bool(np.array_equal(stored, ref))
    del stored
    if size <= args.dask_image_max:
        (di_labels, di_n), _ = timed(lambda: ndmeasure.label(mask))
        (di_out, di_count), t = timed(lambda: client.compute([di_labels, di_n], sync=True))
        res["label_dask_image_s"] = t
        res["label_dask_image_count"] = int(di_count)
        del di_out

    if args.label_only:
        return res

    # -- tables -------------------------------------------------------------------------
    labels_lazy = da.from_zarr(out_z)
    if args.full_table_only:
        full = regionprops_table(labels_lazy, image)
        with PeakRSS() as rss:
            _, t = timed(
                lambda: client.compute(
                    full.to_parquet(folder / "particles.parquet", compute=False), sync=True
                )
            )
        res["table_full_parquet_s"] = t
        res["table_full_peak_worker_mib"] = rss.max_mib
        res["table_rows"] = int(pads.dataset(folder / "particles.parquet").count_rows())
        return res
    shared = regionprops_table(labels_lazy, image, properties=("basic", "shape", "intensity"))
    with PeakRSS() as rss:
        table, t = timed(lambda: client.compute(shared, sync=True))
    res["table_shared_s"] = t
    res["table_peak_worker_mib"] = rss.max_mib
    res["table_rows"] = len(table)
    full = regionprops_table(labels_lazy, image)
    full_path = folder / "particles.parquet"
    with PeakRSS() as rss:
        _, t = timed(lambda: client.compute(full.to_parquet(full_path, compute=False), sync=True))
    res["table_full_parquet_s"] = t
    res["table_full_peak_worker_mib"] = rss.max_mib
    whole_img = np.asarray(field["image"][:], dtype=np.float64)
    if n <= args.skimage_max_rows:
        sk, t = timed(lambda: sk_table(ref, whole_img, properties=SKIMAGE_SHARED))
        res["table_skimage_s"] = t
        mine = table.sort_values("label")
        res["table_max_rel_diff_skimage"] = float(
            max(
                np.max(
                    np.abs(mine[c].to_numpy() - sk[c])
                    / np.maximum(np.abs(sk[c]), 1e-12 * np.abs(sk[c]).max())
                )
                for c in ("area", "perimeter", "solidity", "feret_diameter_max", "intensity_std")
            )
        )
    if size <= args.dask_image_table_max:
        # dask-image's measurement functions cost grows with labels x pixels (each label is
        # a separate reduction over the image): time them on the first few labels.
        index = np.arange(1, min(n, args.dask_image_labels) + 1)
        res["table_dask_image_labels"] = len(index)
        lab_d = da.from_zarr(out_z)
        funcs = {
            "area": lambda: ndmeasure.area(image, lab_d, index),
            "center_of_mass": lambda: ndmeasure.center_of_mass(image, lab_d, index),
            "mean": lambda: ndmeasure.mean(image, lab_d, index),
            "minimum": lambda: ndmeasure.minimum(image, lab_d, index),
            "maximum": lambda: ndmeasure.maximum(image, lab_d, index),
            "standard_deviation": lambda: ndmeasure.standard_deviation(image, lab_d, index),
        }
        lazies = [f() for f in funcs.values()]
        try:
            _, t = timed(lambda: client.compute(lazies, sync=True))
            res["table_dask_image_s"] = t
        except Exception as exc:  # a worker running out of memory, as measured at 8192^2
            res["table_dask_image_error"] = f"{type(exc).__name__}: {exc}"
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sigma", type=float, default=2.5, help="blob scale, px")
    parser.add_argument(
        "--dask-image-max", type=int, default=8192, help="largest size labelled by dask-image"
    )
    parser.add_argument(
        "--dask-image-table-max",
        type=int,
        default=4096,
        help="largest size whose table is timed with dask-image's measurement functions",
    )
    parser.add_argument(
        "--dask-image-labels", type=int, default=20, help="labels timed with dask-image's table"
    )
    parser.add_argument(
        "--skimage-max-rows", type=int, default=400_000, help="skip the single-process table above"
    )
    parser.add_argument("--label-only", action="store_true", help="labelling only")
    parser.add_argument(
        "--full-table-only",
        action="store_true",
        help="labelling and the full table to Parquet only (the million-particle run)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "measure.json"))
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    results = []
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory(prefix="bench-measure-") as tmp,
    ):
        for size in args.sizes:
            r = run_size(size, args, client, Path(tmp))
            results.append(r)
            print(json.dumps(r, indent=1), flush=True)
    print()
    print(
        f"{'size':>6} {'Mpx':>6} {'particles':>9} | {'label Mpx/s':>11} {'vs dask-image':>13} "
        f"{'vs scipy':>8} | {'table rows/s':>12} {'vs skimage':>10} {'vs dask-image':>13} "
        f"{'full rows/s':>11} | {'peak MiB':>8}"
    )
    for r in results:
        lab = r["mpx"] / r["label_mosaicflow_s"]
        di = r.get("label_dask_image_s")
        rows = r["table_rows"] / r["table_shared_s"] if "table_shared_s" in r else float("nan")
        sk = r.get("table_skimage_s")
        dit = r.get("table_dask_image_s")
        dit_rows = r.get("table_dask_image_labels", 0) / dit if dit else None
        full = r["table_rows"] / r["table_full_parquet_s"] if "table_full_parquet_s" in r else 0
        peak = max(r["label_peak_worker_mib"], r.get("table_full_peak_worker_mib", 0))
        print(
            f"{r['size']:>6} {r['mpx']:>6.1f} {r['n_particles']:>9} | {lab:>11.1f} "
            f"{(di / r['label_mosaicflow_s'] if di else float('nan')):>12.1f}x "
            f"{r['label_scipy_s'] / r['label_mosaicflow_s']:>7.2f}x | {rows:>12.0f} "
            f"{(sk / r['table_shared_s'] if sk else float('nan')):>9.2f}x "
            f"{(rows / dit_rows if dit_rows else float('nan')):>12.0f}x "
            f"{full:>11.0f} | {peak:>8.0f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"workers": args.workers, "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
