"""Driving the naive baseline (:mod:`mosaicflow.bench.naive`): its plan from the run's tile set,
whether the mosaic fits in memory, and its runs in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from mosaicflow.config import Config
from mosaicflow.io.remote import is_url
from mosaicflow.io.tiles import TileSet
from mosaicflow.selection import min_diameter_nm

#: The script run in a fresh interpreter (never imported here, so nothing of mosaicflow's
#: reaches its memory).
SCRIPT = Path(__file__).with_name("naive.py")
#: Bytes per mosaic pixel the baseline holds at once besides the mosaic itself: the float32
#: smoothed copy, the mask and the int32 labels (maps-48, 50.6 Mpx of uint8: 580 MiB measured
#: peak, 70 MiB of it the interpreter).
BYTES_PER_PX = 4 + 1 + 4
#: The interpreter with NumPy, SciPy and scikit-image imported, the table and a margin.
FIXED_BYTES = 256 * 2**20
#: The baseline runs when its estimate is at most this share of the memory available.
MAX_SHARE = 0.8


def plan(tileset: TileSet, config: Config) -> dict[str, Any]:
    """The naive baseline's input (see :func:`mosaicflow.bench.naive.run`) for a tile set read
    by mosaicflow: nominal origins (``y_px``, ``x_px``), the tile size after the data-bar crop,
    and the run's Gaussian sigma, polarity, connectivity and smallest listed diameter."""
    pixel = tileset.pixel_size_nm
    return {
        "tiles": [
            [str(p), float(y), float(x)]
            for p, y, x in zip(
                tileset.tiles["path"], tileset.tiles["y_px"], tileset.tiles["x_px"], strict=True
            )
        ],
        "tile_shape": [int(v) for v in tileset.tile_shape],
        "dtype": str(np.dtype(tileset.dtype)),
        "sigma": float(config.denoise.sigma),
        "polarity": config.segment.polarity,
        "connectivity": int(config.label.connectivity),
        "min_diameter_px": min_diameter_nm(config.measure.min_size, pixel) / float(min(pixel)),
    }


def mosaic_shape(tileset: TileSet) -> tuple[int, int]:
    """The shape of the mosaic the baseline builds: tiles at their rounded nominal origins."""
    h, w = tileset.tile_shape
    y = np.rint(tileset.tiles["y_px"].to_numpy(float)).astype(int)
    x = np.rint(tileset.tiles["x_px"].to_numpy(float)).astype(int)
    return int(y.max()) + int(h), int(x.max()) + int(w)


def _cgroup_available() -> int | None:
    """Memory this process's cgroup may still use (v2, then v1), or None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory() -> int:
    """Bytes a new process may use now: the system's available memory, or less where a cgroup
    limit leaves less."""
    available = int(psutil.virtual_memory().available)
    cgroup = _cgroup_available()
    return min(available, cgroup) if cgroup is not None else available


def decide(tileset: TileSet) -> dict[str, Any]:
    """Whether the naive baseline can run for this tile set, and why not if it cannot.

    Returns
    -------
    dict
        ``run`` (bool), ``reason`` (why it is skipped, or None), ``mosaic_shape``,
        ``mosaic_bytes``, ``estimate_bytes`` (the baseline's expected peak) and
        ``available_bytes``.
    """
    shape = mosaic_shape(tileset)
    pixels = shape[0] * shape[1]
    mosaic_bytes = pixels * np.dtype(tileset.dtype).itemsize
    estimate = mosaic_bytes + pixels * BYTES_PER_PX + FIXED_BYTES
    available = available_memory()
    out: dict[str, Any] = {
        "run": True,
        "reason": None,
        "mosaic_shape": list(shape),
        "mosaic_bytes": int(mosaic_bytes),
        "estimate_bytes": int(estimate),
        "available_bytes": int(available),
    }
    if any(is_url(str(p)) for p in tileset.tiles["path"]):
        out.update(run=False, reason="the tiles are at URLs; the baseline reads local files")
    elif estimate > MAX_SHARE * available:
        out.update(
            run=False,
            reason=(
                f"the mosaic does not fit in memory: the baseline would hold about "
                f"{estimate / 2**30:.1f} GiB ({mosaic_bytes / 2**30:.1f} GiB of mosaic plus "
                f"{BYTES_PER_PX} bytes per pixel of smoothed copy, mask and labels), more than "
                f"{MAX_SHARE:.0%} of the {available / 2**30:.1f} GiB available"
            ),
        )
    return out


def run_once(naive_plan: dict[str, Any]) -> dict[str, Any]:
    """One run of the baseline in a fresh interpreter.

    Returns
    -------
    dict
        The script's result (:func:`mosaicflow.bench.naive.run`), or ``{"failed": message}``
        when the process failed (out of memory, a tile it cannot read).
    """
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        input=json.dumps(naive_plan),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return {"failed": f"exit status {proc.returncode}: {' | '.join(tail)}"}
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {"failed": f"unreadable output: {proc.stdout[-200:]!r}"}
