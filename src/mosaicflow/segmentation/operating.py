"""Operating points of an instance model: the foreground threshold, seed threshold and smallest
seed at which its probabilities become instances, scored by instance F1 against true labels.

Training ranks each epoch at a few points (:data:`EPOCH_POINTS`) and sweeps the full grid once
at the end (:func:`sweep_thresholds`). The counts of one image at several points are
:func:`image_tallies`; :mod:`mosaicflow.segmentation.loader` computes them in worker processes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mosaicflow.segmentation.metrics import Tally, tally
from mosaicflow.segmentation.targets import instances_from_probability

#: The thresholds the sweep tries.
FOREGROUND_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)
SEED_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_SEED_GRID = (0, 8, 32, 128)
#: Operating points (foreground, seed threshold, smallest seed) tried after every epoch: the
#: epoch's validation F1 is the best of them. A single fixed point ranks epochs by how well
#: they suit that point; the full sweep (above) runs once, on the chosen epoch.
EPOCH_POINTS = tuple((0.6, seed, min_seed) for seed in (0.7, 0.8, 0.9) for min_seed in (32, 128))
#: The single point epochs were ranked at before 2026-11-27 (``select="fixed"``): the shipped
#: model's recorded commands use it, so they still reproduce it.
FIXED_POINT = ((0.5, 0.5, 0),)

Point = tuple[float, float, int]
#: ``(probs, points) -> one Tally per point``, summed over the images (truths bound already).
TallyFn = Callable[[Sequence[tuple[np.ndarray, np.ndarray]], Sequence[Point]], list[Tally]]


def image_tallies(
    prob: tuple[np.ndarray, np.ndarray], truth: np.ndarray, points: Sequence[Point]
) -> list[Tally]:
    """One image's instance counts at each operating point."""
    fg, interior = prob
    out = []
    for fg_t, seed_t, min_seed in points:
        pred = instances_from_probability(
            fg, interior, foreground_threshold=fg_t, seed_threshold=seed_t, min_seed_px=min_seed
        )
        out.append(tally(truth, pred))
    return out


def summed(per_image: Sequence[list[Tally]], n_points: int) -> list[Tally]:
    """Per-point sums of per-image counts."""
    totals = [Tally() for _ in range(n_points)]
    for counts in per_image:
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
    return totals


def score(
    probs: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    foreground_threshold: float,
    seed_threshold: float,
    min_seed_px: int = 0,
) -> Tally:
    """Summed counts of instances grown from stored-scale probabilities against truths."""
    point = [(foreground_threshold, seed_threshold, min_seed_px)]
    per_image = [image_tallies(p, t, point) for p, t in zip(probs, truths, strict=True)]
    return summed(per_image, 1)[0]


def sweep_thresholds(
    probs: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    tallies: TallyFn | None = None,
) -> tuple[float, float, int, dict[str, Any]]:
    """The foreground threshold, seed threshold and smallest seed with the best instance F1 on
    these images, and the scores there."""
    grid = list(itertools.product(FOREGROUND_GRID, SEED_GRID, MIN_SEED_GRID))
    (fg, seed, min_seed), scores = best_point(probs, truths, grid, tallies)
    return fg, seed, min_seed, scores


def best_point(
    probs: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    points: Sequence[Point],
    tallies: TallyFn | None = None,
) -> tuple[Point, dict[str, Any]]:
    """The operating point of ``points`` with the best instance F1 (the first of equals), and
    its scores. ``tallies`` computes the counts elsewhere (worker processes); by default they
    are computed here, image by image."""
    if tallies is None:
        per_image = [image_tallies(p, t, points) for p, t in zip(probs, truths, strict=True)]
        totals = summed(per_image, len(points))
    else:
        totals = tallies(probs, points)
    best: tuple[float, Point, dict[str, Any]] = (-1.0, points[0], {})
    for point, total in zip(points, totals, strict=True):
        s = total.scores()
        if or_zero(s["f1"]) > best[0]:
            best = (or_zero(s["f1"]), point, s)
    return best[1], best[2]


def or_zero(value: float) -> float:
    """F1 is 0/0 (NaN) when neither truth nor prediction holds a particle: no better than 0."""
    return 0.0 if math.isnan(value) else float(value)
