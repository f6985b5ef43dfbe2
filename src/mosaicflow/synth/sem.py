"""Synthetic SEM / HAADF-STEM particle fields with exact ground truth (substrate, particle
rendering, noise) and their Maps-like tile grid: the public names of the SEM mode."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError
from mosaicflow.synth._pool import ordered_map
from mosaicflow.synth.grid import (
    GridTruth,
    create_truth_labels,
    grid_layout,
    truth_measures,
    write_tiles,
    write_truth_table,
)
from mosaicflow.synth.noise import add_noise, noise_sigma, noisy_field
from mosaicflow.synth.sem_particles import (
    ParticleIndex,
    index_particles,
    make_particles,
    shape_sdf,
)

__all__ = [
    "Appearance",
    "ParticleIndex",
    "add_noise",
    "index_particles",
    "make_particles",
    "render_substrate",
    "render_window",
    "synth_field",
    "write_maps_grid",
]

# Distinct SeedSequence stream of the field noise, apart from the grid's streams.
_STREAM_FIELD_NOISE = 0xF1

_TRUTH_COLUMNS = [
    "label",
    "shape",
    "centroid_y_nm",
    "centroid_x_nm",
    "area_px",
    "area_nm2",
    "ecd_nm",
    "group",
]


# --------------------------------------------------------------------------------------------
# On-demand rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Appearance:
    """How the clean image looks, in relative intensity units (substrate ~0.2, particles ~1).

    Parameters
    ----------
    substrate_level : float
        Mean substrate brightness.
    texture_amplitude : float
        Peak amplitude of the substrate's value-noise texture.
    texture_scales_px : tuple of float
        Lattice spacings of the texture octaves (coarse to fine).
    texture_weights : tuple of float
        Relative weights of the octaves.
    edge_px : float
        Width of the soft particle edge.
    dome : float
        Fraction of sphere / rod brightness that follows the projected thickness (HAADF-like
        domed profile); cubes are flat.
    """

    substrate_level: float = 0.2
    texture_amplitude: float = 0.06
    texture_scales_px: tuple[float, ...] = (384.0, 96.0, 24.0)
    texture_weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    edge_px: float = 1.2
    dome: float = 0.35


def _hash_uniform(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [-1, 1) value per integer lattice node: a stateless hash, so no lattice is stored."""
    with np.errstate(over="ignore"):
        h = iy.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h = h ^ (ix.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
        h = h ^ np.uint64((seed * 0x165667B19E3779F9 + 0x27D4EB2F165667C5) % (1 << 64))
        # splitmix64 finaliser
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) * (2.0 / 2.0**53) - 1.0


def _value_noise_1d(coords: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    node = np.floor(coords / spacing)
    t = (coords - node * spacing) / spacing
    return node.astype(np.int64), t * t * (3.0 - 2.0 * t)


def render_substrate(
    y0: int,
    x0: int,
    height: int,
    width: int,
    *,
    seed: int = 0,
    appearance: Appearance | None = None,
) -> np.ndarray:
    """Substrate texture of a window, a pure function of global pixel coordinates.

    Smoothstep-interpolated value noise on hashed lattices, so any two windows agree exactly
    where they overlap.

    Parameters
    ----------
    y0, x0 : int
        Global top-left pixel of the window.
    height, width : int
        Window size in pixels.
    seed : int
        Seed of the texture.
    appearance : Appearance, optional
        Substrate level and texture settings.

    Returns
    -------
    ndarray of float64
    """
    app = appearance or Appearance()
    gy = np.arange(y0, y0 + height, dtype=np.float64)
    gx = np.arange(x0, x0 + width, dtype=np.float64)
    out = np.full((height, width), app.substrate_level, dtype=np.float64)
    for octave, (spacing, weight) in enumerate(
        zip(app.texture_scales_px, app.texture_weights, strict=True)
    ):
        ny, wy = _value_noise_1d(gy, spacing)
        nx, wx = _value_noise_1d(gx, spacing)
        if height == 0 or width == 0:
            continue
        ly = np.arange(ny.min(), ny.max() + 2)
        lx = np.arange(nx.min(), nx.max() + 2)
        lattice = _hash_uniform(ly[:, None], lx[None, :], seed * 16 + octave)
        jx = nx - lx[0]
        along_x = lattice[:, jx] * (1.0 - wx) + lattice[:, jx + 1] * wx
        jy = ny - ly[0]
        val = along_x[jy, :] * (1.0 - wy)[:, None] + along_x[jy + 1, :] * wy[:, None]
        out += (app.texture_amplitude * weight) * val
    return out


def _render_parts(
    index: ParticleIndex,
    y0: int,
    x0: int,
    height: int,
    width: int,
    app: Appearance,
) -> tuple[np.ndarray, np.ndarray]:
    """Particle contrast (float64, above the substrate) and labels (uint32) of a window."""
    signal = np.zeros((height, width), dtype=np.float64)
    labels = np.zeros((height, width), dtype=np.uint32)
    pad = app.edge_px + 1.0
    for i in index.query(y0, x0, height, width, pad=pad).tolist():
        cy, cx, reach = float(index.y[i]), float(index.x[i]), float(index.reach[i]) + pad
        ya = max(y0, math.floor(cy - reach))
        yb = min(y0 + height, math.ceil(cy + reach) + 1)
        xa = max(x0, math.floor(cx - reach))
        xb = min(x0 + width, math.ceil(cx + reach) + 1)
        if ya >= yb or xa >= xb:
            continue
        code = int(index.code[i])
        a, b = float(index.a[i]), float(index.b[i])
        dy = np.arange(ya, yb, dtype=np.float64)[:, None] - cy
        dx = np.arange(xa, xb, dtype=np.float64)[None, :] - cx
        sd = shape_sdf(code, dy, dx, a, b, float(index.cos[i]), float(index.sin[i]))
        t = np.clip(0.5 - sd / app.edge_px, 0.0, 1.0)
        profile = t * t * (3.0 - 2.0 * t)
        if code != 2 and app.dome > 0:
            rho = (sd + b) / b
            thick = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
            profile = profile * ((1.0 - app.dome) + app.dome * thick)
        sl = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        np.maximum(signal[sl], float(index.intensity[i]) * profile, out=signal[sl])
        labels[sl][sd <= 0.0] = index.label[i]
    return signal, labels


def _as_index(particles: pd.DataFrame | ParticleIndex) -> ParticleIndex:
    return particles if isinstance(particles, ParticleIndex) else index_particles(particles)


def render_window(
    particles: pd.DataFrame | ParticleIndex,
    y0: int,
    x0: int,
    height: int,
    width: int,
    *,
    seed: int = 0,
    appearance: Appearance | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the clean image and labels of one window of the mosaic frame.

    Parameters
    ----------
    particles : DataFrame or ParticleIndex
        Catalogue from :func:`make_particles`; pass a :class:`ParticleIndex` when rendering many
        windows so the binning is done once.
    y0, x0 : int
        Global top-left pixel of the window (may lie outside the field).
    height, width : int
        Window size in pixels.
    seed : int
        Seed of the substrate texture.
    appearance : Appearance, optional
        Substrate and particle profile settings.

    Returns
    -------
    image : ndarray of float32
        Substrate plus particle contrast (each particle ``intensity`` times a soft-edged,
        domed profile; overlapping particles take the maximum).
    labels : ndarray of uint32
        ``label`` of the particle whose outline contains each pixel centre (later labels win).

    Notes
    -----
    Every pixel is a deterministic function of its global coordinates, so windows agree exactly
    where they overlap and a mosaic can be rendered piecewise in bounded memory.
    """
    app = appearance or Appearance()
    y0, x0, height, width = int(y0), int(x0), int(height), int(width)
    signal, labels = _render_parts(_as_index(particles), y0, x0, height, width, app)
    clean = render_substrate(y0, x0, height, width, seed=seed, appearance=app) + signal
    return clean.astype(np.float32), labels


# --------------------------------------------------------------------------------------------
# Fields and grids
# --------------------------------------------------------------------------------------------


def synth_field(
    shape: tuple[int, int],
    *,
    snr: float | None = 20.0,
    seed: int = 0,
    pixel_size_nm: float = 2.0,
    shot_fraction: float = 0.5,
    appearance: Appearance | None = None,
    particles: pd.DataFrame | None = None,
    **particle_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """One in-memory synthetic field with its exact labels.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` in pixels.
    snr : float or None
        Mean particle signal (mean over labelled pixels of the clean contrast above the substrate)
        divided by the noise standard deviation, as in Zhang et al.; ``None`` or ``inf``: no noise.
    seed : int
        Seeds the catalogue, the substrate and (separately) the noise.
    pixel_size_nm : float
        Pixel size, used to size the particles.
    shot_fraction : float
        Share of the noise variance that is Poisson shot noise (see
        :func:`mosaicflow.synth.add_noise`).
    appearance : Appearance, optional
        Substrate and particle profile settings.
    particles : DataFrame, optional
        A catalogue to render (e.g. :func:`mosaicflow.synth.sem_rafts.make_raft`) instead of one
        drawn by :func:`make_particles`.
    **particle_kwargs
        Passed to :func:`make_particles` (not with ``particles``).

    Returns
    -------
    image : ndarray of float32
    labels : ndarray of uint32
    particles : pandas.DataFrame
        The catalogue (see :func:`make_particles`).
    """
    app = appearance or Appearance()
    height, width = (int(v) for v in shape)
    if particles is None:
        particles = make_particles(
            (height, width), pixel_size_nm=pixel_size_nm, seed=seed, **particle_kwargs
        )
    elif particle_kwargs:
        raise ConfigError(
            f"synth_field: particle options {sorted(particle_kwargs)} do not apply to a given "
            "catalogue (particles=)"
        )
    signal, labels = _render_parts(index_particles(particles), 0, 0, height, width, app)
    clean = render_substrate(0, 0, height, width, seed=seed, appearance=app) + signal
    mask = labels > 0
    mean_signal = float(signal[mask].mean()) if mask.any() else 1.0
    rng = np.random.default_rng([seed, _STREAM_FIELD_NOISE])
    image = noisy_field(
        clean, snr=snr, mean_signal=mean_signal, rng=rng, shot_fraction=shot_fraction
    )
    return image, labels, particles


def write_maps_grid(
    out_dir: str | Path,
    *,
    rows: int = 4,
    cols: int = 5,
    tile_shape: tuple[int, int] = (900, 1400),
    overlap: float = 0.10,
    stage_error_px: float = 8.0,
    pixel_size_nm: float = 2.0,
    snr: float | None = 20.0,
    bit_depth: int = 8,
    gain_sigma: float = 0.05,
    offset_sigma: float = 0.02,
    vignetting: float = 0.1,
    shot_fraction: float = 0.5,
    seed: int = 0,
    missing_tiles: Iterable[tuple[int, int]] = (),
    appearance: Appearance | None = None,
    progress: Callable[[int, int], None] | None = None,
    **particle_kwargs: Any,
) -> GridTruth:
    """Write a synthetic Maps-like tile set with ground truth, in bounded memory.

    Parameters
    ----------
    out_dir : str or Path
        Acquisition folder (created); existing files of the same names are overwritten.
    rows, cols : int
        Grid size.
    tile_shape : tuple of int
        ``(height, width)`` of each tile.
    overlap : float
        Fractional overlap; the true tile pitch is ``round(tile * (1 - overlap))`` per axis.
    stage_error_px : float
        Standard deviation (px, per axis) of the Gaussian error added to the stage position in
        the metadata. True origins are in ``ground_truth/tile_origins.csv``.
    pixel_size_nm : float
        Pixel size written as ``PixelWidth`` / ``PixelHeight`` (in metres).
    snr : float or None
        Mean particle signal / noise std (see :func:`synth_field`), before gain and quantisation;
        the mean particle signal is measured over the whole true mosaic. ``None``: no noise.
    bit_depth : {8, 16}
        Tile dtype ``uint8`` or ``uint16``.
    gain_sigma, offset_sigma : float
        Per-tile detector gain ``~ N(1, gain_sigma)`` and additive offset ``~ N(0, offset_sigma)``
        (relative intensity units, substrate ~0.2).
    vignetting : float
        Brightness lost at the tile corners (radial quadratic falloff).
    shot_fraction : float
        Share of the noise variance that is Poisson shot noise.
    seed : int
        Seeds everything; tile ``(r, c)`` draws gain, offset and noise from ``(seed, r, c)``.
    missing_tiles : iterable of (row, col)
        1-based tiles not written; they are left out of the json ``tiles`` list and listed under
        ``"missing"``.
    appearance : Appearance, optional
        Substrate and particle profile settings.
    progress : callable, optional
        Called as ``progress(done, total)`` after each label chunk and each tile.
    **particle_kwargs
        Passed to :func:`make_particles`.

    Returns
    -------
    GridTruth

    Notes
    -----
    The stage position is that of the tile centre, ``origin + (size - 1) / 2`` pixels in the
    mosaic frame (pixel centres at integer coordinates), converted as ``StageX = X0 + x * p``,
    ``StageY = Y0 - y * p`` (stage Y points up) with ``(Y0, X0) = STAGE_ORIGIN_M``.
    Intensities in ``INTENSITY_RANGE`` map linearly to 10 %..90 % of the dtype range, for every
    tile alike. Memory use is a few tiles plus one label chunk plus the particle catalogue; the
    true mosaic is never held whole.
    """
    app = appearance or Appearance()
    (tile_h, tile_w), _, mosaic_shape = grid_layout(rows, cols, tile_shape, overlap, bit_depth)
    missing = {(int(r), int(c)) for r, c in missing_tiles}
    for r, c in sorted(missing):
        if not (1 <= r <= rows and 1 <= c <= cols):
            raise ConfigError(f"missing tile ({r}, {c}) is outside the {rows} x {cols} grid")

    particles = make_particles(
        mosaic_shape, pixel_size_nm=pixel_size_nm, seed=seed, **particle_kwargs
    )
    index = index_particles(particles)
    n_labels = len(particles)

    # Ground-truth labels, one chunk at a time; the same pass measures the particles exactly
    # and the mean particle signal that sets the noise level.
    arr = create_truth_labels(out_dir, mosaic_shape)
    chunk_h, chunk_w = arr.chunks
    counts = np.zeros(n_labels + 1, dtype=np.int64)
    sum_y = np.zeros(n_labels + 1, dtype=np.float64)
    sum_x = np.zeros(n_labels + 1, dtype=np.float64)
    signal_sum = 0.0
    clean_sum = 0.0
    chunk_origins = [
        (y, x)
        for y in range(0, mosaic_shape[0], chunk_h)
        for x in range(0, mosaic_shape[1], chunk_w)
    ]
    total = len(chunk_origins) + rows * cols - len(missing)

    def chunk(origin: tuple[int, int]) -> tuple[np.ndarray, list[np.ndarray], float, float]:
        # a pure function of the chunk's position, run in threads; summed below in order
        y, x = origin
        h = min(chunk_h, mosaic_shape[0] - y)
        w = min(chunk_w, mosaic_shape[1] - x)
        signal, lab = _render_parts(index, y, x, h, w, app)
        substrate = render_substrate(y, x, h, w, seed=seed, appearance=app)
        flat = lab.ravel()
        gy, gx = np.indices((h, w))
        sums = [
            np.bincount(flat, minlength=n_labels + 1),
            np.bincount(flat, weights=(gy + y).ravel(), minlength=n_labels + 1),
            np.bincount(flat, weights=(gx + x).ravel(), minlength=n_labels + 1),
        ]
        return lab, sums, float(signal[lab > 0].sum()), float(substrate.sum() + signal.sum())

    parts = zip(chunk_origins, ordered_map(chunk, chunk_origins), strict=True)
    for done, ((y, x), (lab, (n, sy, sx), signal_part, clean_part)) in enumerate(parts, start=1):
        arr[y : y + lab.shape[0], x : x + lab.shape[1]] = lab
        counts += n
        sum_y += sy
        sum_x += sx
        signal_sum += signal_part
        clean_sum += clean_part
        if progress is not None:
            progress(done, total)
    done = len(chunk_origins)

    n_fg = int(counts[1:].sum())
    mean_signal = signal_sum / n_fg if n_fg else 1.0
    mean_level = clean_sum / (mosaic_shape[0] * mosaic_shape[1])
    sigma = noise_sigma(snr, mean_signal)

    # Truth table: only particles that own at least one pixel (all, unless hidden by others).
    lab_ids = particles["label"].to_numpy(np.int64)
    truth = pd.DataFrame(
        {
            "label": lab_ids.astype(np.uint32),
            "shape": particles["shape"].to_numpy(),
            **truth_measures(counts[lab_ids], sum_y[lab_ids], sum_x[lab_ids], pixel_size_nm),
            "group": particles["group"].to_numpy(np.int64),
        },
        columns=_TRUTH_COLUMNS,
    )
    truth = truth[truth["area_px"] > 0].reset_index(drop=True)
    write_truth_table(out_dir, truth)

    return write_tiles(
        Path(out_dir),
        lambda oy, ox: (
            render_substrate(oy, ox, tile_h, tile_w, seed=seed, appearance=app)
            + _render_parts(index, oy, ox, tile_h, tile_w, app)[0]
        ),
        rows=rows,
        cols=cols,
        tile_shape=(tile_h, tile_w),
        overlap=overlap,
        missing=missing,
        pixel_size_nm=pixel_size_nm,
        bit_depth=bit_depth,
        seed=seed,
        stage_error_px=stage_error_px,
        noise_sigma=sigma,
        mean_level=mean_level,
        shot_fraction=shot_fraction,
        gain_sigma=gain_sigma,
        offset_sigma=offset_sigma,
        vignetting=vignetting,
        n_particles=len(truth),
        progress=None if progress is None else (lambda k, _n: progress(done + k, total)),
    )
