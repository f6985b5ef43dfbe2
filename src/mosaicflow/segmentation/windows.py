"""The global window grid and the blending weights of windowed inference (pure functions).

The windows sit where MONAI's ``sliding_window_inference`` puts them on the whole image: steps of
``int(window * (1 - overlap))`` from the top-left corner, the last window of each row and column
moved back to end at the image edge, and an image smaller than the window padded with zeros on
both sides, as MONAI pads. The weights are MONAI's importance map, bit for bit.

torch is imported only to compute the weights, so importing this module is cheap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: The blending modes of :func:`importance_map`.
BLENDS = ("gaussian", "constant")


@dataclass(frozen=True)
class WindowGrid:
    """Window positions on a whole image, in the coordinates of the (possibly) padded image.

    ``pad`` is the zero padding before the image on each axis (non-zero only on an axis
    shorter than the window); image pixel ``(y, x)`` is padded pixel ``(y + pad[0], x + pad[1])``.
    """

    shape: tuple[int, int]
    window: int
    overlap: float
    padded: tuple[int, int]
    pad: tuple[int, int]
    starts_y: np.ndarray
    starts_x: np.ndarray

    @property
    def n_windows(self) -> int:
        """Number of windows on the grid."""
        return len(self.starts_y) * len(self.starts_x)

    @property
    def overhead(self) -> float:
        """Pixels evaluated by the model over image pixels (1.0 would be no overlap at all)."""
        return self.n_windows * self.window**2 / (self.shape[0] * self.shape[1])


def _axis_starts(size: int, window: int, overlap: float) -> np.ndarray:
    # size >= window here. Same rule as MONAI: a full-size window steps by itself; otherwise
    # step int(window * (1 - overlap)) (at least 1) until a window reaches the edge.
    step = window if size == window else max(int(window * (1 - overlap)), 1)
    n = 1
    while (n - 1) * step + window < size:
        n += 1
    return np.minimum(np.arange(n, dtype=np.int64) * step, size - window)


def window_grid(shape: tuple[int, int], window: int, overlap: float) -> WindowGrid:
    """The global window grid of an image, as MONAI's ``sliding_window_inference`` lays it.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` of the image.
    window : int
        Square window side in pixels.
    overlap : float
        Fraction of the window shared by neighbours, in [0, 1).

    Returns
    -------
    WindowGrid
        The window starts along each axis, in the coordinates of the image zero-padded to at
        least ``window`` on each axis (``(window - size) // 2`` before it).
    """
    padded = tuple(max(s, window) for s in shape)
    pad = tuple((p - s) // 2 for p, s in zip(padded, shape, strict=True))
    return WindowGrid(
        shape=(int(shape[0]), int(shape[1])),
        window=window,
        overlap=overlap,
        padded=(int(padded[0]), int(padded[1])),
        pad=(int(pad[0]), int(pad[1])),
        starts_y=_axis_starts(padded[0], window, overlap),
        starts_x=_axis_starts(padded[1], window, overlap),
    )


@functools.lru_cache(maxsize=8)
def cached_importance_map(window: int, blend: str, sigma_scale: float) -> np.ndarray:
    """:func:`importance_map`, computed once per process and returned read-only (shared)."""
    import torch

    if blend == "constant":
        weights = torch.ones((window, window), dtype=torch.float32)
    else:
        # separable Gaussian centred on the window, sigma = sigma_scale * window, evaluated in
        # float32 with torch so the weights are bit-identical to MONAI's importance map
        sigma = sigma_scale * window
        half = (window - 1) / 2.0
        t = torch.arange(-half, half + 1, dtype=torch.float32)
        g = torch.exp(t**2 / (-2 * sigma**2))
        weights = g.unsqueeze(-1) * g[None]
    # no weight may be zero: the blend divides by the sum of weights (MONAI's clamp)
    floor = max(float(weights.min()), 1e-3)
    out = weights.clamp(min=floor).numpy()
    out.setflags(write=False)
    return out


def importance_map(window: int, blend: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights of one window, as MONAI's ``compute_importance_map`` computes them.

    Parameters
    ----------
    window : int
        Square window side in pixels.
    blend : {"gaussian", "constant"}
        ``gaussian``: ``exp(-d^2 / (2 sigma^2))`` per axis with ``sigma = sigma_scale * window``
        and ``d`` the distance to the window centre, multiplied across the axes (peak 1 for an
        odd window, not renormalised); ``constant``: ones.
    sigma_scale : float
        Gaussian sigma as a fraction of the window.

    Returns
    -------
    numpy.ndarray
        float32 ``(window, window)``, a fresh writable copy. Values are clamped from below to
        ``max(min, 1e-3)`` so that every pixel of a window keeps a non-zero weight.
    """
    return np.array(cached_importance_map(int(window), blend, float(sigma_scale)))
