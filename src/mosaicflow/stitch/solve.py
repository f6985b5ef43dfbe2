"""Global solve of tile positions from pairwise offsets: weighted least squares with outlier
rejection, and a weak prior at each tile's stage position so a tile without a reliable pair
keeps exactly its stage position (``docs/STITCHING.md``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from mosaicflow.io import TileSet
from mosaicflow.runner import Runner
from mosaicflow.stitch.register import candidate_pairs, is_corner_pair, register_pairs

#: How :func:`register_tileset` registers diagonal neighbours (pairs overlapping only at a
#: corner): ``"auto"`` only when the side pairs leave a tile outside the largest group of
#: tiles they join, ``"all"`` always, ``"none"`` never.
CORNER_MODES = ("auto", "all", "none")

PRIOR_WEIGHT = 1e-4
"""Weight of each tile's stage prior ``p_i = nominal_i``, relative to a measured pair of
quality 1 over the largest overlap (weight 1)."""


def _solve(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    d: np.ndarray,
    w: np.ndarray,
    prior: np.ndarray,
    prior_weight: float = PRIOR_WEIGHT,
) -> np.ndarray:
    """Positions ``p`` minimising ``sum w (p_j - p_i - d)^2 + prior_weight sum (p - prior)^2``.

    Summing the normal equations over the tiles of any connected component of the edges gives
    ``mean(p) = mean(prior)`` over that component (the edge terms cancel in pairs): every
    component, and so the whole set, keeps its priors' mean, and a tile without an edge stays
    exactly at its prior.
    """
    from scipy.sparse.linalg import spsolve  # here: the workers import this module, never solve

    rows = np.arange(len(i))
    a = sparse.csr_matrix(
        (np.r_[-np.ones(len(i)), np.ones(len(i))], (np.r_[rows, rows], np.r_[i, j])),
        shape=(len(i), n),
    )
    aw = a.multiply(w[:, None]).tocsr()
    normal = (a.T @ aw + prior_weight * sparse.identity(n)).tocsc()
    rhs = aw.T @ d + prior_weight * prior
    sol = spsolve(normal, rhs)
    return np.asarray(sol, dtype=float).reshape(n, -1)


def default_tolerance(disagreement: np.ndarray, floor_px: float = 3.0) -> float:
    """3 x the robust spread (1.4826 MAD) of the pairs' disagreement with the stage model, at
    least ``floor_px``."""
    if len(disagreement) == 0:
        return floor_px
    mad = float(np.median(np.abs(disagreement - np.median(disagreement, axis=0))))
    return max(floor_px, 3.0 * 1.4826 * mad)


def solve_positions(
    tileset: TileSet,
    pairs: pd.DataFrame,
    *,
    tolerance_px: float | None = None,
    min_quality: float | None = None,
    null_quantile: float = 0.9,
    max_residual_px: float = 0.5,
    return_pairs: bool = False,
) -> Any:
    """Tile positions from the pairwise offsets of :func:`register_pairs`.

    Parameters
    ----------
    tileset : TileSet
        The tiles (their nominal positions ``y_px``, ``x_px`` are the stage model).
    pairs : pandas.DataFrame
        The table of :func:`register_pairs` (rows of ``kind == "null"`` give the chance level).
        A measured pair weighs ``quality**2 * overlap_px / max(overlap_px)``.
    tolerance_px : float, optional
        Largest distance (px) between a pair's measured offset and its nominal offset, after
        removing the median disagreement of pairs of the same direction (a systematic pitch
        error is not an outlier). Default: 3 x the robust spread of those disagreements, at
        least 3 px.
    min_quality : float, optional
        Smallest quality kept. Default: the ``null_quantile`` quantile of the null pairs'
        quality (0 without null pairs).
    null_quantile : float
        Quantile of the null qualities used when ``min_quality`` is not given.
    max_residual_px : float
        While the worst residual of a kept pair exceeds this, that pair is dropped and the
        system solved again.
    return_pairs : bool
        Also return the pairs with ``kept``, ``reason`` and ``residual_px`` columns.

    Returns
    -------
    pandas.DataFrame
        Index and order of ``tileset.tiles``: ``y_px``, ``x_px`` (solved origins; their mean
        equals the mean nominal origin over all tiles and over every connected component of
        kept pairs, and a tile without a kept pair is exactly at its nominal origin),
        ``residual_px`` (largest residual of the tile's kept
        pairs, 0 without any) and ``n_pairs_kept``. With ``return_pairs``, ``(tiles, pairs)``.
    """
    nominal = tileset.tiles[["y_px", "x_px"]].to_numpy(float)
    n = len(nominal)
    table = pairs[pairs["kind"] == "neighbour"].copy()
    null = pairs.loc[pairs["kind"] == "null", "quality"].dropna().to_numpy(float)
    if min_quality is None:
        min_quality = float(np.quantile(null, null_quantile)) if len(null) else 0.0
    meas = table[["dy", "dx"]].to_numpy(float)
    nom = table[["nominal_dy", "nominal_dx"]].to_numpy(float)
    ok = np.isfinite(meas).all(axis=1) & np.isfinite(table["quality"].to_numpy(float))
    reason = np.where(ok, "", "unmeasured").astype(object)
    # (a) disagreement with the stage model, per pair direction
    disagree = meas - nom
    direction = [tuple(v) for v in np.sign(np.round(nom / np.array(tileset.tile_shape) * 2))]
    centred = np.full_like(disagree, np.nan)
    for key in set(direction):
        sel = np.array([d == key for d in direction]) & ok
        if sel.any():
            centred[sel] = disagree[sel] - np.median(disagree[sel], axis=0)
    tol = default_tolerance(centred[ok]) if tolerance_px is None else float(tolerance_px)
    far = ok & (np.hypot(centred[:, 0], centred[:, 1]) > tol)
    reason[far] = "stage"
    # (b) no better than chance
    weak = ok & ~far & (table["quality"].to_numpy(float) <= min_quality)
    reason[weak] = "quality"
    kept = reason == ""
    ii, jj = table["i"].to_numpy(int), table["j"].to_numpy(int)
    quality = np.clip(table["quality"].to_numpy(float), 0.0, 1.0)
    area = table["overlap_px"].to_numpy(float)
    weight = np.maximum(quality, 1e-3) ** 2 * area / max(float(area.max(initial=0.0)), 1.0)
    while True:
        k = np.flatnonzero(kept)
        pos = _solve(n, ii[k], jj[k], meas[k], weight[k], nominal)
        resid = np.hypot(*(pos[jj] - pos[ii] - meas).T)
        if not len(k) or resid[k].max() <= max_residual_px:
            break
        worst = k[int(np.argmax(resid[k]))]
        kept[worst] = False
        reason[worst] = "residual"
    tile_resid = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    for idx in np.flatnonzero(kept):
        for t in (ii[idx], jj[idx]):
            tile_resid[t] = max(tile_resid[t], resid[idx])
            count[t] += 1
    tiles = pd.DataFrame(
        {"y_px": pos[:, 0], "x_px": pos[:, 1], "residual_px": tile_resid, "n_pairs_kept": count},
        index=tileset.tiles.index,
    )
    if not return_pairs:
        return tiles
    table["kept"] = kept
    table["reason"] = reason
    table["residual_px"] = np.where(np.isfinite(meas).all(axis=1), resid, np.nan)
    return tiles, table


def register_tileset(
    tileset: TileSet,
    *,
    register: bool = True,
    max_shift_px: float | None = None,
    device: str = "cpu",
    runner: Runner | None = None,
    corners: str = "auto",
    first: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any]]:
    """Register a tile set: its tiles table with the solved positions, the judged pairs, and
    what was kept.

    The returned table's ``y_px``, ``x_px`` are what fusion uses (the solved positions, or the
    nominal ones when ``register`` is false or there is one tile); ``nominal_y_px``,
    ``nominal_x_px`` keep the stage's; ``residual_px`` and ``n_pairs_kept`` come from
    :func:`solve_positions`. A tile set registered before is registered again from its nominal
    positions.

    ``corners`` (:data:`CORNER_MODES`): with ``"auto"``, the side pairs are registered and
    solved first; where they leave a tile outside the largest group of tiles joined by kept
    pairs, the diagonal pairs are registered too and everything is solved again, as with
    ``"all"``. A corner's overlap is about a tenth of a side's (at 10 % overlap), weighs about
    a tenth in the solve, and costs half a side pair to register: on a grid whose sides join
    every tile, leaving the corners out moves the positions by hundredths of a pixel and
    halves the stage's work (``docs/STITCHING.md``).

    ``first``: the first pass already set computing (:func:`first_pass` of the same tile set
    and options, started by :meth:`Runner.start <mosaicflow.runner.Runner.start>`); the
    pipeline's tiles stage starts it once the tiles are checked.
    """
    if corners not in CORNER_MODES:
        raise ValueError(f"register_tileset: corners must be one of {CORNER_MODES}: {corners!r}")
    nominal = _nominal(tileset)
    tiles = nominal.tiles
    info: dict[str, Any] = {"registered": bool(register and len(tiles) > 1)}
    if not info["registered"]:
        return tiles, None, info
    runner = runner or Runner()
    opts = {"max_shift_px": max_shift_px, "device": device, "compute": False}
    every, corner = _candidates(nominal)
    if first is None:
        first = _first_pass(nominal, every, corner, max_shift_px, device, corners)
    pairs = runner.compute(first, "register")
    positions, judged = solve_positions(nominal, pairs, return_pairs=True)
    # The sides left tiles apart: every diagonal too, and one solve over all the pairs (the
    # stage and quality rules judge each pair against all the others, so the result is the
    # one registering every pair at once would give)
    loose = corners == "auto" and bool(_outside_largest_group(len(tiles), judged))
    extra = corner if loose else []
    if extra:
        more = register_pairs(nominal, pairs=extra, n_null=0, **opts)
        pairs = pd.concat([pairs, runner.compute(more, "register corners")], ignore_index=True)
        positions, judged = solve_positions(nominal, pairs, return_pairs=True)
    info["n_corner_pairs"] = len(corner) if corners == "all" else len(extra)
    for col in ("y_px", "x_px", "residual_px", "n_pairs_kept"):
        tiles[col] = positions[col].to_numpy()
    neighbours = judged[judged["kind"] == "neighbour"]
    info.update(
        n_pairs=len(neighbours),
        n_pairs_kept=int(neighbours["kept"].sum()),
        max_residual_px=float(np.nanmax(tiles["residual_px"])),
    )
    return tiles, judged, info


def first_pass(
    tileset: TileSet,
    *,
    max_shift_px: float | None = None,
    device: str = "cpu",
    corners: str = "auto",
) -> Any:
    """The lazy pair table of :func:`register_tileset`'s first pass: every candidate pair
    with ``corners="all"``, else the side pairs (and the null pairs), measured from the
    nominal positions. Computing it is most of the registration's work; it reads the tiles
    and writes nothing."""
    nominal = _nominal(tileset)
    return _first_pass(nominal, *_candidates(nominal), max_shift_px, device, corners)


def _first_pass(
    nominal: TileSet,
    every: list[tuple[int, int]],
    corner: list[tuple[int, int]],
    max_shift_px: float | None,
    device: str,
    corners: str,
) -> Any:
    """:func:`first_pass` of a tile set already at its nominal positions and its candidates."""
    first = every if corners == "all" else sorted(set(every) - set(corner))
    return register_pairs(
        nominal, pairs=first, max_shift_px=max_shift_px, device=device, compute=False
    )


def _nominal(tileset: TileSet) -> TileSet:
    """``tileset`` at its nominal positions, which its table keeps as ``nominal_y_px``,
    ``nominal_x_px`` (added from ``y_px``, ``x_px`` where missing)."""
    tiles = tileset.tiles.copy()
    if "nominal_y_px" not in tiles:
        tiles["nominal_y_px"] = tiles["y_px"]
        tiles["nominal_x_px"] = tiles["x_px"]
    tiles["y_px"], tiles["x_px"] = tiles["nominal_y_px"], tiles["nominal_x_px"]
    return dataclasses.replace(tileset, tiles=tiles)


def _candidates(nominal: TileSet) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Every candidate pair, and those of them that overlap only at a corner."""
    every = candidate_pairs(nominal)
    offsets = nominal.tiles[["y_px", "x_px"]].to_numpy(float)
    shape = nominal.tile_shape
    corner = [(i, j) for i, j in every if is_corner_pair(offsets[j] - offsets[i], shape)]
    return every, corner


def _outside_largest_group(n: int, judged: pd.DataFrame) -> set[int]:
    """The tiles outside the largest group of tiles joined by kept pairs (every tile when no
    pair was kept)."""
    from scipy.sparse.csgraph import connected_components  # the driver's alone, as above

    kept = judged[judged["kind"].eq("neighbour") & judged["kept"]]
    i, j = kept["i"].to_numpy(int), kept["j"].to_numpy(int)
    graph = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    largest = np.bincount(group).argmax()
    return {int(t) for t in np.flatnonzero(group != largest)} if len(i) else set(range(n))
