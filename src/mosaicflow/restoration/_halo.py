"""The one blockwise driver every denoiser uses: an exact halo of real neighbouring pixels.

Inside the mosaic each chunk is extended by ``depth`` pixels of its neighbours; at the mosaic's
own border no halo is added, so the whole-image function's edge mode (``reflect``) acts there
exactly as on the whole image. Where the reach exceeds the image along an axis, that axis is
processed as one chunk (the halo could not be formed otherwise).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np

from mosaicflow import dispatch
from mosaicflow.errors import ConfigError

#: Largest halo (pixels per side) a denoiser may ask for. Each task holds a
#: ``(chunk + 2 * halo)^2`` block, so an unbounded reach would let a parameter typo exhaust
#: worker memory; callers may raise it explicitly with ``max_halo=``.
MAX_HALO_PX = 256


def blockwise_exact(
    data: da.Array,
    kernel: Callable[..., Any],
    depth: tuple[int, int],
    *,
    what: str,
    max_halo: int = MAX_HALO_PX,
    **kwargs: Any,
) -> da.Array:
    """Apply ``kernel(block, **kwargs)`` with a ``depth`` halo; float32 output, chunk type kept."""
    if max(depth) > max_halo:
        raise ConfigError(
            f"{what}: the parameters need a halo of {max(depth)} px per side, more than the "
            f"allowed {max_halo} px (each task would hold a (chunk + 2 x halo)^2 block); "
            f"use smaller parameters or pass max_halo={max(depth)} explicitly"
        )
    depths = {}
    for axis, d in enumerate(depth):
        if d >= data.shape[axis]:
            # The reach spans the whole axis: one chunk along it, no halo needed.
            data = data.rechunk({axis: -1})
            d = 0
        depths[axis] = d
    meta = dispatch.array_module(data).empty((0, 0), dtype=np.float32)
    if not any(depths.values()):
        return da.map_blocks(kernel, data, dtype=np.float32, meta=meta, **kwargs)
    return da.map_overlap(
        kernel, data, depth=depths, boundary="none", dtype=np.float32, meta=meta, **kwargs
    )


def positive_number(value: Any, what: str, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ConfigError naming the parameter."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{what}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def odd_int(value: Any, what: str, name: str, *, minimum: int = 1) -> int:
    """``value`` as an odd int >= ``minimum``, or a ConfigError naming the parameter."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
        or value % 2 == 0
    ):
        raise ConfigError(f"{what}: {name} must be an odd integer >= {minimum}, got {value!r}")
    return int(value)
