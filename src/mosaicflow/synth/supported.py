"""Supported catalysts: small metal particles on grains of an amorphous support (silica,
alumina, carbon), as HAADF-STEM shows them. The support is as bright as the particles' edges,
textured, and made of grains about the particles' size or larger, with edges of its own: a
model trained only on particles on a flat substrate outlines the grains instead of the
particles on them. Only the particles are labelled.

:func:`supported_field` renders one field with its exact labels. Intensities follow a
HAADF-like picture (thickness times a contrast, added up): each grain and each particle is a
dome, ``sqrt(1 - r^2)`` inside its ellipse, so the support is brighter where grains overlap and
a particle adds to the support below it. A bright-field picture is the inverse (the training
data inverts half of its fields).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi

from mosaicflow.errors import ConfigError
from mosaicflow.synth.noise import noisy_field

__all__ = ["supported_field"]


def _dome(
    shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, turn: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """An elliptical dome ``sqrt(1 - r^2)`` of height 1 within its box of an image of
    ``shape``: the box, the dome's values there and its pixels inside the ellipse (pixel
    centres at normalised radius < 1); None when it misses the image."""
    h, w = shape
    reach = max(ry, rx) + 1.0
    y0, y1 = max(0, int(cy - reach)), min(h, math.ceil(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(w, math.ceil(cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(turn), math.sin(turn)
    u = (dy * c + dx * s) / ry
    v = (-dy * s + dx * c) / rx
    r2 = u * u + v * v
    return (slice(y0, y1), slice(x0, x1)), np.sqrt(np.clip(1.0 - r2, 0.0, None)), r2 < 1.0


def supported_field(
    shape: tuple[int, int],
    *,
    seed: int = 0,
    snr: float | None = 10.0,
    diameter_px: tuple[float, float] = (3.0, 40.0),
    grain_px: tuple[float, float] = (20.0, 160.0),
    support_cover: tuple[float, float] = (0.3, 1.0),
    particles: tuple[int, int] = (10, 250),
    blur_px: tuple[float, float] = (0.4, 1.5),
    max_tries: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """One field of particles on a grainy support, with exact labels.

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)`` in pixels.
    seed : int
        Seeds every draw (the noise from a stream of its own).
    snr : float or None
        Mean particle contrast over the noise's standard deviation; None: no noise.
    diameter_px : (min, max)
        The field's mean particle diameter is drawn log-uniformly from this range; the
        particles' diameters spread around it (coefficient of variation 0.1-0.4), never below
        2 px.
    grain_px : (min, max)
        Range of the support grains' diameters (log-uniform per grain).
    support_cover : (min, max)
        Range of the share of the field the support's grains are placed over.
    particles : (min, max)
        Range of the number of particles tried (fewer when they do not fit).
    blur_px : (min, max)
        Range of the Gaussian probe blur's standard deviation.
    max_tries : int
        Placements tried per particle before it is given up (particles do not overlap; some
        are placed touching a neighbour).

    Returns
    -------
    image : ndarray of float32
    labels : ndarray of uint32
        Particles 1..n (0: support and vacuum).
    """
    height, width = (int(v) for v in shape)
    if height <= 0 or width <= 0:
        raise ConfigError(f"supported_field: shape must be positive, got {shape!r}")
    if not 2.0 <= diameter_px[0] <= diameter_px[1]:
        raise ConfigError(
            f"supported_field: diameter_px must be an increasing range from 2 px, got {diameter_px}"
        )
    rng = np.random.default_rng(seed)
    clean = np.zeros((height, width), np.float64)

    # the support: grains over an ellipse-ish region, each a dome of its own thickness
    cover = rng.uniform(*support_cover)
    grain_level = rng.uniform(0.2, 0.6)
    area = cover * height * width
    mean_grain = math.sqrt(grain_px[0] * grain_px[1])
    n_grains = max(1, int(3.0 * area / (math.pi * (mean_grain / 2) ** 2)))
    cy0, cx0 = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    spread_y = math.sqrt(cover) * height * 0.45
    spread_x = math.sqrt(cover) * width * 0.45
    for _ in range(n_grains):
        d = math.exp(rng.uniform(math.log(grain_px[0]), math.log(grain_px[1])))
        gy = cy0 + rng.normal(0.0, spread_y)
        gx = cx0 + rng.normal(0.0, spread_x)
        aspect = rng.uniform(1.0, 1.6)
        grain = _dome(clean.shape, gy, gx, d / 2, d / 2 / aspect, rng.uniform(0, math.pi))
        if grain is not None:
            clean[grain[0]] += grain[1] * (grain_level / 3)
    support = clean > 0
    # the support's own texture: fine and coarse grain, only where there is support
    fine = ndi.gaussian_filter(rng.normal(0.0, 1.0, (height, width)), rng.uniform(0.7, 2.0))
    coarse = ndi.gaussian_filter(rng.normal(0.0, 1.0, (height, width)), rng.uniform(4.0, 12.0))
    texture = 0.5 * fine / (fine.std() + 1e-9) + 0.5 * coarse / (coarse.std() + 1e-9)
    clean += support * texture * grain_level * rng.uniform(0.05, 0.25)

    # the particles: mostly on the support, none overlapping, some touching a neighbour
    labels = np.zeros((height, width), np.uint32)
    signal = np.zeros((height, width), np.float64)
    mean_d = math.exp(rng.uniform(math.log(diameter_px[0]), math.log(diameter_px[1])))
    cv = rng.uniform(0.1, 0.4)
    contrast = grain_level * rng.uniform(0.6, 2.5)
    on_support = np.argwhere(support)
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(particles[0], particles[1] + 1))):
        d = max(2.0, rng.lognormal(math.log(mean_d), cv))
        r = d / 2
        aspect = rng.uniform(1.0, 1.3)
        for _try in range(max_tries):
            if placed and rng.uniform() < 0.15:  # beside an earlier particle, touching it
                py, px, pr = placed[int(rng.integers(len(placed)))]
                a = rng.uniform(0, 2 * math.pi)
                cy, cx = py + (pr + r) * math.sin(a), px + (pr + r) * math.cos(a)
            elif len(on_support) and rng.uniform() < 0.9:
                cy, cx = on_support[int(rng.integers(len(on_support)))] + rng.uniform(-0.5, 0.5, 2)
            else:
                cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            if not (r <= cy < height - r and r <= cx < width - r):
                continue
            if all(math.hypot(cy - py, cx - px) >= r + pr - 0.5 for py, px, pr in placed):
                break
        else:
            continue
        turn = rng.uniform(0, math.pi)
        hit = _dome(signal.shape, cy, cx, r / math.sqrt(aspect), r * math.sqrt(aspect), turn)
        if hit is None:
            continue
        box, dome, inside = hit
        free = inside & (labels[box] == 0)
        if not free.any():
            continue
        placed.append((cy, cx, r))
        labels[box][free] = len(placed)
        brightness = contrast * rng.uniform(0.7, 1.3)
        signal[box] += np.where(free, dome, 0.0) * brightness
    clean += signal
    clean = ndi.gaussian_filter(clean, rng.uniform(*blur_px))
    mask = labels > 0
    mean_signal = float(signal[mask].mean()) if mask.any() else 1.0
    noise_rng = np.random.default_rng([seed, 1])
    image = noisy_field(clean, snr=snr, mean_signal=mean_signal, rng=noise_rng, shot_fraction=0.5)
    return image.astype(np.float32), labels
