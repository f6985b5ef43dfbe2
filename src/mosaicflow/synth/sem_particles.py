"""SEM/HAADF particle catalogues: shapes, sizes and placement of the particles of a field
(isolated, touching pairs, agglomerates), and the spatial index used to render windows of it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError

__all__ = [
    "SHAPES",
    "ParticleIndex",
    "index_particles",
    "make_particles",
    "shape_sdf",
]

SHAPES: tuple[str, ...] = ("sphere", "rod", "cube")
DEFAULT_SHAPE_WEIGHTS = (0.6, 0.2, 0.2)

PARTICLE_COLUMNS = [
    "label",
    "shape",
    "y_px",
    "x_px",
    "a_px",
    "b_px",
    "angle_rad",
    "group",
    "intensity",
    "diameter_nm",
]


# --------------------------------------------------------------------------------------------
# Particle geometry
# --------------------------------------------------------------------------------------------


def _shape_code(shape: str) -> int:
    try:
        return SHAPES.index(shape)
    except ValueError:
        raise ConfigError(f"unknown particle shape {shape!r}; expected one of {SHAPES}") from None


def _size_params(code: int, diameter_px: float, aspect: float) -> tuple[float, float]:
    """Semi-axes (a, b) of a particle whose projected area equals a disc of ``diameter_px``."""
    if code == 0:
        r = diameter_px / 2.0
        return r, r
    if code == 1:
        # Capsule of radius b and half-length a = aspect * b: area = b^2 (4 (aspect - 1) + pi).
        b = diameter_px / 2.0 * math.sqrt(math.pi / (4.0 * (aspect - 1.0) + math.pi))
        return aspect * b, b
    h = diameter_px * math.sqrt(math.pi) / 4.0
    return h, h


def _bound_radius(code: int, a: float) -> float:
    return a * math.sqrt(2.0) if code == 2 else a


def shape_sdf(
    code: int, dy: np.ndarray, dx: np.ndarray, a: float, b: float, c: float, s: float
) -> np.ndarray:
    """Signed distance (px, negative inside) to the outline of a particle centred at the origin.

    Only +, -, *, abs and sqrt are used: they are correctly rounded, so a pixel gets the same value
    whichever window it is rendered in (vectorised transcendental functions give no such promise).

    Parameters
    ----------
    code : int
        Index of the shape in :data:`SHAPES`.
    dy, dx : ndarray
        Offsets from the particle centre, broadcastable to each other.
    a, b : float
        Semi-axes (see :func:`make_particles`).
    c, s : float
        Cosine and sine of the particle's angle.

    Returns
    -------
    ndarray of float64
    """
    if code == 0:
        return np.sqrt(dy * dy + dx * dx) - a
    u = dx * c + dy * s
    v = dy * c - dx * s
    if code == 1:
        q = np.maximum(np.abs(u) - (a - b), 0.0)
        return np.sqrt(q * q + v * v) - b
    qx = np.abs(u) - a
    qy = np.abs(v) - b
    ox = np.maximum(qx, 0.0)
    oy = np.maximum(qy, 0.0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0.0)


# --------------------------------------------------------------------------------------------
# Particle catalogue
# --------------------------------------------------------------------------------------------


@dataclass
class _Proto:
    code: int
    a: float
    b: float
    angle: float
    intensity: float
    diameter_nm: float
    y: float = 0.0
    x: float = 0.0

    @property
    def bound(self) -> float:
        return _bound_radius(self.code, self.a)

    def sdf(self, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return shape_sdf(self.code, gy - self.y, gx - self.x, self.a, self.b, c, s)


def _overlap_area(p: _Proto, q: _Proto, step: float = 0.5) -> float:
    """Area (px^2) shared by two particles, sampled on a ``step`` grid."""
    y0 = max(p.y - p.bound, q.y - q.bound)
    y1 = min(p.y + p.bound, q.y + q.bound)
    x0 = max(p.x - p.bound, q.x - q.bound)
    x1 = min(p.x + p.bound, q.x + q.bound)
    if y1 <= y0 or x1 <= x0:
        return 0.0
    gy = np.arange(y0, y1 + step, step)[:, None]
    gx = np.arange(x0, x1 + step, step)[None, :]
    both = (p.sdf(gy, gx) <= 0) & (q.sdf(gy, gx) <= 0)
    return float(both.sum()) * step * step


def _area(p: _Proto) -> float:
    if p.code == 0:
        return math.pi * p.a * p.a
    if p.code == 1:
        return p.b * p.b * (4.0 * (p.a / p.b - 1.0) + math.pi)
    return 4.0 * p.a * p.a


def _build_group(members: list[_Proto], rng: np.random.Generator, step: float = 0.5) -> bool:
    """Lay out ``members`` (in place, around the origin) so each touches an earlier one.

    Each new particle comes in along a random direction towards a random earlier member until
    their masks share a few pixels, so the pair is one connected blob in the label image without
    either being hidden.
    """
    members[0].y = members[0].x = 0.0
    for k in range(1, len(members)):
        new = members[k]
        for _ in range(30):
            host = members[int(rng.integers(k))]
            phi = float(rng.uniform(0.0, 2.0 * math.pi))
            uy, ux = math.sin(phi), math.cos(phi)
            target = max(3.0, 0.04 * min(_area(host), _area(new)))
            d = host.bound + new.bound
            while d > 0:
                new.y, new.x = host.y + d * uy, host.x + d * ux
                if _overlap_area(host, new, step) >= target:
                    break
                d -= step
            others = [m for m in members[:k] if m is not host]
            if d > 0 and all(_overlap_area(m, new, step) <= 2.0 * target for m in others):
                break
        else:
            return False
    return True


class _ClearanceGrid:
    """Hash grid of placed particles for the minimum-gap test between unrelated particles."""

    def __init__(self, cell: float, gap: float) -> None:
        self.cell = cell
        self.gap = gap
        self.cells: dict[tuple[int, int], list[tuple[float, float, float]]] = {}

    def _key(self, y: float, x: float) -> tuple[int, int]:
        return math.floor(y / self.cell), math.floor(x / self.cell)

    def is_free(self, y: float, x: float, r: float) -> bool:
        ky, kx = self._key(y, x)
        for iy in (ky - 1, ky, ky + 1):
            for ix in (kx - 1, kx, kx + 1):
                for qy, qx, qr in self.cells.get((iy, ix), ()):
                    lim = r + qr + self.gap
                    if (y - qy) ** 2 + (x - qx) ** 2 < lim * lim:
                        return False
        return True

    def add(self, y: float, x: float, r: float) -> None:
        self.cells.setdefault(self._key(y, x), []).append((y, x, r))


def make_particles(
    field_shape: tuple[int, int],
    *,
    pixel_size_nm: float = 2.0,
    density: float = 11.0,
    seed: int = 0,
    shapes: Sequence[str] = SHAPES,
    shape_weights: Sequence[float] | None = None,
    diameter_nm: tuple[float, float] = (60.0, 0.3),
    diameter_range_nm: tuple[float, float] = (30.0, 120.0),
    rod_aspect: tuple[float, float] = (2.0, 4.0),
    intensity_range: tuple[float, float] = (0.8, 1.2),
    touching_fraction: float = 0.01,
    agglomerate_fraction: float = 0.005,
    agglomerate_size: tuple[int, int] = (3, 6),
    min_gap_px: float = 3.0,
    margin_px: float = 2.0,
    max_attempts: int = 200,
) -> pd.DataFrame:
    """Draw a random particle catalogue covering a field of ``field_shape`` pixels.

    Parameters
    ----------
    field_shape : tuple of int
        ``(height, width)`` of the field (the mosaic frame) in pixels.
    pixel_size_nm : float
        Pixel size; sizes and density are physical and converted with it.
    density : float
        Particles per square micrometre (11 per um^2 is about one per 150 x 150 px at 2 nm).
    seed : int
        Seed of the catalogue.
    shapes, shape_weights : sequence
        Shapes to draw (``"sphere"`` disc, ``"rod"`` capsule, ``"cube"`` rotated square) and their
        relative frequencies, matched by position. ``None``: 0.6 / 0.2 / 0.2 for the default
        ``shapes``, uniform otherwise.
    diameter_nm : (mean, cv)
        Log-normal area-equivalent diameter: every shape is sized so its projected area equals a
        disc of that diameter.
    diameter_range_nm : (min, max)
        Diameters are clipped to this range (15..60 px at 2 nm with the defaults).
    rod_aspect : (min, max)
        Uniform range of rod length / width.
    intensity_range : (min, max)
        Uniform range of the relative brightness of a particle.
    touching_fraction, agglomerate_fraction : float
        Fraction of particles placed in touching pairs and in agglomerates of
        ``agglomerate_size`` (inclusive range) particles. Members of one group overlap slightly.
    min_gap_px : float
        Minimum gap between bounding circles of particles not in the same group, so isolated
        particles never touch in the label image.
    margin_px : float
        Particles lie entirely inside the field, this far from its border.
    max_attempts : int
        Placement attempts per particle or group before it is dropped (only at high density).

    Returns
    -------
    pandas.DataFrame
        One row per particle: ``label`` (uint32, 1..N, later labels win where particles overlap),
        ``shape``, ``y_px``, ``x_px`` (centre, mosaic frame, pixel centres at integers), ``a_px``,
        ``b_px`` (sphere: radius, radius; rod: half-length, radius; cube: half-side, half-side),
        ``angle_rad`` (long axis from +x towards +y), ``group`` (0 isolated), ``intensity`` and
        ``diameter_nm`` (nominal area-equivalent diameter).
    """
    height, width = (int(v) for v in field_shape)
    if height <= 0 or width <= 0:
        raise ConfigError(f"field_shape must be positive, got {field_shape!r}")
    rng = np.random.default_rng(seed)
    codes_allowed = np.array([_shape_code(s) for s in shapes])
    if shape_weights is None:
        shape_weights = DEFAULT_SHAPE_WEIGHTS if tuple(shapes) == SHAPES else [1.0] * len(shapes)
    weights = np.asarray(shape_weights, dtype=np.float64)
    if weights.shape != codes_allowed.shape or np.any(weights < 0) or weights.sum() <= 0:
        raise ConfigError(f"shape_weights {shape_weights!r} do not match shapes {tuple(shapes)!r}")
    weights = weights / weights.sum()

    area_um2 = height * width * (pixel_size_nm * 1e-3) ** 2
    n_total = round(density * area_um2)
    n_pairs = round(touching_fraction * n_total / 2.0)
    agg_sizes: list[int] = []
    n_agg_target = round(agglomerate_fraction * n_total)
    while sum(agg_sizes) < n_agg_target:
        agg_sizes.append(int(rng.integers(agglomerate_size[0], agglomerate_size[1] + 1)))
    group_sizes = [2] * n_pairs + agg_sizes
    n_isolated = max(n_total - sum(group_sizes), 0)
    n = sum(group_sizes) + n_isolated

    codes = rng.choice(codes_allowed, size=n, p=weights)
    mean, cv = diameter_nm
    sigma_ln = math.sqrt(math.log1p(cv * cv))
    diam = rng.lognormal(math.log(mean) - sigma_ln * sigma_ln / 2.0, sigma_ln, size=n)
    diam = np.clip(diam, *diameter_range_nm)
    aspect = rng.uniform(*rod_aspect, size=n)
    angle_u = rng.uniform(0.0, 1.0, size=n)
    intensity = rng.uniform(*intensity_range, size=n)
    protos = []
    for i in range(n):
        code = int(codes[i])
        a, b = _size_params(code, diam[i] / pixel_size_nm, aspect[i])
        angle = 0.0 if code == 0 else angle_u[i] * (math.pi if code == 1 else math.pi / 2.0)
        protos.append(_Proto(code, a, b, angle, float(intensity[i]), float(diam[i])))

    max_bound = max((p.bound for p in protos), default=1.0)
    grid = _ClearanceGrid(2.0 * max_bound + min_gap_px, min_gap_px)
    placed: list[tuple[_Proto, int]] = []
    cursor = 0
    group_id = 0
    for size in group_sizes:
        members = protos[cursor : cursor + size]
        cursor += size
        if not _build_group(members, rng):
            continue
        lo_y = min(m.y - m.bound for m in members)
        hi_y = max(m.y + m.bound for m in members)
        lo_x = min(m.x - m.bound for m in members)
        hi_x = max(m.x + m.bound for m in members)
        span_y = (margin_px - lo_y, height - 1 - margin_px - hi_y)
        span_x = (margin_px - lo_x, width - 1 - margin_px - hi_x)
        if span_y[1] < span_y[0] or span_x[1] < span_x[0]:
            continue
        rel = [(m.y, m.x) for m in members]
        for _ in range(max_attempts):
            ty = float(rng.uniform(*span_y))
            tx = float(rng.uniform(*span_x))
            if all(
                grid.is_free(ry + ty, rx + tx, m.bound)
                for m, (ry, rx) in zip(members, rel, strict=True)
            ):
                group_id += 1
                for m, (ry, rx) in zip(members, rel, strict=True):
                    m.y, m.x = ry + ty, rx + tx
                    grid.add(m.y, m.x, m.bound)
                    placed.append((m, group_id))
                break

    for p in protos[cursor:]:
        lim_y = height - 1 - margin_px - p.bound
        lim_x = width - 1 - margin_px - p.bound
        lo = margin_px + p.bound
        if lim_y < lo or lim_x < lo:
            continue
        ys = rng.uniform(lo, lim_y, size=max_attempts)
        xs = rng.uniform(lo, lim_x, size=max_attempts)
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            if grid.is_free(y, x, p.bound):
                p.y, p.x = y, x
                grid.add(y, x, p.bound)
                placed.append((p, 0))
                break

    return pd.DataFrame(
        {
            "label": np.arange(1, len(placed) + 1, dtype=np.uint32),
            "shape": pd.Series([SHAPES[p.code] for p, _ in placed], dtype=object),
            "y_px": np.array([p.y for p, _ in placed], dtype=np.float64),
            "x_px": np.array([p.x for p, _ in placed], dtype=np.float64),
            "a_px": np.array([p.a for p, _ in placed], dtype=np.float64),
            "b_px": np.array([p.b for p, _ in placed], dtype=np.float64),
            "angle_rad": np.array([p.angle for p, _ in placed], dtype=np.float64),
            "group": np.array([g for _, g in placed], dtype=np.int64),
            "intensity": np.array([p.intensity for p, _ in placed], dtype=np.float64),
            "diameter_nm": np.array([p.diameter_nm for p, _ in placed], dtype=np.float64),
        },
        columns=PARTICLE_COLUMNS,
    )


# --------------------------------------------------------------------------------------------
# Spatial index
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParticleIndex:
    """Particles binned by coarse grid cell, so a window only visits particles near it.

    Build with :func:`index_particles`.
    """

    code: np.ndarray
    y: np.ndarray
    x: np.ndarray
    a: np.ndarray
    b: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    intensity: np.ndarray
    label: np.ndarray
    reach: np.ndarray
    cell_px: int
    cells: dict[tuple[int, int], np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return int(self.label.size)

    def query(self, y0: int, x0: int, height: int, width: int, *, pad: float = 0.0) -> np.ndarray:
        """Indices (ascending, i.e. in paint order) of particles reaching into a window."""
        c = self.cell_px
        iy0, iy1 = math.floor((y0 - pad) / c), math.floor((y0 + height - 1 + pad) / c)
        ix0, ix1 = math.floor((x0 - pad) / c), math.floor((x0 + width - 1 + pad) / c)
        found = [
            self.cells[key]
            for iy in range(iy0, iy1 + 1)
            for ix in range(ix0, ix1 + 1)
            if (key := (iy, ix)) in self.cells
        ]
        if not found:
            return np.zeros(0, dtype=np.intp)
        idx = np.unique(np.concatenate(found))
        r = self.reach[idx] + pad
        keep = (
            (self.y[idx] + r >= y0)
            & (self.y[idx] - r <= y0 + height - 1)
            & (self.x[idx] + r >= x0)
            & (self.x[idx] - r <= x0 + width - 1)
        )
        return idx[keep]


def index_particles(particles: pd.DataFrame, *, cell_px: int = 256) -> ParticleIndex:
    """Bin a catalogue from :func:`make_particles` into a :class:`ParticleIndex`.

    Particles are kept in ``label`` order, which is the paint order (later labels win).

    Parameters
    ----------
    particles : pandas.DataFrame
        Catalogue from :func:`make_particles`.
    cell_px : int
        Side of a bin in pixels.

    Returns
    -------
    ParticleIndex
    """
    df = particles.sort_values("label", kind="stable")
    code = np.array([_shape_code(s) for s in df["shape"]], dtype=np.int64)
    a = df["a_px"].to_numpy(np.float64)
    angle = df["angle_rad"].to_numpy(np.float64)
    # math.cos per scalar, not np.cos on the array: the result must not depend on array layout.
    cos = np.array([math.cos(t) for t in angle.tolist()], dtype=np.float64)
    sin = np.array([math.sin(t) for t in angle.tolist()], dtype=np.float64)
    reach = np.where(code == 2, a * math.sqrt(2.0), a)
    y = df["y_px"].to_numpy(np.float64)
    x = df["x_px"].to_numpy(np.float64)
    # A particle sits in every bin its bounding box touches; queries widen the window instead.
    span = reach
    cy0 = np.floor((y - span) / cell_px).astype(np.int64)
    cy1 = np.floor((y + span) / cell_px).astype(np.int64)
    cx0 = np.floor((x - span) / cell_px).astype(np.int64)
    cx1 = np.floor((x + span) / cell_px).astype(np.int64)
    lists: dict[tuple[int, int], list[int]] = {}
    for i, (ya, yb, xa, xb) in enumerate(
        zip(cy0.tolist(), cy1.tolist(), cx0.tolist(), cx1.tolist(), strict=True)
    ):
        for iy in range(ya, yb + 1):
            for ix in range(xa, xb + 1):
                lists.setdefault((iy, ix), []).append(i)
    return ParticleIndex(
        code=code,
        y=y,
        x=x,
        a=a,
        b=df["b_px"].to_numpy(np.float64),
        cos=cos,
        sin=sin,
        intensity=df["intensity"].to_numpy(np.float64),
        label=df["label"].to_numpy(np.uint32),
        reach=reach,
        cell_px=int(cell_px),
        cells={k: np.asarray(v, dtype=np.intp) for k, v in lists.items()},
    )
