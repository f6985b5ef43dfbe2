"""Pairwise registration of neighbouring tiles: the translation between the overlap strips of
every pair of tiles whose nominal rectangles overlap, with a quality score per pair.

Method (``docs/STITCHING.md``): each pair's nominal overlap rectangle is widened by the allowed
shift and read from both tiles (only those strips and the pre-filter's halo are read, through
``mosaicflow.io.regions``); an exact normalised cross-correlation (NCC) over every integer
shift with enough common pixels (Padfield's masked NCC, computed with FFTs) gives the integer
peak inside the allowed window (only those shifts are computed), and a parabola through the
peak gives the sub-pixel part. The quality is the NCC at the peak.
A few random non-adjacent tile pairs are scored the same way (``kind == "null"``): their scores
are what chance alone reaches, which ``solve_positions`` uses to reject weak pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dask
import numpy as np
import pandas as pd
from scipy import fft as sfft

from mosaicflow import dispatch
from mosaicflow._shared.batches import batches
from mosaicflow.errors import ConfigError
from mosaicflow.io import TileSet
from mosaicflow.io.regions import read_tile_region
from mosaicflow.stitch import log_filter

DEVICES = ("cpu", "gpu", "auto")
#: Tile pairs registered by one Dask task (a pair takes about 20 ms on one core; see
#: :mod:`mosaicflow._shared.batches`): a grid of 120 tiles still gives over 50 tasks.
PAIRS_PER_TASK = 8

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
    "quality_nominal",
)


def default_max_shift(tile_shape: tuple[int, int]) -> float:
    """The default allowed shift: a tenth of the smaller tile side, at least 16 px."""
    return float(max(16.0, 0.1 * min(tile_shape)))


def candidate_pairs(tileset: TileSet, corners: bool = True) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j`` (row order of ``tileset.tiles``), of tiles whose nominal
    rectangles overlap: grid neighbours right and down and, with ``corners``, diagonals where
    corners overlap (:func:`is_corner_pair`)."""
    pos = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    h, w = tileset.tile_shape
    out: list[tuple[int, int]] = []
    for i in range(len(pos)):
        d = pos[i + 1 :] - pos[i]
        hit = np.flatnonzero((np.abs(d[:, 0]) < h) & (np.abs(d[:, 1]) < w))
        out.extend(
            (i, i + 1 + int(k))
            for k in hit
            if corners or not is_corner_pair(d[k], tileset.tile_shape)
        )
    return out


def is_corner_pair(offset: Any, tile_shape: tuple[int, int]) -> bool:
    """Whether two tiles ``offset`` (dy, dx) apart overlap only at a corner: their common
    rectangle spans less than half a tile along both axes (a grid's diagonal neighbours; side
    neighbours share at least half of a side, whatever the stage's jitter)."""
    h, w = tile_shape
    return bool(h - abs(offset[0]) < h / 2 and w - abs(offset[1]) < w / 2)


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


def _box_sums(image: Any, rows: tuple[Any, Any], cols: tuple[Any, Any], xp: Any) -> Any:
    """Sums of ``image`` over the rectangles ``rows[0][a]:rows[1][a]`` x
    ``cols[0][b]:cols[1][b]`` for every ``(a, b)``, from a summed-area table taken only at the
    boundaries the rectangles use: the image's sums between consecutive boundaries along the
    axis with fewer of them per pixel, then along the other (one pass over the image, added in
    float64),
    their cumulative sums, and the rectangles' four corners looked up separably."""
    n, m = image.shape
    if len(xp.unique(rows[0])) * m > len(xp.unique(cols[0])) * n:  # fewer bands first
        return _box_sums(image.T, cols, rows, xp).T
    prefix, starts_at, stops_at = [], [], []
    for axis, (lo, hi) in enumerate((rows, cols)):
        bounds = xp.unique(xp.concatenate((lo, hi, xp.zeros(1, dtype=lo.dtype))))
        starts = bounds[bounds < image.shape[axis]]  # where each summed band begins
        prefix.append(starts)
        ends = xp.concatenate((starts, xp.asarray([image.shape[axis]], dtype=starts.dtype)))
        starts_at.append(xp.searchsorted(ends, lo))
        stops_at.append(xp.searchsorted(ends, hi))
    if n and m:
        bands = _band_sums(_band_sums(image, prefix[0], 0, xp), prefix[1], 1, xp)
    else:
        bands = xp.zeros((len(prefix[0]), len(prefix[1])), dtype=np.float64)
    table = xp.zeros((bands.shape[0] + 1, bands.shape[1] + 1), dtype=np.float64)
    xp.cumsum(bands, axis=0, out=table[1:, 1:])
    xp.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    (y0, y1), (x0, x1) = zip(starts_at, stops_at, strict=True)
    strip = table[y1] - table[y0]  # a row of column prefixes per asked row range
    return strip[:, x1] - strip[:, x0]


def _band_sums(image: Any, starts: Any, axis: int, xp: Any) -> Any:
    """``add.reduceat(image, starts, axis, dtype=float64)``: the sums of the bands of lines
    that begin at ``starts`` (increasing, the first 0). A strip's bands are mostly single lines
    (its shifted edges) and one long band (its middle): single lines are copied and the few long
    bands summed by one reduction each, about four times faster than ``reduceat``, which loops
    over the bands one line at a time."""
    n = image.shape[axis]
    ends = xp.concatenate((starts[1:], xp.asarray([n], dtype=starts.dtype)))
    long = xp.flatnonzero(ends - starts > 1).tolist()
    if len(long) > 8:  # many long bands: reduceat's own loop is as good
        return xp.add.reduceat(image, starts, axis=axis, dtype=np.float64)
    lines = xp.moveaxis(image, axis, 0)
    out = lines[starts].astype(np.float64)  # each band's first line
    for k in long:
        out[k] = lines[int(starts[k]) : int(ends[k])].sum(axis=0, dtype=np.float64)
    return xp.moveaxis(out, 0, axis)


def _common_ranges(n_ref: int, n_mov: int, shifts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Along one axis, at each shift ``s`` (``mov[m]`` on ``ref[m + s]``): the common range in
    ``ref`` and in ``mov`` (``start, stop`` each; empty ranges have ``stop == start``)."""
    r0 = np.clip(shifts, 0, n_ref)
    r1 = np.clip(np.minimum(n_ref, n_mov + shifts), r0, n_ref)
    m0 = r0 - shifts
    return r0, r1, m0, m0 + (r1 - r0)


def masked_ncc(
    ref: np.ndarray, mov: np.ndarray, shifts: tuple[tuple[int, int], tuple[int, int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """NCC of ``ref`` and ``mov`` over their common pixels for every integer shift.

    Returns ``(ncc, count)`` over the shifts ``s`` (``mov[m]`` lies on ``ref[m + s]``) of
    ``shifts`` (per axis the first and last shift, both included); by default every shift
    with a common pixel, so that index ``k`` is ``s = k - (mov.shape - 1)`` and the shape is
    ``ref.shape + mov.shape - 1``. Padfield's sums over the common pixels: the four sums of
    each image and its square over its part of the overlap from summed-area tables, and the
    cross term from one FFT correlation whose length keeps the asked shifts free of
    wrap-around (shorter than a full linear correlation when the asked range is narrow).
    """
    xp = dispatch.array_module(ref)  # NumPy + scipy.fft, or CuPy + cupyx.scipy.fft
    rfftn, irfftn = dispatch.get("rfftn", ref), dispatch.get("irfftn", ref)
    if shifts is None:
        shifts = ((-(mov.shape[0] - 1), ref.shape[0] - 1), (-(mov.shape[1] - 1), ref.shape[1] - 1))
    ref = ref - ref.mean()  # the NCC ignores offsets; centred sums cancel less
    mov = mov - mov.mean()
    ranges, fft_shape, wrapped = [], [], []
    for ax, (lo, hi) in enumerate(shifts):
        nr, nm = ref.shape[ax], mov.shape[ax]
        s = np.arange(lo, hi + 1)
        ranges.append(_common_ranges(nr, nm, s))
        # circular correlation of length L equals the linear one at s when s +- L has no
        # common pixel: L >= max(hi + nm, nr - lo)
        length = sfft.next_fast_len(int(max(hi + nm, nr - lo, 1)), real=True)
        fft_shape.append(length)
        wrapped.append(xp.asarray(s % length))
    (ry0, ry1, my0, my1), (rx0, rx1, mx0, mx1) = ranges
    count = np.outer(ry1 - ry0, rx1 - rx0).astype(np.float64)
    as_xp = xp.asarray
    sr = _box_sums(ref, (as_xp(ry0), as_xp(ry1)), (as_xp(rx0), as_xp(rx1)), xp)
    sr2 = _box_sums(ref * ref, (as_xp(ry0), as_xp(ry1)), (as_xp(rx0), as_xp(rx1)), xp)
    sm = _box_sums(mov, (as_xp(my0), as_xp(my1)), (as_xp(mx0), as_xp(mx1)), xp)
    sm2 = _box_sums(mov * mov, (as_xp(my0), as_xp(my1)), (as_xp(mx0), as_xp(mx1)), xp)
    spectrum = rfftn(ref, fft_shape)
    spectrum *= xp.conj(rfftn(mov, fft_shape))
    cross = irfftn(spectrum, fft_shape)
    srm = cross[wrapped[0][:, None], wrapped[1][None, :]]
    n = xp.asarray(count)
    safe = xp.maximum(n, 1)
    var_r = xp.maximum(sr2 - sr * sr / safe, 0)
    var_m = xp.maximum(sm2 - sm * sm / safe, 0)
    denom = xp.sqrt(var_r * var_m)
    eps = 1e-9 * max(float(denom.max()), 1e-30)
    ncc = xp.where(denom > eps, (srm - sr * sm / safe) / xp.maximum(denom, eps), 0.0)
    return ncc, n


def _halo(sigma: float | None) -> int:
    """Radius (px) of SciPy's Gaussian kernels at ``sigma`` (``truncate=4``): the real pixels a
    strip needs around it for its LoG to equal the whole tile's."""
    return log_filter.radius(sigma) if sigma else 0


def _prefilter(image: Any, sigma: float | None) -> Any:
    """The pixels the NCC compares: the LoG response in float32 (seven digits are far more than
    the peak and its sub-pixel fit need, and the FFT runs about twice as fast as in float64;
    the box sums still add in float64), or the raw pixels in float64."""
    if not sigma:
        return image.astype(np.float64)
    # LoG: whitens and removes the gain/offset (FFTs on NumPy, equal to SciPy's filter to
    # float32 rounding and twice as fast; cupyx on CuPy)
    if dispatch.array_module(image) is np:
        return -log_filter.gaussian_laplace(image, sigma)
    image = image.astype(np.float32)
    return -dispatch.get("gaussian_laplace", image)(image, sigma)


def _strip_pixels(
    tileset: TileSet,
    path: Any,
    window: tuple[slice, slice],
    sigma: float | None,
    xp: Any = np,
) -> Any:
    """The pre-filtered pixels of one strip of a tile, equal to pre-filtering the whole tile and
    cutting the strip: only the strip and a halo of the filter's radius are read (clipped to
    the tile, where the filter's reflection at the tile edge is the same)."""
    h, w = tileset.tile_shape
    halo = _halo(sigma)
    rows, cols = window
    y0, y1 = max(rows.start - halo, 0), min(rows.stop + halo, h)
    x0, x1 = max(cols.start - halo, 0), min(cols.stop + halo, w)
    crop = int(getattr(tileset, "crop_bottom", 0) or 0)
    pixels = read_tile_region(
        path,
        slice(y0, y1),
        slice(x0, x1),
        shape=tileset.tile_shape,
        dtype=tileset.dtype,
        crop_bottom=crop,
    )
    inner = (slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0))
    return _prefilter(xp.asarray(pixels), sigma)[inner]


def _device_module(device: str) -> Any:
    """``numpy``, or ``cupy`` for ``device`` ``"gpu"`` (or ``"auto"`` where the worker sees a
    GPU); a GPU asked for and not there is an error naming the option."""
    if device == "cpu" or (device == "auto" and not dispatch.gpu_available()):
        return np
    if not dispatch.gpu_available():
        raise ConfigError(
            "stitch.device: 'gpu' needs CuPy and cuCIM (pip install 'mosaicflow[gpu]') and a "
            "CUDA device on every worker that registers tiles"
        )
    import importlib

    return importlib.import_module("cupy")


def _register_one(
    tileset: TileSet,
    path_i: str,
    path_j: str,
    nominal: np.ndarray,
    *,
    max_shift: float,
    upsample: int,
    min_overlap: float,
    log_sigma: float | None,
    device: str = "cpu",
) -> tuple[float, float, float, int, float]:
    """Offset (dy, dx) of tile j from tile i, NCC quality, common pixel count and NCC at the
    nominal offset of one pair."""
    margin = int(np.ceil(max_shift))
    base = np.rint(nominal).astype(int)
    win_i, win_j = _strips(base, tileset.tile_shape, margin)
    xp = _device_module(device)
    ref = _strip_pixels(tileset, path_i, win_i, log_sigma, xp)
    mov = _strip_pixels(tileset, path_j, win_j, log_sigma, xp)
    if ref.size == 0 or mov.size == 0:
        return np.nan, np.nan, np.nan, 0, np.nan
    # offset = a0 + s - b0 (a0, b0: window origins in tiles i and j); only the shifts within
    # max_shift of the nominal offset (and one more for the sub-pixel fit) are computed
    a0 = np.array([win_i[0].start, win_i[1].start])
    b0 = np.array([win_j[0].start, win_j[1].start])
    centre = np.asarray(nominal, dtype=float) - a0 + b0
    lo = np.maximum(np.floor(centre - max_shift).astype(int) - 1, -(np.array(mov.shape) - 1))
    hi = np.minimum(np.ceil(centre + max_shift).astype(int) + 1, np.array(ref.shape) - 1)
    if np.any(hi < lo):
        return np.nan, np.nan, np.nan, 0, np.nan
    window = ((int(lo[0]), int(hi[0])), (int(lo[1]), int(hi[1])))
    ncc, count = (dispatch.to_host(a) for a in masked_ncc(ref, mov, window))
    ky, kx = np.indices(ncc.shape)
    sy, sx = ky + lo[0], kx + lo[1]
    offy, offx = a0[0] + sy - b0[0], a0[1] + sx - b0[1]
    nominal_overlap = max(0, tileset.tile_shape[0] - abs(base[0])) * max(
        0, tileset.tile_shape[1] - abs(base[1])
    )
    allowed = (np.hypot(offy - nominal[0], offx - nominal[1]) <= max_shift) & (
        count >= max(16.0, min_overlap * nominal_overlap)
    )
    # the NCC at the stage's own offset (rounded): what the overlap looked like before
    k_nom = tuple(base - a0 + b0 - lo)
    inside = all(0 <= k < n for k, n in zip(k_nom, ncc.shape, strict=True))
    at_nominal = float(ncc[k_nom]) if inside and count[k_nom] > 0 else np.nan
    if not allowed.any():
        return np.nan, np.nan, np.nan, 0, at_nominal
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
        pcc = dispatch.get("phase_cross_correlation", ref_c)
        shift, _, _ = pcc(ref_c, mov_c, upsample_factor=upsample)
        shift = np.asarray(dispatch.to_host(xp.asarray(shift)), dtype=float)
        if np.all(np.abs(shift) <= 1.0):
            sub = -shift
    off = a0 + s + sub - b0
    return float(off[0]), float(off[1]), float(ncc[k]), int(count[k]), at_nominal


def _register_some(
    tileset: TileSet, items: list[tuple[str, str, np.ndarray]], **opts: Any
) -> list[tuple[float, float, float, int, float]]:
    """:func:`_register_one` for each ``(path_i, path_j, nominal)`` of one task's pairs."""
    try:
        return [_register_one(tileset, a, b, nominal, **opts) for a, b, nominal in items]
    finally:
        log_filter.release()


def register_pairs(
    tileset: TileSet,
    *,
    max_shift_px: float | None = None,
    upsample: int = 0,
    min_overlap: float = 0.25,
    log_sigma: float | None = 1.0,
    n_null: int = 8,
    seed: int = 0,
    device: str = "cpu",
    compute: bool = True,
    pairs: list[tuple[int, int]] | None = None,
) -> Any:
    """Measure the translation between every pair of overlapping tiles (or the given ones).

    Parameters
    ----------
    tileset : TileSet
        Tiles with nominal positions (``tileset.tiles[["y_px", "x_px"]]``).
    max_shift_px : float, optional
        Largest allowed distance (px) between the measured and the nominal offset of a pair.
        Default: a tenth of the smaller tile side, at least 16 px.
    upsample : int
        Sub-pixel method: 0 (default) a parabola through the NCC peak per axis; N > 1
        ``phase_cross_correlation`` with upsampling factor N on the common region; 1 integer
        shifts only.
    min_overlap : float
        Smallest common area at a candidate shift, as a fraction of the nominal overlap area.
    log_sigma : float or None
        Laplacian-of-Gaussian pre-filter (px); ``None`` or 0: raw pixels.
    n_null : int
        Number of random non-adjacent tile pairs scored as the chance level (``kind ==
        "null"``); 0: none.
    seed : int
        Seed of the random choice of null pairs.
    device : {"cpu", "gpu", "auto"}
        Where each pair task correlates its strips: NumPy/SciPy/scikit-image, or CuPy/cupyx/
        cuCIM through :mod:`mosaicflow.dispatch` (``"auto"``: the GPU where the worker has
        one). The GPU path is the same code on CuPy arrays, checked against the CPU path on an
        NVIDIA H200 (offsets within 0.02 px).
    compute : bool
        ``True``: compute (one Dask task per :data:`PAIRS_PER_TASK` pairs, on the current
        scheduler) and return a
        pandas DataFrame; ``False``: return the Dask delayed DataFrame-building object.
    pairs : list of (int, int), optional
        The pairs ``(i, j)`` to register, ``i < j`` (row positions in ``tileset.tiles``);
        default every pair of :func:`candidate_pairs`. The null pairs take their geometry
        from these.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``i``, ``j`` (row positions in ``tileset.tiles``), ``kind``
        (``"neighbour"`` or ``"null"``), measured offset ``dy``, ``dx`` of tile j from tile i in
        mosaic pixels (NaN where nothing could be measured), ``nominal_dy``, ``nominal_dx``,
        ``quality`` (NCC at the peak), ``overlap_px`` (common pixels at the peak) and
        ``quality_nominal`` (the NCC at the nominal offset, rounded: the overlap's agreement
        before registration; NaN outside the strips).
    """
    max_shift = default_max_shift(tileset.tile_shape) if max_shift_px is None else max_shift_px
    if max_shift <= 0:
        raise ValueError(f"register_pairs: max_shift_px must be positive, got {max_shift_px!r}")
    if upsample < 0:
        raise ValueError(f"register_pairs: upsample must be >= 0, got {upsample!r}")
    if device not in DEVICES:
        raise ConfigError(f"stitch.device must be one of {DEVICES}, got {device!r}")
    pos = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    pairs = candidate_pairs(tileset) if pairs is None else [(int(i), int(j)) for i, j in pairs]
    jobs = [(i, j, "neighbour", pos[j] - pos[i]) for i, j in pairs]
    jobs += [
        (i, k, "null", pos[j] - pos[i]) for i, j, k in _null_pairs(tileset, pairs, n_null, seed)
    ]
    opts = {
        "max_shift": max_shift,
        "upsample": upsample,
        "min_overlap": min_overlap,
        "log_sigma": log_sigma,
        "device": device,
    }
    # Tasks get the tile size, type and crop once (one graph key), not the whole tiles table.
    reader = dask.delayed(dataclasses.replace(tileset, tiles=tileset.tiles.iloc[:0]), pure=True)
    paths = [str(p) for p in tileset.tiles["path"]]
    items = [(paths[i], paths[j], nom) for i, j, _, nom in jobs]
    tasks = [
        dask.delayed(_register_some, pure=True)(reader, some, **opts)
        for some in batches(items, PAIRS_PER_TASK)
    ]

    def build(batches: list[list[tuple[float, float, float, int, float]]]) -> pd.DataFrame:
        results = [r for batch in batches for r in batch]
        rows = [
            (i, j, kind, dy, dx, nom[0], nom[1], q, n, q0)
            for (i, j, kind, nom), (dy, dx, q, n, q0) in zip(jobs, results, strict=True)
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
