"""Synthetic bright-field HRTEM images of supported nanoparticles in the five classes of
Groschner et al. (2021): whole fields and Maps-like tile grids with exact ground truth, and the
public names of the HRTEM mode (crops and objects too; see ``docs/SYNTH_HRTEM.md``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError, MosaicflowError
from mosaicflow.synth.grid import (
    GridTruth,
    create_truth_labels,
    grid_layout,
    truth_measures,
    write_tiles,
    write_truth_table,
)
from mosaicflow.synth.hrtem_crops import particle_crops, particle_specs
from mosaicflow.synth.hrtem_draw import (
    CLASSES,
    MIN_MEMBER_TURN_DEG,
    STREAM_CARBON,
    STREAM_NOISE,
    check_kind,
    draw_numbered,
    draw_particle,
)
from mosaicflow.synth.hrtem_model import (
    DEFAULT_PIXEL_SIZE_NM,
    DEFAULT_SNR,
    Fault,
    Fringe,
    HrtemAppearance,
    Member,
    ParticleSpec,
    check_pixel_size,
    fresnel_pad,
    render_carbon,
    render_particle,
)
from mosaicflow.synth.noise import noise_sigma, noisy_field

__all__ = [
    "CLASSES",
    "DEFAULT_PIXEL_SIZE_NM",
    "DEFAULT_SNR",
    "MIN_MEMBER_TURN_DEG",
    "TRUTH_COLUMNS",
    "Fault",
    "Fringe",
    "HrtemAppearance",
    "Member",
    "ParticleSpec",
    "draw_particle",
    "hrtem_field",
    "particle_crops",
    "particle_specs",
    "render_particle",
    "write_hrtem_grid",
]

TRUTH_COLUMNS: tuple[str, ...] = (
    "label",
    "class",
    "centroid_y_nm",
    "centroid_x_nm",
    "area_px",
    "area_nm2",
    "ecd_nm",
    "n_members",
)

_STREAM_FIELD = 0xF7  # SeedSequence stream of the classes and positions of a field


# --------------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------------


def _class_probabilities(
    class_weights: Mapping[str, float] | Sequence[float] | None,
) -> np.ndarray:
    if class_weights is None:
        w = np.ones(len(CLASSES))
    elif isinstance(class_weights, Mapping):
        for key in class_weights:
            check_kind(key)
        w = np.array([float(class_weights.get(k, 0.0)) for k in CLASSES])
    else:
        w = np.asarray(class_weights, dtype=np.float64)
        if w.shape != (len(CLASSES),):
            raise ConfigError(
                f"class_weights has {w.size} values; expected {len(CLASSES)}, one per class "
                f"{CLASSES}, or a mapping class -> weight"
            )
    if np.any(w < 0) or not w.sum() > 0:
        raise ConfigError(f"class_weights must be >= 0 with a positive sum, got {class_weights}")
    return w / w.sum()


def _place(
    shape: tuple[int, int],
    n_particles: int,
    probabilities: np.ndarray,
    seed: int,
    pixel_size_nm: float,
    app: HrtemAppearance,
    *,
    gap_px: float,
    max_attempts: int = 500,
) -> list[ParticleSpec]:
    """Draw ``n_particles`` objects and place them without overlap (bounding circles)."""
    height, width = shape
    rng = np.random.default_rng([seed, _STREAM_FIELD])
    kinds = rng.choice(len(CLASSES), size=n_particles, p=probabilities)
    specs = []
    for i, c in enumerate(kinds.tolist()):
        specs.append(draw_numbered(c, i, seed=seed, pixel_size_nm=pixel_size_nm, appearance=app))
    # Largest first: they are the hardest to fit.
    radii = []
    for s in specs:
        ymin, xmin, ymax, xmax = s.extent()
        radii.append(max(-ymin, -xmin, ymax, xmax))
    order = np.argsort(-np.asarray(radii), kind="stable")
    cy = np.empty(0)
    cx = np.empty(0)
    cr = np.empty(0)
    placed: dict[int, ParticleSpec] = {}
    pad = fresnel_pad(app, pixel_size_nm)
    for i in order.tolist():
        r = radii[i] + pad
        lo_y, hi_y = r, height - 1 - r
        lo_x, hi_x = r, width - 1 - r
        if hi_y < lo_y or hi_x < lo_x:
            raise ConfigError(
                f"a {CLASSES[kinds[i]]} particle of radius {radii[i]:.0f} px does not fit in a "
                f"{height}x{width} px field; use a larger field or smaller diameter_range_nm"
            )
        ys = rng.uniform(lo_y, hi_y, size=max_attempts)
        xs = rng.uniform(lo_x, hi_x, size=max_attempts)
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            if cy.size == 0 or np.all((cy - y) ** 2 + (cx - x) ** 2 >= (cr + r + gap_px) ** 2):
                placed[i] = specs[i].shifted(y, x)
                cy, cx, cr = np.append(cy, y), np.append(cx, x), np.append(cr, r)
                break
        else:
            raise ConfigError(
                f"could place only {len(placed)} of {n_particles} particles in a "
                f"{height}x{width} px field ({height * pixel_size_nm:.0f}x"
                f"{width * pixel_size_nm:.0f} nm) without overlap; use fewer particles or a "
                "larger field"
            )
    return [placed[i] for i in range(n_particles)]


def _render_field(
    shape: tuple[int, int],
    specs: Sequence[ParticleSpec],
    seed: int,
    pixel_size_nm: float,
    app: HrtemAppearance,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, float]:
    """Clean field, labels, exact truth table and the mean particle contrast.

    Objects never overlap, so each is measured inside its own window of the final label image.
    """
    height, width = shape
    clean = render_carbon(shape, np.random.default_rng([seed, STREAM_CARBON]), app, pixel_size_nm)
    labels = np.zeros(shape, dtype=np.uint32)
    pad = fresnel_pad(app, pixel_size_nm)
    signal_sum, signal_n = 0.0, 0
    windows = []
    for label, spec in enumerate(specs, start=1):
        ymin, xmin, ymax, xmax = spec.extent()
        ya, yb = max(0, math.floor(ymin - pad)), min(height, math.ceil(ymax + pad) + 1)
        xa, xb = max(0, math.floor(xmin - pad)), min(width, math.ceil(xmax + pad) + 1)
        gy = np.arange(ya, yb, dtype=np.float64)[:, None]
        gx = np.arange(xa, xb, dtype=np.float64)[None, :]
        trans, add, foot = render_particle(
            spec, gy, gx, pixel_size_nm=pixel_size_nm, appearance=app
        )
        win = (slice(ya, yb), slice(xa, xb))
        carbon = clean[win]
        if spec.kind != "empty":
            signal_sum += float(np.abs(carbon * (trans - 1.0) + add)[foot].sum())
            signal_n += int(foot.sum())
        clean[win] = carbon * trans + add
        labels[win][foot] = label
        windows.append((gy, gx, win))
    n = len(specs)
    area = np.zeros(n, dtype=np.int64)
    sum_y = np.zeros(n)
    sum_x = np.zeros(n)
    for i, (gy, gx, win) in enumerate(windows):
        own = labels[win] == i + 1
        area[i] = int(own.sum())
        sum_y[i] = float((own * gy).sum())
        sum_x[i] = float((own * gx).sum())
    if np.any(area == 0):
        raise MosaicflowError("synth_hrtem: a placed object owns no pixel (placement bug)")
    truth = pd.DataFrame(
        {
            "label": np.arange(1, n + 1, dtype=np.uint32),
            "class": pd.Series([s.kind for s in specs], dtype="str"),
            **truth_measures(area, sum_y, sum_x, pixel_size_nm),
            "n_members": np.array([len(s.members) for s in specs], dtype=np.int64),
        },
        columns=list(TRUTH_COLUMNS),
    )
    mean_signal = signal_sum / signal_n if signal_n else 1.0
    return clean, labels, truth, mean_signal


def _clean_field(
    shape: tuple[int, int],
    n_particles: int,
    class_weights: Mapping[str, float] | Sequence[float] | None,
    seed: int,
    pixel_size_nm: float,
    app: HrtemAppearance,
    min_gap_nm: float,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, float]:
    """Draw, place and render ``n_particles`` objects (see :func:`_render_field`)."""
    if int(n_particles) < 0:
        raise ConfigError(f"n_particles must be >= 0, got {n_particles}")
    specs = _place(
        shape,
        int(n_particles),
        _class_probabilities(class_weights),
        seed,
        pixel_size_nm,
        app,
        gap_px=min_gap_nm / pixel_size_nm,
    )
    return _render_field(shape, specs, seed, pixel_size_nm, app)


def hrtem_field(
    shape: tuple[int, int],
    *,
    n_particles: int,
    class_weights: Mapping[str, float] | Sequence[float] | None = None,
    seed: int = 0,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    snr: float | None = DEFAULT_SNR,
    shot_fraction: float = 0.8,
    min_gap_nm: float = 1.0,
    appearance: HrtemAppearance | None = None,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A bright-field HRTEM field of ``n_particles`` objects on amorphous carbon.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` in pixels.
    n_particles : int
        Number of objects (particles, agglomerates and empty blobs).
    class_weights : mapping or sequence, optional
        Relative frequency of each class (a mapping class -> weight, missing classes 0, or one
        weight per :data:`CLASSES`); uniform by default.
    seed : int
        Seeds the classes, the objects, their positions, the carbon and the noise.
    pixel_size_nm : float
        Pixel size.
    snr : float or None
        Mean particle contrast (mean ``|clean - carbon|`` over the footprints of all non-empty
        objects) / noise standard deviation; ``None``: no noise.
    shot_fraction : float
        Share of the noise variance that is Poisson shot noise.
    min_gap_nm : float
        Minimum gap between the bounding circles (Fresnel fringe included) of two objects.
    appearance : HrtemAppearance, optional

    Returns
    -------
    image : ndarray of float32
    labels : ndarray of uint32
        One label per object (an agglomerate is one label: one blob), 0 = carbon. Empty blobs
        are labelled too (their class says they hold no particle).
    truth : pandas.DataFrame
        ``label``, ``class``, ``centroid_y_nm``, ``centroid_x_nm`` (pixel centres at integer
        coordinates, origin at the top-left pixel), ``area_px`` (the label's pixel count),
        ``area_nm2``, ``ecd_nm`` and ``n_members`` (particles in the object).

    Raises
    ------
    ConfigError
        The objects do not fit in the field without overlap, or an option is invalid.
    """
    app = appearance or HrtemAppearance()
    height, width = (int(v) for v in shape)
    if height <= 0 or width <= 0:
        raise ConfigError(f"shape must be positive, got {shape!r}")
    check_pixel_size(pixel_size_nm, app)
    clean, labels, truth, mean_signal = _clean_field(
        (height, width), n_particles, class_weights, seed, pixel_size_nm, app, min_gap_nm
    )
    rng = np.random.default_rng([seed, STREAM_NOISE])
    image = noisy_field(
        clean, snr=snr, mean_signal=mean_signal, rng=rng, shot_fraction=shot_fraction
    )
    return image, labels, truth


# --------------------------------------------------------------------------------------------
# Maps-like tile grid
# --------------------------------------------------------------------------------------------


def write_hrtem_grid(
    folder: str | Path,
    *,
    rows: int = 2,
    cols: int = 3,
    tile_shape: tuple[int, int] = (1024, 1024),
    overlap: float = 0.10,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    snr: float | None = DEFAULT_SNR,
    seed: int = 0,
    n_particles: int | None = None,
    density: float = 4000.0,
    class_weights: Mapping[str, float] | Sequence[float] | None = None,
    stage_error_px: float = 8.0,
    bit_depth: int = 16,
    gain_sigma: float = 0.03,
    offset_sigma: float = 0.01,
    vignetting: float = 0.0,
    shot_fraction: float = 0.8,
    min_gap_nm: float = 1.0,
    appearance: HrtemAppearance | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GridTruth:
    """Write an HRTEM tile grid in the format of :func:`mosaicflow.synth.write_maps_grid`.

    Parameters
    ----------
    folder : str or Path
        Acquisition folder (created; files of the same names are overwritten).
    rows, cols : int
        Grid size.
    tile_shape : tuple of int
        ``(height, width)`` of each tile.
    overlap : float
        Fractional overlap; the tile pitch is ``round(tile * (1 - overlap))``.
    pixel_size_nm : float
        Pixel size written to the metadata.
    snr : float or None
        As in :func:`hrtem_field`, measured over the whole true mosaic.
    seed : int
        Seeds everything; the clean mosaic equals ``hrtem_field(mosaic_shape,
        n_particles=..., seed=seed, snr=None, ...)``.
    n_particles : int, optional
        Number of objects; by default ``round(density * mosaic area in um^2)``.
    density : float
        Objects per square micrometre when ``n_particles`` is not given (4000 per um^2 is one
        per 250 nm^2, about 20 % coverage with the default sizes).
    class_weights : mapping or sequence, optional
        As in :func:`hrtem_field`.
    stage_error_px, bit_depth, gain_sigma, offset_sigma, vignetting, shot_fraction
        As in :func:`mosaicflow.synth.write_maps_grid`.
    min_gap_nm : float
        As in :func:`hrtem_field`.
    appearance : HrtemAppearance, optional
    progress : callable, optional
        Called as ``progress(done, total)`` after each tile.

    Returns
    -------
    mosaicflow.synth.GridTruth

    Notes
    -----
    ``ground_truth/particles.csv`` has the columns of :func:`hrtem_field`'s truth table
    (``class`` included; no ``shape`` / ``group``: an agglomerate is one label). Unlike the
    SEM writer, the clean mosaic is held in memory (float64 plus uint32 labels: about 12 bytes
    per pixel, 240 MB for a 4 x 5 grid of 900 x 1400 tiles): HRTEM grids are small.
    """
    app = appearance or HrtemAppearance()
    (tile_h, tile_w), _, mosaic_shape = grid_layout(rows, cols, tile_shape, overlap, bit_depth)
    check_pixel_size(pixel_size_nm, app)
    if n_particles is None:
        if not density >= 0:
            raise ConfigError(f"density must be >= 0 objects per um^2, got {density}")
        area_um2 = mosaic_shape[0] * mosaic_shape[1] * (pixel_size_nm * 1e-3) ** 2
        n_particles = round(density * area_um2)
    clean, labels, truth, mean_signal = _clean_field(
        mosaic_shape, n_particles, class_weights, seed, pixel_size_nm, app, min_gap_nm
    )
    sigma = noise_sigma(snr, mean_signal)
    create_truth_labels(folder, mosaic_shape)[...] = labels
    del labels
    write_truth_table(folder, truth)

    return write_tiles(
        Path(folder),
        lambda oy, ox: clean[oy : oy + tile_h, ox : ox + tile_w],
        rows=rows,
        cols=cols,
        tile_shape=(tile_h, tile_w),
        overlap=overlap,
        pixel_size_nm=pixel_size_nm,
        bit_depth=bit_depth,
        seed=seed,
        stage_error_px=stage_error_px,
        noise_sigma=sigma,
        mean_level=float(clean.mean()),
        shot_fraction=shot_fraction,
        gain_sigma=gain_sigma,
        offset_sigma=offset_sigma,
        vignetting=vignetting,
        n_particles=len(truth),
        progress=progress,
    )
