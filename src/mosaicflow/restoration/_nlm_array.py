"""Fast non-local means written on the array API, for CuPy chunks (cuCIM has no NLM).

The same computation as scikit-image's fast 2-D mode (Darbon et al. 2008; Froment 2014), so the
GPU path gives the CPU path's results, but organised for a data-parallel device: one pass of
whole-array operations per patch shift instead of scalar loops. It runs unchanged on NumPy
arrays, which is how the CPU test suite checks it against scikit-image.

For a pixel ``q`` and every shift ``t`` with ``|t_row|, |t_col| <= patch_distance``:

* the patch distance is ``sum over u in (-o, o]^2 of (x[q+u] - x[q+t+u])^2 - 2 sigma^2``, with
  ``o = patch_size // 2`` (scikit-image's integral-image corners give this half-open box of side
  ``2 o``), clipped at 0 and divided by ``h^2 patch_size^2``;
* the weight is ``fast_exp(-distance)``, zero beyond a distance of 5, where ``fast_exp`` is
  Schraudolph's approximation of ``exp`` that scikit-image uses (reproduced bit for bit below:
  it is ~6 % below ``exp`` at 0, so using the true exponential would change the result);
* the pixel itself counts once, with weight ``fast_exp(0)``.

Each unordered pair of pixels is visited once (half the shifts), and its weight is added at both
ends, as scikit-image does. Arithmetic is float64 throughout; box sums come from cumulative sums
of the squared differences.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mosaicflow import dispatch
from mosaicflow.errors import ConfigError

# Schraudolph (1999): exp(y) ~ the double whose high 32 bits are int(A*y) + B and low bits 0,
# with A = 2^20 / ln 2 and B = 1023 * 2^20 - 60801 (the minimum-RMS-error constant).
_EXP_A = 1512775.3951951856938
_EXP_B = 1072632447
_DISTANCE_CUTOFF = 5.0


def fast_exp(y: Any) -> Any:
    """Schraudolph's approximation of ``exp(y)`` for a float64 array ``y`` (NumPy or CuPy)."""
    xp = dispatch.array_module(y)
    high = (_EXP_A * y).astype(xp.int64) + _EXP_B  # astype truncates toward zero, like C's cast
    return (high << 32).view(xp.float64)


def _box_sum(values: Any, half: int, out_shape: tuple[int, int]) -> Any:
    """Sums over the boxes ``(i - half, i + half] x (j - half, j + half]``, for the positions
    ``half - 1 .. half - 1 + out_shape`` of ``values`` (the first box starts at row/col 0)."""
    xp = dispatch.array_module(values)
    side = 2 * half
    c = xp.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=xp.float64)
    c[1:, 1:] = values.cumsum(axis=0).cumsum(axis=1)
    n, m = out_shape
    return (
        c[side : side + n, side : side + m]
        - c[:n, side : side + m]
        - (c[side : side + n, :m] - c[:n, :m])
    )


def denoise_nl_means(
    image: Any,
    patch_size: int = 7,
    patch_distance: int = 11,
    h: float = 0.1,
    fast_mode: bool = True,
    sigma: float = 0.0,
    *,
    preserve_range: bool = False,
    channel_axis: int | None = None,
) -> Any:
    """Fast-mode non-local means of a 2-D NumPy or CuPy array (scikit-image's signature).

    Only the fast mode of a 2-D single-channel float image is implemented; integer images need
    ``preserve_range=True`` (their values are used as they are). Returns float64.
    """
    if not fast_mode:
        raise ConfigError(
            "denoise_nl_means: fast_mode=False has no GPU implementation; use fast_mode=True or "
            "CPU chunks"
        )
    if channel_axis is not None or image.ndim != 2:
        raise ConfigError(
            f"denoise_nl_means: expected a 2-D single-channel image, got {image.shape}"
        )
    xp = dispatch.array_module(image)
    if xp.issubdtype(image.dtype, xp.integer) and not preserve_range:
        raise ConfigError("denoise_nl_means: integer images need preserve_range=True on this path")
    s = patch_size + 1 if patch_size % 2 == 0 else patch_size
    o, d = s // 2, int(patch_distance)
    x = image.astype(xp.float64)
    rows, cols = x.shape
    h2s2 = float(h) * float(h) * s * s
    var2 = 2.0 * float(sigma) * float(sigma)
    # Neighbours reach d, their boxes o more (one more row/col for the half-open box start).
    pad = 2 * d + o + 1
    padded = xp.pad(x, pad, mode="reflect")
    self_weight = float(fast_exp(np.zeros(1))[0])
    num = self_weight * x
    den = xp.full(x.shape, self_weight, dtype=xp.float64)
    # Weights are evaluated at positions p covering the image and the image shifted back by t:
    # rows/cols -d .. size + d of the image.
    ext = (rows + 2 * d, cols + 2 * d)
    for t_row in range(-d, d + 1):
        for t_col in range(0, d + 1):
            if t_col == 0 and t_row <= 0:
                continue  # each unordered pair once: t_col > 0, or t_col == 0 and t_row > 0
            # Squared differences between p and p + t over a window that holds every box
            # (p - o, p + o] for p in the extended range.
            r0, c0 = pad - d - o + 1, pad - d - o + 1
            nr, nc = ext[0] + 2 * o - 1, ext[1] + 2 * o - 1
            a = padded[r0 : r0 + nr, c0 : c0 + nc]
            b = padded[r0 + t_row : r0 + t_row + nr, c0 + t_col : c0 + t_col + nc]
            diff = a - b
            sq = diff * diff - var2
            dist = xp.maximum(_box_sum(sq, o, ext), 0.0) / h2s2
            w = xp.where(dist > _DISTANCE_CUTOFF, 0.0, fast_exp(-dist))
            # Pixel q (image coords) takes w(q, q+t) * x[q+t] and w(q-t, q) * x[q-t].
            w_fwd = w[d : d + rows, d : d + cols]
            w_bwd = w[d - t_row : d - t_row + rows, d - t_col : d - t_col + cols]
            x_fwd = padded[pad + t_row : pad + t_row + rows, pad + t_col : pad + t_col + cols]
            x_bwd = padded[pad - t_row : pad - t_row + rows, pad - t_col : pad - t_col + cols]
            num += w_fwd * x_fwd + w_bwd * x_bwd
            den += w_fwd + w_bwd
    return num / den
