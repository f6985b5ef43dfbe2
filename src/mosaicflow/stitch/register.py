"""Pairwise registration of neighbouring tiles: the translation between the overlap strips of
every pair of tiles whose nominal rectangles overlap, with a quality score per pair.

Method (``docs/STITCHING.md``): each pair's nominal overlap rectangle is widened by the allowed
shift and cut from both tiles; an exact normalised cross-correlation (NCC) over every integer
shift with enough common pixels (Padfield's masked NCC, computed with FFTs) gives the integer
peak inside the allowed window, and scikit-image's ``phase_cross_correlation`` with upsampling on
the common region at that shift gives the sub-pixel part. The quality is the NCC at the peak.
A few random non-adjacent tile pairs are scored the same way (``kind == "null"``): their scores
are what chance alone reaches, which ``solve_positions`` uses to reject weak pairs.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from mosaicflow.io import TileSet, read_tile

PAIR_COLUMNS = (
    "i",
    "j",
    "kind",
    "dy",
    "dx",
    "nominal_dy",
    "nominal_dx",
    "quality",
    "overlap_px",
)


def default_max_shift(tile_shape: tuple[int, int]) -> float:
    """The default allowed shift: a tenth of the smaller tile side, at least 16 px."""
    return float(max(16.0, 0.1 * min(tile_shape)))


def candidate_pairs(tileset: TileSet) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j`` (row order of ``tileset.tiles``), of tiles whose nominal
    rectangles overlap (grid neighbours right and down, and diagonals where corners overlap)."""
    pos = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    h, w = tileset.tile_shape
    out: list[tuple[int, int]] = []
    for i in range(len(pos)):
        d = pos[i + 1 :] - pos[i]
        hit = np.flatnonzero((np.abs(d[:, 0]) < h) & (np.abs(d[:, 1]) < w))
        out.extend((i, i + 1 + int(k)) for k in hit)
    return out


def _strips(
    nominal: np.ndarray, tile_shape: tuple[int, int], margin: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Local windows of tile i and tile j: the nominal overlap of j at ``nominal`` (offset of
    j from i, integer) widened by ``margin`` and clipped to each tile."""
    h, w = tile_shape
    dy, dx = int(nominal[0]), int(nominal[1])
    y0, y1 = max(0, dy) - margin, min(h, dy + h) + margin  # overlap in i's frame, widened
    x0, x1 = max(0, dx) - margin, min(w, dx + w) + margin
    win_i = (slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w)))
    win_j = (slice(max(y0 - dy, 0), min(y1 - dy, h)), slice(max(x0 - dx, 0), min(x1 - dx, w)))
    return win_i, win_j


def _xcorr(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Full linear cross-correlation ``c[k] = sum_m a[m + s] b[m]`` with ``s = k - (b.shape-1)``."""
    fa = sfft.rfftn(a, shape)
    fb = sfft.rfftn(b[::-1, ::-1], shape)
    return sfft.irfftn(fa * fb, shape)[: a.shape[0] + b.shape[0] - 1, : a.shape[1] + b.shape[1] - 1]


def masked_ncc(ref: np.ndarray, mov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NCC of ``ref`` and ``mov`` over their common pixels for every integer shift.

    Returns ``(ncc, count)``, both of shape ``ref.shape + mov.shape - 1``; index ``k`` is the
    shift ``s = k - (mov.shape - 1)`` at which ``mov[m]`` lies on ``ref[m + s]``.
    """
    shape = tuple(sfft.next_fast_len(int(n), real=True) for n in np.add(ref.shape, mov.shape))
    one_r, one_m = np.ones_like(ref), np.ones_like(mov)
    n = np.rint(_xcorr(one_r, one_m, shape))
    sr = _xcorr(ref, one_m, shape)
    sm = _xcorr(one_r, mov, shape)
    sr2 = _xcorr(ref * ref, one_m, shape)
    sm2 = _xcorr(one_r, mov * mov, shape)
    srm = _xcorr(ref, mov, shape)
    safe = np.maximum(n, 1)
    var_r = np.maximum(sr2 - sr * sr / safe, 0)
    var_m = np.maximum(sm2 - sm * sm / safe, 0)
    denom = np.sqrt(var_r * var_m)
    eps = 1e-9 * max(float(denom.max()), 1e-30)
    ncc = np.where(denom > eps, (srm - sr * sm / safe) / np.maximum(denom, eps), 0.0)
    return ncc, n


def _read(tileset: TileSet, path: Any) -> np.ndarray:
    crop = int(getattr(tileset, "crop_bottom", 0) or 0)
    extra = {"crop_bottom": crop} if crop else {}
    return read_tile(path, shape=tileset.tile_shape, dtype=tileset.dtype, **extra)


def _prefilter(image: np.ndarray, sigma: float | None) -> np.ndarray:
    image = image.astype(np.float64)
    if not sigma:
        return image
    return -ndimage.gaussian_laplace(image, sigma)  # LoG: whitens and removes the gain/offset


def _register_one(
    tileset: TileSet,
    i: int,
    j: int,
    nominal: np.ndarray,
    *,
    max_shift: float,
    upsample: int,
    min_overlap: float,
    log_sigma: float | None,
) -> tuple[float, float, float, int]:
    """Offset (dy, dx) of tile j from tile i, NCC quality and common pixel count of one pair."""
    paths = tileset.tiles["path"].to_numpy()
    margin = int(np.ceil(max_shift))
    base = np.rint(nominal).astype(int)
    win_i, win_j = _strips(base, tileset.tile_shape, margin)
    ref = _prefilter(_read(tileset, paths[i]), log_sigma)[win_i]
    mov = _prefilter(_read(tileset, paths[j]), log_sigma)[win_j]
    if ref.size == 0 or mov.size == 0:
        return np.nan, np.nan, np.nan, 0
    ncc, count = masked_ncc(ref, mov)
    # offset = a0 + s - b0 (a0, b0: window origins in tiles i and j)
    a0 = np.array([win_i[0].start, win_i[1].start])
    b0 = np.array([win_j[0].start, win_j[1].start])
    ky, kx = np.indices(ncc.shape)
    sy, sx = ky - (mov.shape[0] - 1), kx - (mov.shape[1] - 1)
    offy, offx = a0[0] + sy - b0[0], a0[1] + sx - b0[1]
    nominal_overlap = max(0, tileset.tile_shape[0] - abs(base[0])) * max(
        0, tileset.tile_shape[1] - abs(base[1])
    )
    allowed = (np.hypot(offy - nominal[0], offx - nominal[1]) <= max_shift) & (
        count >= max(16.0, min_overlap * nominal_overlap)
    )
    if not allowed.any():
        return np.nan, np.nan, np.nan, 0
    score = np.where(allowed, ncc, -np.inf)
    k = np.unravel_index(int(np.argmax(score)), score.shape)
    s = np.array([sy[k], sx[k]])
    # common region at the integer shift: mov[m] on ref[m + s]
    r0 = np.maximum(s, 0)
    m0 = np.maximum(-s, 0)
    ext = np.minimum(np.array(ref.shape) - r0, np.array(mov.shape) - m0)
    ref_c = ref[r0[0] : r0[0] + ext[0], r0[1] : r0[1] + ext[1]]
    mov_c = mov[m0[0] : m0[0] + ext[0], m0[1] : m0[1] + ext[1]]
    sub = np.zeros(2)
    if upsample == 0:  # parabola through the NCC peak and its neighbours, per axis
        for ax in range(2):
            lo, hi = list(k), list(k)
            lo[ax] -= 1
            hi[ax] += 1
            if lo[ax] >= 0 and hi[ax] < ncc.shape[ax]:
                c0, cm, cp = ncc[k], ncc[tuple(lo)], ncc[tuple(hi)]
                den = cm - 2 * c0 + cp
                if den < 0:
                    sub[ax] = float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))
    elif upsample > 1 and min(ext) >= 4:
        # shift that moves mov_c onto ref_c: mov_c(m) = ref_c(m + t) gives -t
        shift, _, _ = phase_cross_correlation(ref_c, mov_c, upsample_factor=upsample)
        if np.all(np.abs(shift) <= 1.0):
            sub = -np.asarray(shift, dtype=float)
    off = a0 + s + sub - b0
    return float(off[0]), float(off[1]), float(ncc[k]), int(count[k])


def register_pairs(
    tileset: TileSet,
    *,
    max_shift_px: float | None = None,
    upsample: int = 10,
    min_overlap: float = 0.25,
    log_sigma: float | None = 1.0,
    n_null: int = 8,
    seed: int = 0,
    compute: bool = True,
) -> Any:
    """Measure the translation between every pair of overlapping tiles.

    Parameters
    ----------
    tileset : TileSet
        Tiles with nominal positions (``tileset.tiles[["y_px", "x_px"]]``).
    max_shift_px : float, optional
        Largest allowed distance (px) between the measured and the nominal offset of a pair.
        Default: a tenth of the smaller tile side, at least 16 px.
    upsample : int
        Sub-pixel upsampling factor of ``phase_cross_correlation`` (1: integer shifts).
    min_overlap : float
        Smallest common area at a candidate shift, as a fraction of the nominal overlap area.
    log_sigma : float or None
        Laplacian-of-Gaussian pre-filter (px); ``None`` or 0: raw pixels.
    n_null : int
        Number of random non-adjacent tile pairs scored as the chance level (``kind ==
        "null"``); 0: none.
    seed : int
        Seed of the random choice of null pairs.
    compute : bool
        ``True``: compute (one Dask task per pair, on the current scheduler) and return a
        pandas DataFrame; ``False``: return the Dask delayed DataFrame-building object.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``i``, ``j`` (row positions in ``tileset.tiles``), ``kind``
        (``"neighbour"`` or ``"null"``), measured offset ``dy``, ``dx`` of tile j from tile i in
        mosaic pixels (NaN where nothing could be measured), ``nominal_dy``, ``nominal_dx``,
        ``quality`` (NCC at the peak) and ``overlap_px`` (common pixels at the peak).
    """
    max_shift = default_max_shift(tileset.tile_shape) if max_shift_px is None else max_shift_px
    if max_shift <= 0:
        raise ValueError(f"register_pairs: max_shift_px must be positive, got {max_shift_px!r}")
    if upsample < 0:
        raise ValueError(f"register_pairs: upsample must be >= 0, got {upsample!r}")
    pos = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    pairs = candidate_pairs(tileset)
    jobs = [(i, j, "neighbour", pos[j] - pos[i]) for i, j in pairs]
    jobs += [
        (i, k, "null", pos[j] - pos[i]) for i, j, k in _null_pairs(tileset, pairs, n_null, seed)
    ]
    opts = {
        "max_shift": max_shift,
        "upsample": upsample,
        "min_overlap": min_overlap,
        "log_sigma": log_sigma,
    }
    tasks = [
        dask.delayed(_register_one, pure=True)(tileset, i, j, nom, **opts) for i, j, _, nom in jobs
    ]

    def build(results: list[tuple[float, float, float, int]]) -> pd.DataFrame:
        rows = [
            (i, j, kind, dy, dx, nom[0], nom[1], q, n)
            for (i, j, kind, nom), (dy, dx, q, n) in zip(jobs, results, strict=True)
        ]
        frame = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
        return frame.astype({"i": np.int64, "j": np.int64, "overlap_px": np.int64})

    lazy = dask.delayed(build)(tasks)
    return lazy.compute() if compute else lazy


def _null_pairs(
    tileset: TileSet, pairs: list[tuple[int, int]], n_null: int, seed: int
) -> list[tuple[int, int, int]]:
    """``(i, j, k)``: the geometry of pair ``(i, j)`` with tile j replaced by a tile k that
    overlaps neither i nor j (nominally) and is not i's grid neighbour."""
    if n_null <= 0 or not pairs:
        return []
    pos = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    h, w = tileset.tile_shape
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int, int]] = []
    for _ in range(50 * n_null):
        if len(out) >= n_null:
            break
        i, j = pairs[int(rng.integers(len(pairs)))]
        k = int(rng.integers(len(pos)))
        far = [
            abs(pos[k, 0] - pos[t, 0]) >= 1.5 * h or abs(pos[k, 1] - pos[t, 1]) >= 1.5 * w
            for t in (i, j)
        ]
        if all(far):
            out.append((i, j, k))
    return out
