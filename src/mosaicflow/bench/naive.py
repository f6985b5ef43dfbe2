"""The naive single-process baseline of the benchmark: the whole mosaic held in one array, then
SciPy and scikit-image on it, step by step.

Run as a script in a fresh interpreter (``python naive.py < plan.json``) so that its memory is
its own: it imports only NumPy, SciPy, scikit-image and tifffile (Pillow for other formats),
never mosaicflow or Dask. It reads a JSON plan on stdin (:func:`run` documents it) and writes
one JSON object on stdout.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import regionprops_table

#: The measured properties (besides ``label``), as a person would list them for a particle table.
PROPERTIES = (
    "area",
    "bbox",
    "centroid",
    "equivalent_diameter_area",
    "perimeter",
    "eccentricity",
    "solidity",
    "orientation",
    "axis_major_length",
    "axis_minor_length",
    "intensity_mean",
    "intensity_max",
    "intensity_min",
    "feret_diameter_max",
    "moments_hu",
    "euler_number",
)
TIFF_SUFFIXES = (".tif", ".tiff")
LUMINANCE = (0.299, 0.587, 0.114)


def peak_rss_bytes() -> int:
    """Peak resident memory of the running process so far, in bytes.

    Linux's ``VmHWM`` where there is one: ``ru_maxrss`` keeps the peak of the process image
    before ``exec``, i.e. of the forked parent, which is not this interpreter's.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def read_image(path: str) -> np.ndarray:
    """One tile as a 2-D grey array: tifffile for TIFF, Pillow otherwise; RGB to luminance."""
    if path.lower().endswith(TIFF_SUFFIXES):
        data = np.asarray(tifffile.imread(path, key=0))
    else:
        from PIL import Image

        with Image.open(path) as img:
            data = np.asarray(img)
    if data.ndim == 3:
        data = (data[..., :3].astype(np.float64) @ np.asarray(LUMINANCE)).astype(data.dtype)
    return data


def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Place the tiles, smooth, threshold, label and measure, timing each step.

    Parameters
    ----------
    plan : dict
        ``tiles``: ``[path, y_px, x_px]`` per tile (nominal top-left in mosaic pixels);
        ``tile_shape``: ``[height, width]`` kept of each tile (the rows below are the data bar);
        ``dtype``; ``sigma`` (Gaussian, px); ``polarity`` (``bright``, ``dark`` or ``auto``: the
        smaller side of the threshold); ``connectivity`` (1 or 2); ``min_diameter_px`` (objects
        with a smaller equivalent diameter are not counted as particles).

    Returns
    -------
    dict
        ``steps`` (seconds of ``place``, ``gaussian``, ``otsu``, ``label``, ``table`` and
        ``total``), ``n_objects`` (labels), ``n_particles`` (those at least
        ``min_diameter_px`` across), ``threshold``, ``polarity``, ``mosaic_shape``,
        ``properties``, ``columns`` (of the table), ``rss_after_imports_bytes`` and
        ``peak_rss_bytes``.

    Notes
    -----
    Tiles are pasted at their nominal origins, later tiles over earlier ones: no registration,
    no blending, no brightness correction. Memory: the mosaic, its float32 smoothed copy, the
    mask and the int32 labels are all held at once.
    """
    rss_imports = peak_rss_bytes()
    height, width = (int(v) for v in plan["tile_shape"])
    tiles = [(str(p), round(float(y)), round(float(x))) for p, y, x in plan["tiles"]]
    steps: dict[str, float] = {}
    start = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = round(now - t, 4)
        t = now

    shape = (max(y for _, y, _ in tiles) + height, max(x for _, _, x in tiles) + width)
    mosaic = np.zeros(shape, dtype=np.dtype(plan["dtype"]))
    for path, y, x in tiles:
        mosaic[y : y + height, x : x + width] = read_image(path)[:height, :width]
    lap("place")
    smooth = ndimage.gaussian_filter(mosaic, float(plan["sigma"]), output=np.float32)
    lap("gaussian")
    threshold = float(threshold_otsu(smooth))
    polarity = plan.get("polarity", "auto")
    mask = smooth > threshold
    if polarity == "dark" or (polarity == "auto" and mask.mean() > 0.5):
        polarity = "dark"
        np.logical_not(mask, out=mask)
    else:
        polarity = "bright"
    lap("otsu")
    structure = ndimage.generate_binary_structure(2, int(plan.get("connectivity", 1)))
    labels, n_objects = ndimage.label(mask, structure=structure)
    lap("label")
    table = regionprops_table(labels, intensity_image=mosaic, properties=("label", *PROPERTIES))
    lap("table")
    steps["total"] = round(time.perf_counter() - start, 4)
    diameters = table["equivalent_diameter_area"]
    return {
        "steps": steps,
        "n_objects": int(n_objects),
        "n_particles": int(np.count_nonzero(diameters >= float(plan["min_diameter_px"]))),
        "threshold": threshold,
        "polarity": polarity,
        "mosaic_shape": [int(shape[0]), int(shape[1])],
        "properties": list(PROPERTIES),
        "columns": len(table),
        "rss_after_imports_bytes": rss_imports,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def main() -> int:
    """Read the plan on stdin, run it, write the result on stdout."""
    json.dump(run(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
