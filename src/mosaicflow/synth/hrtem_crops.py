"""Single-particle HRTEM crops, one object each with its footprint and class, as a segmenter
would hand them to a particle classifier (see ``docs/SYNTH_HRTEM.md``)."""

from __future__ import annotations

import math

import numpy as np

from mosaicflow.errors import ConfigError
from mosaicflow.synth.hrtem_draw import (
    CLASSES,
    STREAM_CARBON,
    STREAM_NOISE,
    draw_numbered,
)
from mosaicflow.synth.hrtem_model import (
    DEFAULT_PIXEL_SIZE_NM,
    DEFAULT_SNR,
    HrtemAppearance,
    ParticleSpec,
    check_pixel_size,
    render_carbon,
    render_particle,
)
from mosaicflow.synth.noise import add_noise, noise_sigma

__all__ = ["particle_crops", "particle_specs"]

_STREAM_GAIN = 0x6A  # SeedSequence stream of the per-crop gain


def particle_specs(
    n_per_class: int,
    *,
    seed: int = 0,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    crop_margin_px: int = 8,
    appearance: HrtemAppearance | None = None,
) -> list[ParticleSpec]:
    """The objects :func:`particle_crops` renders, each in its crop's pixel frame.

    Spec ``i`` is drawn from ``(seed, class, i)`` alone. The crop of a spec spans
    ``[0, ceil(ymax) + crop_margin_px]`` and likewise in x, where ``extent()`` gives ``ymax``.

    Parameters
    ----------
    n_per_class, seed, pixel_size_nm, crop_margin_px, appearance
        As in :func:`particle_crops`.

    Returns
    -------
    list of ParticleSpec
        Grouped by class in the order of :data:`CLASSES`.
    """
    app = appearance or HrtemAppearance()
    if int(n_per_class) < 0:
        raise ConfigError(f"n_per_class must be >= 0, got {n_per_class}")
    if int(crop_margin_px) < 0:
        raise ConfigError(f"crop_margin_px must be >= 0, got {crop_margin_px}")
    check_pixel_size(pixel_size_nm, app)
    specs = []
    for c in range(len(CLASSES)):
        for i in range(int(n_per_class)):
            spec = draw_numbered(c, i, seed=seed, pixel_size_nm=pixel_size_nm, appearance=app)
            ymin, xmin, _, _ = spec.extent()
            specs.append(
                spec.shifted(crop_margin_px - math.floor(ymin), crop_margin_px - math.floor(xmin))
            )
    return specs


def particle_crops(
    n_per_class: int,
    *,
    seed: int = 0,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    snr: float | None = DEFAULT_SNR,
    crop_margin_px: int = 8,
    gain_sigma: float = 0.08,
    shot_fraction: float = 0.8,
    appearance: HrtemAppearance | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """One crop per object, ``n_per_class`` of each class, as a segmenter would return them.

    Parameters
    ----------
    n_per_class : int
        Crops of each class in :data:`CLASSES` (the output is grouped by class, in that order).
    seed : int
        Seeds everything; crop ``i`` of class ``c`` is drawn from ``(seed, c, i)``.
    pixel_size_nm : float
        Pixel size (0.05 nm puts 0.20-0.25 nm fringes at 4-5 px).
    snr : float or None
        Mean particle contrast / noise standard deviation. The contrast is the mean of
        ``|clean - carbon|`` over the footprints of all non-empty crops of the call (so
        small, thin particles are noisier than large ones, as in one micrograph series);
        ``None``: no noise.
    crop_margin_px : int
        Background kept around the footprint's bounding box (at least this many pixels,
        at most one more).
    gain_sigma : float
        Each crop is scaled by a gain ``~ N(1, gain_sigma)``: crops come from micrographs of
        different exposure.
    shot_fraction : float
        Share of the noise variance that is Poisson shot noise (see
        :func:`mosaicflow.synth.add_noise`).
    appearance : HrtemAppearance, optional

    Returns
    -------
    images : list of ndarray of float32
        Bright-field intensity (vacuum ~ 1; carbon ~ 1; particles darker).
    masks : list of ndarray of bool
        The object's footprint: one 4-connected blob (for ``empty`` the faint carbon blob).
    classes : list of str
    """
    app = appearance or HrtemAppearance()
    specs = particle_specs(
        n_per_class,
        seed=seed,
        pixel_size_nm=pixel_size_nm,
        crop_margin_px=crop_margin_px,
        appearance=app,
    )
    n = int(n_per_class)
    cleans: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    classes: list[str] = []
    signal_sum, signal_n = 0.0, 0
    for j, spec in enumerate(specs):
        c, i = divmod(j, n)
        _, _, ymax, xmax = spec.extent()
        h = math.ceil(ymax) + int(crop_margin_px) + 1
        w = math.ceil(xmax) + int(crop_margin_px) + 1
        carbon = render_carbon(
            (h, w), np.random.default_rng([seed, STREAM_CARBON, c, i]), app, pixel_size_nm
        )
        gy = np.arange(h, dtype=np.float64)[:, None]
        gx = np.arange(w, dtype=np.float64)[None, :]
        trans, add, foot = render_particle(
            spec, gy, gx, pixel_size_nm=pixel_size_nm, appearance=app
        )
        clean = carbon * trans + add
        if spec.kind != "empty":
            signal_sum += float(np.abs(clean - carbon)[foot].sum())
            signal_n += int(foot.sum())
        cleans.append(clean)
        masks.append(foot)
        classes.append(spec.kind)
    sigma = noise_sigma(snr, signal_sum / signal_n if signal_n else 1.0)
    images = []
    for j, clean in enumerate(cleans):
        c, i = divmod(j, n)
        rng = np.random.default_rng([seed, STREAM_NOISE, c, i])
        noisy = add_noise(clean, sigma=sigma, rng=rng, shot_fraction=shot_fraction)
        gain = 1.0 + gain_sigma * float(
            np.random.default_rng([seed, _STREAM_GAIN, c, i]).standard_normal()
        )
        images.append((noisy * gain).astype(np.float32))
    return images, masks, classes
