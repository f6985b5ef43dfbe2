"""Random drawing of one HRTEM object per class of Groschner et al. (2021): size, outline,
attenuation, lattice fringes, strain, and the planar defect or the members of an agglomerate."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from mosaicflow.errors import ConfigError
from mosaicflow.synth.hrtem_model import (
    DEFAULT_PIXEL_SIZE_NM,
    Fault,
    Fringe,
    HrtemAppearance,
    Member,
    ParticleSpec,
    check_pixel_size,
)

__all__ = [
    "CLASSES",
    "MIN_MEMBER_TURN_DEG",
    "check_kind",
    "draw_numbered",
    "draw_particle",
]

CLASSES: tuple[str, ...] = (
    "crystalline",
    "stacking_fault",
    "misoriented",
    "agglomerate",
    "empty",
)
MIN_MEMBER_TURN_DEG = 15.0
_N_HARMONICS = 4  # outline harmonics k = 2 .. 5

# SeedSequence streams shared by crops and fields; distinct, so a draw added to one never
# shifts another.
STREAM_SPEC = 0x4A
STREAM_CARBON = 0xCA
STREAM_NOISE = 0x4E


def check_kind(kind: str) -> int:
    """Index of ``kind`` in :data:`CLASSES`.

    Parameters
    ----------
    kind : str
        Class name.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        ``kind`` is not a class.
    """
    try:
        return CLASSES.index(kind)
    except ValueError:
        raise ConfigError(f"unknown particle class {kind!r}; expected one of {CLASSES}") from None


def _diameter(rng: np.random.Generator, app: HrtemAppearance) -> float:
    mean, cv = app.diameter_nm
    s = math.sqrt(math.log1p(cv * cv))
    d = float(rng.lognormal(math.log(mean) - s * s / 2.0, s))
    return float(np.clip(d, *app.diameter_range_nm))


def _harmonics(rng: np.random.Generator, roughness: float) -> tuple[tuple[float, float], ...]:
    amps = roughness * rng.uniform(0.0, 1.0, size=_N_HARMONICS) / np.arange(1, _N_HARMONICS + 1)
    phis = rng.uniform(0.0, 2.0 * math.pi, size=_N_HARMONICS)
    return tuple((float(a), float(p)) for a, p in zip(amps, phis, strict=True))


def _fringes(
    rng: np.random.Generator,
    app: HrtemAppearance,
    pixel_size_nm: float,
    angle: float | None = None,
) -> tuple[Fringe, ...]:
    lo, hi = app.fringe_contrast
    amp = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    angle = float(rng.uniform(0.0, math.pi)) if angle is None else angle
    first = Fringe(
        period_px=float(rng.uniform(*app.fringe_spacing_nm)) / pixel_size_nm,
        angle_rad=angle,
        phase=float(rng.uniform(0.0, 2.0 * math.pi)),
        amplitude=amp,
    )
    crossed = rng.uniform() < app.crossed_fraction
    # Drawn whether used or not, so the crossed fraction does not shift later draws.
    second_period = float(rng.uniform(*app.fringe_spacing_nm)) / pixel_size_nm
    turn = math.radians(float(rng.uniform(*app.crossed_angle_deg))) * (
        1.0 if rng.uniform() < 0.5 else -1.0
    )
    second_phase = float(rng.uniform(0.0, 2.0 * math.pi))
    second_amp = amp * float(rng.uniform(*app.crossed_amplitude))
    if not crossed:
        return (first,)
    return (first, Fringe(second_period, angle + turn, second_phase, second_amp))


_N_WAVES = 6


def _waves(
    rng: np.random.Generator, app: HrtemAppearance, pixel_size_nm: float, std: float
) -> tuple[tuple[float, float, float, float], ...]:
    """A smooth random field of standard deviation ``std``: ``_N_WAVES`` random plane waves."""
    wavelength = rng.uniform(*app.distortion_wavelength_nm, size=_N_WAVES) / pixel_size_nm
    direction = rng.uniform(0.0, 2.0 * math.pi, size=_N_WAVES)
    phase = rng.uniform(0.0, 2.0 * math.pi, size=_N_WAVES)
    if std == 0:
        return ()
    amp = std * math.sqrt(2.0 / _N_WAVES)
    q = 2.0 * math.pi / wavelength
    return tuple(
        (amp, float(qi * math.sin(t)), float(qi * math.cos(t)), float(p))
        for qi, t, p in zip(q, direction, phase, strict=True)
    )


def _member(
    rng: np.random.Generator,
    app: HrtemAppearance,
    pixel_size_nm: float,
    *,
    diameter_nm: float,
    with_fringes: bool,
    empty: bool = False,
    fringe_angle: float | None = None,
) -> Member:
    harmonics = _harmonics(rng, app.empty_roughness if empty else app.roughness)
    # radius_px such that the outline's area equals a disc of diameter_nm:
    # area = pi R^2 (1 + sum a_k^2 / 2).
    a2 = sum(a * a for a, _ in harmonics)
    radius = diameter_nm / (2.0 * pixel_size_nm) / math.sqrt(1.0 + a2 / 2.0)
    mu_range = app.carbon_attenuation_per_nm if empty else app.attenuation_per_nm
    mu = float(rng.uniform(*mu_range))
    fringes = _fringes(rng, app, pixel_size_nm, fringe_angle)
    strain = _waves(rng, app, pixel_size_nm, app.strain_rad)
    modulation = _waves(rng, app, pixel_size_nm, app.fringe_modulation)
    return Member(
        y=0.0,
        x=0.0,
        radius_px=radius,
        harmonics=harmonics,
        diameter_nm=diameter_nm,
        attenuation_per_nm=mu,
        fringes=fringes if with_fringes else (),
        strain=strain if with_fringes else (),
        modulation=modulation if with_fringes else (),
    )


def _line_angle_deg(a: float, b: float) -> float:
    """Angle (degrees, 0..90) between two line directions given in radians."""
    d = math.degrees(abs(a - b)) % 180.0
    return min(d, 180.0 - d)


def draw_particle(
    kind: str,
    *,
    rng: np.random.Generator,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
    appearance: HrtemAppearance | None = None,
) -> ParticleSpec:
    """Draw one object of class ``kind``, centred near the origin (pixel coordinates).

    Parameters
    ----------
    kind : str
        One of :data:`CLASSES`.
    rng : numpy.random.Generator
        Source of randomness. Every kind but ``agglomerate`` makes the same sequence of draws,
        so one generator state gives the same size and outline whatever the class.
    pixel_size_nm : float
        Pixel size that converts the physical sizes and spacings.
    appearance : HrtemAppearance, optional
        Size, contrast and defect settings.

    Returns
    -------
    ParticleSpec
    """
    app = appearance or HrtemAppearance()
    check_kind(kind)
    check_pixel_size(pixel_size_nm, app)
    if kind == "agglomerate":
        lo, hi = app.agglomerate_members
        n = int(rng.integers(lo, hi + 1))
        # Fringe directions at least MIN_MEMBER_TURN_DEG apart (mod 180): a random grain
        # orientation per member, never two members that read as one crystal.
        angles: list[float] = []
        for _ in range(n):
            for _ in range(100):
                a = float(rng.uniform(0.0, math.pi))
                if all(_line_angle_deg(a, b) >= MIN_MEMBER_TURN_DEG for b in angles):
                    break
            angles.append(a)
        members = [
            _member(
                rng,
                app,
                pixel_size_nm,
                diameter_nm=max(_diameter(rng, app) * app.member_scale, app.diameter_range_nm[0]),
                with_fringes=True,
                fringe_angle=a,
            )
            for a in angles
        ]
        placed = [members[0]]
        for new in members[1:]:
            best: tuple[float, Member] | None = None
            for _ in range(30):
                host = placed[int(rng.integers(len(placed)))]
                phi = float(rng.uniform(0.0, 2.0 * math.pi))
                # The smaller of the pair reaches 20-60 % of its smallest radius into the
                # larger: less than the sum of the smallest radii, so the footprints overlap
                # (one blob), and it sticks out by far more than the outlines' roughness.
                overlap = float(rng.uniform(0.2, 0.6))
                r_host, r_new = host.radius_range()[0], new.radius_range()[0]
                d = max(r_host, r_new) + (1.0 - overlap) * min(r_host, r_new)
                cand = replace(new, y=host.y + d * math.sin(phi), x=host.x + d * math.cos(phi))
                # Clearance from the other members: neither centre inside the other outline.
                clearance = min(
                    (
                        math.hypot(cand.y - m.y, cand.x - m.x)
                        - max(m.radius_range()[1], cand.radius_range()[1])
                        for m in placed
                        if m is not host
                    ),
                    default=math.inf,
                )
                if best is None or clearance > best[0]:
                    best = (clearance, cand)
                if clearance >= 0:
                    break
            assert best is not None
            placed.append(best[1])
        cy = float(np.mean([m.y for m in placed]))
        cx = float(np.mean([m.x for m in placed]))
        return ParticleSpec(kind, tuple(placed)).shifted(-cy, -cx)

    diameter = _diameter(rng, app)
    member = _member(
        rng,
        app,
        pixel_size_nm,
        diameter_nm=diameter,
        with_fringes=kind in ("crystalline", "stacking_fault"),
        empty=kind == "empty",
    )
    # Fault geometry is drawn for every kind so that the kinds share one draw sequence.
    off_r = float(rng.uniform(*app.fault_offset)) * member.radius_px
    off_phi = float(rng.uniform(0.0, 2.0 * math.pi))
    twin = bool(rng.uniform() < app.twin_fraction)
    shift = float(rng.uniform(*app.fault_shift_rad))
    normal_free = float(rng.uniform(0.0, 2.0 * math.pi))
    tilt = math.radians(float(rng.uniform(25.0, 65.0))) * (1.0 if rng.uniform() < 0.5 else -1.0)
    if kind != "stacking_fault":
        return ParticleSpec(kind, (member,))
    if twin:
        # The boundary normal makes 25-65 degrees with the fringe wave vector, so the mirrored
        # fringes turn by 50-90 degrees (a mirror along the fringes would change nothing).
        fault = Fault(
            y=off_r * math.sin(off_phi),
            x=off_r * math.cos(off_phi),
            normal_rad=member.fringes[0].angle_rad + tilt,
            kind="twin",
        )
    else:
        fault = Fault(
            y=off_r * math.sin(off_phi),
            x=off_r * math.cos(off_phi),
            normal_rad=normal_free,
            kind="shift",
            shift_rad=shift,
        )
    return ParticleSpec(kind, (member,), fault)


def draw_numbered(
    c: int,
    i: int,
    *,
    seed: int,
    pixel_size_nm: float,
    appearance: HrtemAppearance,
) -> ParticleSpec:
    """Object ``i`` of class ``CLASSES[c]`` of a call, drawn from its own stream ``(seed, c, i)``.

    Parameters
    ----------
    c : int
        Index of the class in :data:`CLASSES`.
    i : int
        Number of the object.
    seed : int
        Seed of the call.
    pixel_size_nm : float
        Pixel size.
    appearance : HrtemAppearance
        Size, contrast and defect settings.

    Returns
    -------
    ParticleSpec
        Centred near the origin (see :func:`draw_particle`).
    """
    rng = np.random.default_rng([seed, STREAM_SPEC, c, i])
    return draw_particle(CLASSES[c], rng=rng, pixel_size_nm=pixel_size_nm, appearance=appearance)
