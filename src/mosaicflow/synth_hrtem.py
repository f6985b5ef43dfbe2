"""Synthetic bright-field HRTEM images of supported nanoparticles in the five classes of
Groschner et al. (2021), as single-particle crops, whole fields and Maps-like tile grids with
exact ground truth (see ``docs/SYNTH_HRTEM.md``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from mosaicflow.errors import ConfigError, MosaicflowError
from mosaicflow.synth import (
    LABEL_CHUNKS,
    GridTruth,
    add_noise,
    write_tiles,
)

__all__ = [
    "CLASSES",
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

CLASSES: tuple[str, ...] = (
    "crystalline",
    "stacking_fault",
    "misoriented",
    "agglomerate",
    "empty",
)
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
_NOT_RANGES = ("diameter_nm",)
MIN_MEMBER_TURN_DEG = 15.0
_N_HARMONICS = 4  # outline harmonics k = 2 .. 5
_THETA = np.linspace(0.0, 2.0 * math.pi, 1441)  # outline sampling for exact extents

# Distinct SeedSequence streams, so adding a draw to one never shifts another.
_STREAM_SPEC = 0x4A
_STREAM_CARBON = 0xCA
_STREAM_NOISE = 0x4E
_STREAM_GAIN = 0x6A
_STREAM_FIELD = 0xF7
_STREAM_STAGE = 0x57
_STREAM_TILE = 0x71


# --------------------------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HrtemAppearance:
    """What the particles and the support film look like (intensities relative to vacuum = 1).

    Parameters
    ----------
    strain_rad : float
        Standard deviation of a smooth random drift of the fringe phase inside a particle
        (lattice bending, strain), so that a perfect crystal's fringes are not one plane wave.
    fringe_modulation : float
        Standard deviation of a smooth random modulation of the fringe amplitude (thickness
        and bend contours).
    distortion_wavelength_nm : (min, max)
        Uniform range of the wavelengths of those two fields.
    fault_offset : (min, max)
        Distance of a fault line from the particle centre, as a fraction of its radius.
    fringe_spacing_nm : (min, max)
        Uniform range of lattice-plane spacings (Au {111} 0.235 nm, {200} 0.204 nm).
    crossed_fraction : float
        Probability that a crystalline member shows a second, crossed set of fringes.
    crossed_angle_deg : (min, max)
        Angle between the two fringe sets.
    crossed_amplitude : (min, max)
        Amplitude of the second set relative to the first (below 1, so the first dominates).
    fringe_contrast : (min, max)
        Log-uniform range of the fringe amplitude (relative intensity): defocus, zone-axis tilt
        and thickness make lattice contrast vary a lot between particles.
    attenuation_per_nm : (min, max)
        Uniform range of the mass-thickness attenuation ``mu``: the particle transmits
        ``exp(-mu * thickness_nm)``, the thickness being that of a sphere of the member's size.
    carbon_attenuation_per_nm : (min, max)
        Same for the extra carbon of an ``empty`` blob (much fainter than a particle).
    diameter_nm : (mean, cv)
        Log-normal area-equivalent diameter of particles and empty blobs.
    diameter_range_nm : (min, max)
        Diameters are clipped to this range.
    member_scale : float
        Agglomerate members are this fraction of a single particle's drawn diameter.
    agglomerate_members : (min, max)
        Inclusive range of the number of particles in an agglomerate.
    roughness : float
        Outline irregularity of particles: harmonic ``k = 2..5`` of the radius has amplitude
        ``roughness * U(0, 1) / (k - 1)``.
    empty_roughness : float
        The same for empty blobs (thickness fluctuations of the film are less regular).
    fault_shift_rad : (min, max)
        Uniform range of the fringe phase jump across a stacking fault.
    twin_fraction : float
        Share of ``stacking_fault`` particles that hold a twin boundary (fringe direction
        mirrored across the boundary) instead of a phase jump.
    carbon_scale_nm, carbon_std : float
        Correlation length (Gaussian sigma) and standard deviation of the support film's
        thickness variation (relative intensity).
    speckle_period_nm, speckle_bandwidth_per_nm, speckle_std : float
        Phase-contrast speckle of amorphous carbon: isotropic noise whose spectrum is a ring
        centred on ``1 / speckle_period_nm`` (Gaussian radial profile of that width, in
        1/nm), so it has power at lattice-fringe frequencies too; its standard deviation.
    fresnel : float
        Amplitude of the bright Fresnel fringe outside the edge, relative to the particle's
        central contrast ``1 - exp(-mu * d)``.
    fresnel_offset_nm, fresnel_width_nm : float
        Distance of that fringe from the edge and its Gaussian width.
    edge_nm : float
        Width of the soft edge of the lattice-fringe envelope.
    """

    fringe_spacing_nm: tuple[float, float] = (0.20, 0.25)
    strain_rad: float = 0.3
    fringe_modulation: float = 0.25
    distortion_wavelength_nm: tuple[float, float] = (2.0, 6.0)
    fault_offset: tuple[float, float] = (0.0, 0.5)
    crossed_fraction: float = 0.3
    crossed_angle_deg: tuple[float, float] = (55.0, 90.0)
    crossed_amplitude: tuple[float, float] = (0.4, 0.8)
    fringe_contrast: tuple[float, float] = (0.02, 0.20)
    attenuation_per_nm: tuple[float, float] = (0.015, 0.035)
    carbon_attenuation_per_nm: tuple[float, float] = (0.003, 0.010)
    diameter_nm: tuple[float, float] = (7.0, 0.45)
    diameter_range_nm: tuple[float, float] = (2.5, 20.0)
    member_scale: float = 0.75
    agglomerate_members: tuple[int, int] = (2, 4)
    roughness: float = 0.06
    empty_roughness: float = 0.09
    fault_shift_rad: tuple[float, float] = (0.5 * math.pi, math.pi)
    twin_fraction: float = 0.5
    carbon_scale_nm: float = 2.0
    carbon_std: float = 0.02
    speckle_period_nm: float = 0.35
    speckle_bandwidth_per_nm: float = 1.5
    speckle_std: float = 0.04
    fresnel: float = 0.25
    fresnel_offset_nm: float = 0.25
    fresnel_width_nm: float = 0.12
    edge_nm: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and f.name not in _NOT_RANGES:
                if len(value) != 2 or value[0] > value[1]:
                    raise ConfigError(
                        f"HrtemAppearance.{f.name} must be a (min, max) pair, got {value!r}"
                    )
        if self.fringe_spacing_nm[0] <= 0 or self.diameter_range_nm[0] <= 0:
            raise ConfigError("HrtemAppearance: spacings and diameters must be positive")
        if self.fringe_contrast[0] <= 0:
            raise ConfigError(
                f"HrtemAppearance.fringe_contrast must be positive, got {self.fringe_contrast}"
            )
        if self.agglomerate_members[0] < 2:
            raise ConfigError(
                "HrtemAppearance.agglomerate_members: an agglomerate needs at least 2 "
                f"members, got {self.agglomerate_members}"
            )
        for name in ("carbon_scale_nm", "speckle_period_nm", "speckle_bandwidth_per_nm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"HrtemAppearance.{name} must be positive")
        if self.strain_rad < 0 or self.fringe_modulation < 0:
            raise ConfigError("HrtemAppearance: strain_rad and fringe_modulation must be >= 0")
        for name in ("crossed_fraction", "twin_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"HrtemAppearance.{name} must be in [0, 1]")


# --------------------------------------------------------------------------------------------
# Particle description
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fringe:
    """One set of lattice fringes: ``amplitude * cos(2 pi (u . (r - r0)) / period_px + phase)``,
    ``u = (sin angle_rad, cos angle_rad)`` in (y, x) order."""

    period_px: float
    angle_rad: float
    phase: float
    amplitude: float


@dataclass(frozen=True)
class Fault:
    """A planar defect: the line through ``(y, x)`` with unit normal at ``normal_rad``.

    On the side the normal points to, the fringes are shifted by ``shift_rad`` (``kind ==
    "shift"``, a stacking fault) or mirrored across the line (``kind == "twin"``).
    """

    y: float
    x: float
    normal_rad: float
    kind: str
    shift_rad: float = 0.0


@dataclass(frozen=True)
class Member:
    """One particle (or blob) of a :class:`ParticleSpec`, in pixel coordinates.

    The outline is ``r(theta) = radius_px * (1 + sum_k a_k cos(k theta - phi_k))``, ``k = 2..5``.
    ``strain`` and ``modulation`` are smooth random fields, each a sum of plane waves
    ``(amplitude, qy, qx, phase)`` (``q`` in rad/px, coordinates relative to the centre): the
    first is added to the fringe phase (lattice bending and strain), the second scales the
    fringe amplitude by ``max(1 + field, 0)`` (thickness and bend contours).
    """

    y: float
    x: float
    radius_px: float
    harmonics: tuple[tuple[float, float], ...]
    diameter_nm: float
    attenuation_per_nm: float
    fringes: tuple[Fringe, ...] = ()
    strain: tuple[tuple[float, float, float, float], ...] = ()
    modulation: tuple[tuple[float, float, float, float], ...] = ()

    def outline(self, theta: np.ndarray) -> np.ndarray:
        """Outline radius (px) at polar angles ``theta``."""
        scale = np.ones_like(theta)
        for k, (amp, phi) in enumerate(self.harmonics, start=2):
            scale = scale + amp * np.cos(k * theta - phi)
        return self.radius_px * scale

    def extent(self) -> tuple[float, float, float, float]:
        """``(ymin, xmin, ymax, xmax)`` of the outline (sampled every 0.25 degree)."""
        r = self.outline(_THETA)
        ys = self.y + r * np.sin(_THETA)
        xs = self.x + r * np.cos(_THETA)
        return float(ys.min()), float(xs.min()), float(ys.max()), float(xs.max())


@dataclass(frozen=True)
class ParticleSpec:
    """Everything needed to render one object of class ``kind``."""

    kind: str
    members: tuple[Member, ...]
    fault: Fault | None = None

    def extent(self) -> tuple[float, float, float, float]:
        """``(ymin, xmin, ymax, xmax)`` of the footprint, in pixels."""
        ext = np.array([m.extent() for m in self.members])
        return (
            float(ext[:, 0].min()),
            float(ext[:, 1].min()),
            float(ext[:, 2].max()),
            float(ext[:, 3].max()),
        )

    def shifted(self, dy: float, dx: float) -> ParticleSpec:
        """The same object moved by ``(dy, dx)`` pixels."""
        members = tuple(replace(m, y=m.y + dy, x=m.x + dx) for m in self.members)
        fault = (
            None
            if self.fault is None
            else replace(self.fault, y=self.fault.y + dy, x=self.fault.x + dx)
        )
        return ParticleSpec(self.kind, members, fault)


def _check_kind(kind: str) -> int:
    try:
        return CLASSES.index(kind)
    except ValueError:
        raise ConfigError(f"unknown particle class {kind!r}; expected one of {CLASSES}") from None


def _check_pixel_size(pixel_size_nm: float, app: HrtemAppearance) -> None:
    if not pixel_size_nm > 0:
        raise ConfigError(f"pixel_size_nm must be positive, got {pixel_size_nm}")
    period = app.fringe_spacing_nm[0] / pixel_size_nm
    if period <= 2.0:
        raise ConfigError(
            f"pixel_size_nm={pixel_size_nm}: the finest fringe spacing "
            f"{app.fringe_spacing_nm[0]} nm would be {period:.2f} px, at or below the Nyquist "
            "limit of 2 px; use a pixel size below "
            f"{app.fringe_spacing_nm[0] / 2.0:.3f} nm (HRTEM is typically 0.02-0.1 nm/px)"
        )


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


def _wave_field(
    waves: Sequence[tuple[float, float, float, float]], dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(dy.shape, dx.shape), dtype=np.float64)
    for amp, qy, qx, phase in waves:
        out += amp * np.cos(qy * dy + qx * dx + phase)
    return out


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


def _min_radius(m: Member) -> float:
    return float(m.outline(_THETA).min())


def _max_radius(m: Member) -> float:
    return float(m.outline(_THETA).max())


def draw_particle(
    kind: str,
    *,
    rng: np.random.Generator,
    pixel_size_nm: float = 0.05,
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
    _check_kind(kind)
    _check_pixel_size(pixel_size_nm, app)
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
                r_host, r_new = _min_radius(host), _min_radius(new)
                d = max(r_host, r_new) + (1.0 - overlap) * min(r_host, r_new)
                cand = replace(new, y=host.y + d * math.sin(phi), x=host.x + d * math.cos(phi))
                # Clearance from the other members: neither centre inside the other outline.
                clearance = min(
                    (
                        math.hypot(cand.y - m.y, cand.x - m.x)
                        - max(_max_radius(m), _max_radius(cand))
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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _fringe_field(
    fringes: Sequence[Fringe],
    gy: np.ndarray,
    gx: np.ndarray,
    origin: tuple[float, float],
    fault: Fault | None,
    extra_phase: np.ndarray,
) -> np.ndarray:
    oy, ox = origin
    dy, dx = gy - oy, gx - ox
    if fault is None:
        side = None
        ny = nx = 0.0
    else:
        ny, nx = math.sin(fault.normal_rad), math.cos(fault.normal_rad)
        side = (dy * ny + dx * nx) > 0.0
    out = np.zeros(np.broadcast_shapes(gy.shape, gx.shape), dtype=np.float64)
    for f in fringes:
        uy, ux = math.sin(f.angle_rad), math.cos(f.angle_rad)
        k = 2.0 * math.pi / f.period_px
        arg = k * (dy * uy + dx * ux) + f.phase + extra_phase
        if fault is not None and side is not None:
            if fault.kind == "twin":
                # Mirror the wave vector across the boundary line: u' = u - 2 (u . n) n.
                dot = uy * ny + ux * nx
                vy, vx = uy - 2.0 * dot * ny, ux - 2.0 * dot * nx
                arg = np.where(side, k * (dy * vy + dx * vx) + f.phase + extra_phase, arg)
            else:
                arg = np.where(side, arg + fault.shift_rad, arg)
        out += f.amplitude * np.cos(arg)
    return out


def render_particle(
    spec: ParticleSpec,
    gy: np.ndarray,
    gx: np.ndarray,
    *,
    pixel_size_nm: float = 0.05,
    appearance: HrtemAppearance | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optical effect and footprint of one object on a pixel grid.

    Parameters
    ----------
    spec : ParticleSpec
    gy, gx : ndarray
        Pixel-centre coordinates, broadcastable to the window (``(h, 1)`` and ``(1, w)``).
    pixel_size_nm : float
        Pixel size (for the Fresnel fringe and the soft edge).
    appearance : HrtemAppearance, optional

    Returns
    -------
    transmission : ndarray of float64
        Mass-thickness transmission ``exp(-sum mu_i * t_i)`` (1 outside).
    additive : ndarray of float64
        Lattice fringes inside the footprint plus the Fresnel fringe outside the edge.
    footprint : ndarray of bool
        Pixels whose centre lies inside the outline of at least one member.

    Notes
    -----
    The clean image is ``carbon * transmission + additive``.
    """
    app = appearance or HrtemAppearance()
    shape = np.broadcast_shapes(gy.shape, gx.shape)
    log_t = np.zeros(shape, dtype=np.float64)
    additive = np.zeros(shape, dtype=np.float64)
    dist = np.full(shape, np.inf, dtype=np.float64)
    edge_px = app.edge_nm / pixel_size_nm
    contrast = 0.0
    for m in spec.members:
        dy, dx = gy - m.y, gx - m.x
        r = np.sqrt(dy * dy + dx * dx)
        rad = m.outline(np.arctan2(dy, dx))
        rho = r / rad
        thick = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
        log_t -= m.attenuation_per_nm * m.diameter_nm * thick
        contrast = max(contrast, 1.0 - math.exp(-m.attenuation_per_nm * m.diameter_nm))
        d = r - rad
        np.minimum(dist, d, out=dist)
        if m.fringes:
            envelope = _smoothstep(0.5 - d / edge_px) * (0.35 + 0.65 * thick)
            envelope = envelope * np.maximum(1.0 + _wave_field(m.modulation, dy, dx), 0.0)
            origin = (m.y, m.x) if spec.fault is None else (spec.fault.y, spec.fault.x)
            strain = _wave_field(m.strain, dy, dx)
            additive += envelope * _fringe_field(m.fringes, gy, gx, origin, spec.fault, strain)
    if app.fresnel > 0:
        off = app.fresnel_offset_nm / pixel_size_nm
        width = app.fresnel_width_nm / pixel_size_nm
        z = (dist - off) / width
        additive += app.fresnel * contrast * np.exp(-0.5 * z * z)
    return np.exp(log_t), additive, dist <= 0.0


def _fresnel_pad(app: HrtemAppearance, pixel_size_nm: float) -> float:
    return (app.fresnel_offset_nm + 4.0 * app.fresnel_width_nm) / pixel_size_nm + 1.0


def _filtered_noise(
    shape: tuple[int, int], rng: np.random.Generator, transfer: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Unit-variance periodic Gaussian noise whose amplitude spectrum is ``transfer(|f|)``.

    White noise is filtered in Fourier space and divided by the filter's exact discrete norm
    (``sqrt(mean |H|^2)`` over the full frequency grid), so the standard deviation is 1 in
    expectation whatever the shape.
    """
    h, w = shape
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    gain = transfer(np.sqrt(fy * fy + fx * fx))
    # rfft keeps columns 0 .. w//2; every other column stands for two of the full grid.
    weight = np.full(fx.shape, 2.0)
    weight[0, 0] = 1.0
    if w % 2 == 0:
        weight[0, -1] = 1.0
    norm = math.sqrt(float((gain * gain * weight).sum()) / (h * w))
    if norm == 0:
        return np.zeros(shape)
    spectrum = np.fft.rfft2(white)
    del white
    spectrum *= gain / norm
    return np.fft.irfft2(spectrum, s=shape)


def _carbon(
    shape: tuple[int, int], rng: np.random.Generator, app: HrtemAppearance, pixel_size_nm: float
) -> np.ndarray:
    """Amorphous-carbon support: 1 + thickness variation + phase-contrast speckle."""
    out = np.ones(shape, dtype=np.float64)
    if shape[0] == 0 or shape[1] == 0:
        return out
    s = app.carbon_scale_nm / pixel_size_nm
    out += app.carbon_std * _filtered_noise(
        shape, rng, lambda f: np.exp(-2.0 * math.pi**2 * s * s * f * f)
    )
    f0 = pixel_size_nm / app.speckle_period_nm
    bw = pixel_size_nm * app.speckle_bandwidth_per_nm
    out += app.speckle_std * _filtered_noise(
        shape, rng, lambda f: np.exp(-0.5 * ((f - f0) / bw) ** 2)
    )
    return out


def _noise_sigma(snr: float | None, mean_signal: float) -> float:
    if snr is None or math.isinf(snr):
        return 0.0
    if not snr > 0:
        raise ConfigError(f"snr must be positive, None or inf, got {snr}")
    return mean_signal / snr


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


def particle_specs(
    n_per_class: int,
    *,
    seed: int = 0,
    pixel_size_nm: float = 0.05,
    crop_margin_px: int = 8,
    appearance: HrtemAppearance | None = None,
) -> list[ParticleSpec]:
    """The objects :func:`particle_crops` renders, each in its crop's pixel frame.

    Same arguments as :func:`particle_crops`; spec ``i`` is drawn from ``(seed, class, i)``
    alone. The crop of a spec spans ``[0, ceil(ymax) + crop_margin_px]`` and likewise in x,
    where ``extent()`` gives ``ymax``.
    """
    app = appearance or HrtemAppearance()
    if int(n_per_class) < 0:
        raise ConfigError(f"n_per_class must be >= 0, got {n_per_class}")
    if int(crop_margin_px) < 0:
        raise ConfigError(f"crop_margin_px must be >= 0, got {crop_margin_px}")
    _check_pixel_size(pixel_size_nm, app)
    specs = []
    for c, kind in enumerate(CLASSES):
        for i in range(int(n_per_class)):
            rng = np.random.default_rng([seed, _STREAM_SPEC, c, i])
            spec = draw_particle(kind, rng=rng, pixel_size_nm=pixel_size_nm, appearance=app)
            ymin, xmin, _, _ = spec.extent()
            specs.append(
                spec.shifted(crop_margin_px - math.floor(ymin), crop_margin_px - math.floor(xmin))
            )
    return specs


def particle_crops(
    n_per_class: int,
    *,
    seed: int = 0,
    pixel_size_nm: float = 0.05,
    snr: float | None = 3.0,
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
        carbon = _carbon(
            (h, w), np.random.default_rng([seed, _STREAM_CARBON, c, i]), app, pixel_size_nm
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
    sigma = _noise_sigma(snr, signal_sum / signal_n if signal_n else 1.0)
    images = []
    for j, clean in enumerate(cleans):
        c, i = divmod(j, n)
        rng = np.random.default_rng([seed, _STREAM_NOISE, c, i])
        noisy = add_noise(clean, sigma=sigma, rng=rng, shot_fraction=shot_fraction)
        gain = 1.0 + gain_sigma * float(
            np.random.default_rng([seed, _STREAM_GAIN, c, i]).standard_normal()
        )
        images.append((noisy * gain).astype(np.float32))
    return images, masks, classes


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
            _check_kind(key)
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
        prng = np.random.default_rng([seed, _STREAM_SPEC, c, i])
        specs.append(
            draw_particle(CLASSES[c], rng=prng, pixel_size_nm=pixel_size_nm, appearance=app)
        )
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
    pad = _fresnel_pad(app, pixel_size_nm)
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
    clean = _carbon(shape, np.random.default_rng([seed, _STREAM_CARBON]), app, pixel_size_nm)
    labels = np.zeros(shape, dtype=np.uint32)
    pad = _fresnel_pad(app, pixel_size_nm)
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
            "centroid_y_nm": sum_y / area * pixel_size_nm,
            "centroid_x_nm": sum_x / area * pixel_size_nm,
            "area_px": area,
            "area_nm2": area * pixel_size_nm**2,
            "ecd_nm": np.sqrt(4.0 * area / math.pi) * pixel_size_nm,
            "n_members": np.array([len(s.members) for s in specs], dtype=np.int64),
        },
        columns=list(TRUTH_COLUMNS),
    )
    mean_signal = signal_sum / signal_n if signal_n else 1.0
    return clean, labels, truth, mean_signal


def hrtem_field(
    shape: tuple[int, int],
    *,
    n_particles: int,
    class_weights: Mapping[str, float] | Sequence[float] | None = None,
    seed: int = 0,
    pixel_size_nm: float = 0.05,
    snr: float | None = 3.0,
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
    if int(n_particles) < 0:
        raise ConfigError(f"n_particles must be >= 0, got {n_particles}")
    _check_pixel_size(pixel_size_nm, app)
    probabilities = _class_probabilities(class_weights)
    specs = _place(
        (height, width),
        int(n_particles),
        probabilities,
        seed,
        pixel_size_nm,
        app,
        gap_px=min_gap_nm / pixel_size_nm,
    )
    clean, labels, truth, mean_signal = _render_field(
        (height, width), specs, seed, pixel_size_nm, app
    )
    sigma = _noise_sigma(snr, mean_signal)
    rng = np.random.default_rng([seed, _STREAM_NOISE])
    image = add_noise(clean, sigma=sigma, rng=rng, shot_fraction=shot_fraction)
    return image.astype(np.float32), labels, truth


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
    pixel_size_nm: float = 0.05,
    snr: float | None = 3.0,
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
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if rows < 1 or cols < 1:
        raise ConfigError(f"rows and cols must be >= 1, got rows={rows}, cols={cols}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    tile_h, tile_w = (int(v) for v in tile_shape)
    if tile_h < 1 or tile_w < 1:
        raise ConfigError(f"tile_shape must be positive, got {tile_shape!r}")
    _check_pixel_size(pixel_size_nm, app)
    step_y = round(tile_h * (1.0 - overlap))
    step_x = round(tile_w * (1.0 - overlap))
    mosaic_shape = ((rows - 1) * step_y + tile_h, (cols - 1) * step_x + tile_w)
    if n_particles is None:
        if not density >= 0:
            raise ConfigError(f"density must be >= 0 objects per um^2, got {density}")
        area_um2 = mosaic_shape[0] * mosaic_shape[1] * (pixel_size_nm * 1e-3) ** 2
        n_particles = round(density * area_um2)
    if int(n_particles) < 0:
        raise ConfigError(f"n_particles must be >= 0, got {n_particles}")

    out = Path(folder)
    gt_dir = out / "ground_truth"
    gt_dir.mkdir(parents=True, exist_ok=True)
    specs = _place(
        mosaic_shape,
        int(n_particles),
        _class_probabilities(class_weights),
        seed,
        pixel_size_nm,
        app,
        gap_px=min_gap_nm / pixel_size_nm,
    )
    clean, labels, truth, mean_signal = _render_field(mosaic_shape, specs, seed, pixel_size_nm, app)
    sigma = _noise_sigma(snr, mean_signal)
    mean_level = float(clean.mean())

    labels_path = gt_dir / "labels.zarr"
    arr = zarr.create_array(
        store=str(labels_path),
        shape=mosaic_shape,
        chunks=LABEL_CHUNKS,
        shards=None,
        dtype="uint32",
        fill_value=0,
        zarr_format=3,
        overwrite=True,
    )
    arr[...] = labels
    del labels
    particles_csv = gt_dir / "particles.csv"
    truth.to_csv(particles_csv, index=False, float_format="%.6f")

    paths, origins_csv, grid_json = write_tiles(
        out,
        lambda oy, ox: clean[oy : oy + tile_h, ox : ox + tile_w],
        rows=rows,
        cols=cols,
        tile_shape=(tile_h, tile_w),
        step=(step_y, step_x),
        overlap=overlap,
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
        progress=progress,
    )
    return GridTruth(
        folder=out,
        grid_json=grid_json,
        ground_truth_dir=gt_dir,
        tile_origins_csv=origins_csv,
        particles_csv=particles_csv,
        labels_zarr=labels_path,
        tiles=tuple(paths),
        n_particles=len(truth),
        mosaic_shape=mosaic_shape,
    )
