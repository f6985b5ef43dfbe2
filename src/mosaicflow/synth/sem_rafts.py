"""Dense monolayers ("rafts") of near-equal spheres: the self-assembled particle films of TEM
and SEM figures, where hundreds of particles of one size pack hexagonally and touch their
neighbours at points. :func:`make_particles` keeps isolated particles apart and builds only
small groups; a raft is the hard case for separating instances, and a model trained without
one merges the whole film into a single object.

:func:`make_raft` returns a catalogue with the columns of
:func:`mosaicflow.synth.sem_particles.make_particles`, so
:func:`mosaicflow.synth.sem.synth_field` renders it (``particles=``) with the same exact labels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError
from mosaicflow.synth.sem_particles import PARTICLE_COLUMNS

__all__ = ["make_raft"]


def make_raft(
    field_shape: tuple[int, int],
    *,
    seed: int = 0,
    diameter_px: tuple[float, float] = (8.0, 40.0),
    size_cv: tuple[float, float] = (0.03, 0.10),
    gap: tuple[float, float] = (-0.04, 0.08),
    jitter: float = 0.04,
    cover: tuple[float, float] = (0.25, 0.7),
    vacancy: tuple[float, float] = (0.0, 0.08),
    intensity_range: tuple[float, float] = (0.7, 1.3),
    margin_px: float = 2.0,
) -> pd.DataFrame:
    """A catalogue of one raft: spheres on a jittered hexagonal lattice inside a random ellipse.

    Parameters
    ----------
    field_shape : tuple of int
        ``(height, width)`` of the field in pixels.
    seed : int
        Seeds every draw.
    diameter_px : (min, max)
        The raft's mean particle diameter is drawn log-uniformly from this range.
    size_cv : (min, max)
        Range of the coefficient of variation of the diameters within the raft.
    gap : (min, max)
        Range of the lattice spacing's excess over the mean diameter, as a fraction of it
        (negative: neighbours overlap slightly and touch along a short edge; positive: a thin
        gap that blur closes).
    jitter : float
        Standard deviation of each centre's displacement, as a fraction of the mean diameter.
    cover : (min, max)
        Range of the ellipse's semi-axes, as fractions of the field's half-sides.
    vacancy : (min, max)
        Range of the fraction of lattice sites left empty.
    intensity_range : (min, max)
        Uniform range of each particle's relative brightness.
    margin_px : float
        Particles lie entirely inside the field, this far from its border.

    Returns
    -------
    pandas.DataFrame
        As :func:`~mosaicflow.synth.sem_particles.make_particles` (every particle a
        ``"sphere"``, ``group`` 1, ``diameter_nm`` in pixels: the raft has no pixel size).
    """
    height, width = (int(v) for v in field_shape)
    if height <= 0 or width <= 0:
        raise ConfigError(f"field_shape must be positive, got {field_shape!r}")
    if not 0 < diameter_px[0] <= diameter_px[1]:
        raise ConfigError(f"diameter_px must be an increasing positive range, got {diameter_px}")
    rng = np.random.default_rng(seed)
    d = math.exp(rng.uniform(math.log(diameter_px[0]), math.log(diameter_px[1])))
    spacing = d * (1.0 + rng.uniform(*gap))
    cv = rng.uniform(*size_cv)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    ry, rx = rng.uniform(*cover) * height / 2, rng.uniform(*cover) * width / 2
    turn = rng.uniform(0.0, math.pi)
    lattice_turn = rng.uniform(0.0, math.pi / 3)

    # a hexagonal lattice wide enough to cover the field whatever its rotation
    reach = math.hypot(height, width)
    n = int(reach / spacing) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    u = (j + 0.5 * (i % 2)) * spacing
    v = i * spacing * math.sqrt(3.0) / 2.0
    c, s = math.cos(lattice_turn), math.sin(lattice_turn)
    ys = cy + (u * s + v * c).ravel()
    xs = cx + (u * c - v * s).ravel()
    ys = ys + rng.normal(0.0, jitter * d, ys.size)
    xs = xs + rng.normal(0.0, jitter * d, xs.size)

    ct, st = math.cos(turn), math.sin(turn)
    ey = ((ys - cy) * ct - (xs - cx) * st) / ry
    ex = ((ys - cy) * st + (xs - cx) * ct) / rx
    # a wavy rim, so the raft's outline is not a perfect ellipse
    phase = rng.uniform(0.0, 2 * math.pi, 3)
    theta = np.arctan2(ey, ex)
    rim = 1.0 + 0.15 * sum(np.sin(k * theta + phase[k - 2]) / k for k in (2, 3, 4))
    radius = np.maximum(rng.lognormal(math.log(d / 2), cv, ys.size), 1.5)
    keep = np.hypot(ey, ex) <= rim
    keep &= rng.uniform(0.0, 1.0, ys.size) >= rng.uniform(*vacancy)
    keep &= (ys - radius >= margin_px) & (ys + radius <= height - 1 - margin_px)
    keep &= (xs - radius >= margin_px) & (xs + radius <= width - 1 - margin_px)
    ys, xs, radius = ys[keep], xs[keep], radius[keep]
    count = int(ys.size)
    return pd.DataFrame(
        {
            "label": np.arange(1, count + 1, dtype=np.uint32),
            "shape": pd.Series(["sphere"] * count, dtype=object),
            "y_px": ys.astype(np.float64),
            "x_px": xs.astype(np.float64),
            "a_px": radius.astype(np.float64),
            "b_px": radius.astype(np.float64),
            "angle_rad": np.zeros(count),
            "group": np.ones(count, dtype=np.int64),
            "intensity": rng.uniform(*intensity_range, count),
            "diameter_nm": 2.0 * radius,
        },
        columns=PARTICLE_COLUMNS,
    )
