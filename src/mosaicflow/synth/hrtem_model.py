"""What an HRTEM object is and what it looks like: appearance settings, the description of one
object (members, lattice fringes, planar defect), its rendering and the carbon support film."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from mosaicflow.errors import ConfigError

__all__ = [
    "DEFAULT_PIXEL_SIZE_NM",
    "DEFAULT_SNR",
    "Fault",
    "Fringe",
    "HrtemAppearance",
    "Member",
    "ParticleSpec",
    "check_pixel_size",
    "fresnel_pad",
    "render_carbon",
    "render_particle",
]

_NOT_RANGES = ("diameter_nm",)
#: Defaults of the HRTEM mode (0.05 nm puts 0.20-0.25 nm fringes at 4-5 px).
DEFAULT_PIXEL_SIZE_NM = 0.05
DEFAULT_SNR = 3.0
_THETA = np.linspace(0.0, 2.0 * math.pi, 1441)  # outline sampling for exact extents


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

    def radius_range(self) -> tuple[float, float]:
        """Smallest and largest outline radius (px, sampled every 0.25 degree)."""
        r = self.outline(_THETA)
        return float(r.min()), float(r.max())


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


def check_pixel_size(pixel_size_nm: float, app: HrtemAppearance) -> None:
    """Check that ``pixel_size_nm`` samples the finest fringe spacing above the Nyquist limit.

    Parameters
    ----------
    pixel_size_nm : float
        Pixel size.
    app : HrtemAppearance
        Holds the fringe spacings.

    Raises
    ------
    ConfigError
        The pixel size is not positive or too coarse for the fringes.
    """
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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _wave_field(
    waves: Sequence[tuple[float, float, float, float]], dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(dy.shape, dx.shape), dtype=np.float64)
    for amp, qy, qx, phase in waves:
        out += amp * np.cos(qy * dy + qx * dx + phase)
    return out


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
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
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


def fresnel_pad(app: HrtemAppearance, pixel_size_nm: float) -> float:
    """Reach (px) of the Fresnel fringe beyond an object's outline, plus one pixel.

    Parameters
    ----------
    app : HrtemAppearance
        Holds the Fresnel fringe's offset and width.
    pixel_size_nm : float
        Pixel size.

    Returns
    -------
    float
    """
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


def render_carbon(
    shape: tuple[int, int], rng: np.random.Generator, app: HrtemAppearance, pixel_size_nm: float
) -> np.ndarray:
    """Amorphous-carbon support: 1 + thickness variation + phase-contrast speckle.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` in pixels.
    rng : numpy.random.Generator
        Source of the two noise fields.
    app : HrtemAppearance
        Thickness and speckle settings.
    pixel_size_nm : float
        Pixel size.

    Returns
    -------
    ndarray of float64
    """
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
