"""Synthetic SEM / HAADF-STEM particle fields with exact ground truth, and a writer that cuts them
into a Thermo Fisher Maps-like tile grid (see ``docs/GRID_FORMAT.md``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
import zarr

__all__ = [
    "Appearance",
    "GridTruth",
    "ParticleIndex",
    "add_noise",
    "index_particles",
    "make_particles",
    "read_ground_truth",
    "render_substrate",
    "render_window",
    "synth_field",
    "tile_name",
    "truth_labels",
    "write_maps_grid",
    "write_tile",
    "write_tiles",
]

SHAPES: tuple[str, ...] = ("sphere", "rod", "cube")
DEFAULT_SHAPE_WEIGHTS = (0.6, 0.2, 0.2)
GRID_FORMAT = "mosaicflow-grid/1"
FEI_TAG = 34682
LABEL_CHUNKS = (1024, 1024)
STAGE_ORIGIN_M = (2.0e-3, 1.0e-3)  # (StageY0, StageX0): arbitrary, so readers cannot assume 0
# Clean intensities in [0, 1.6] cover substrate (~0.2) plus the brightest particle (1.2) with
# headroom for gain; they map to 10 %..90 % of the dtype range so little is ever clipped.
INTENSITY_RANGE = (0.0, 1.6)
DTYPE_RANGE_FRACTION = (0.10, 0.90)

# Distinct SeedSequence streams so adding a draw to one never shifts another.
_STREAM_SUBSTRATE = 0x5B
_STREAM_STAGE = 0x57
_STREAM_TILE = 0x71
_STREAM_FIELD_NOISE = 0xF1

_PARTICLE_COLUMNS = [
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
# Particle geometry
# --------------------------------------------------------------------------------------------


def _shape_code(shape: str) -> int:
    try:
        return SHAPES.index(shape)
    except ValueError:
        raise ValueError(f"unknown particle shape {shape!r}; expected one of {SHAPES}") from None


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


def _sdf(
    code: int, dy: np.ndarray, dx: np.ndarray, a: float, b: float, c: float, s: float
) -> np.ndarray:
    """Signed distance (px, negative inside) to the particle outline.

    Only +, -, *, abs and sqrt are used: they are correctly rounded, so a pixel gets the same value
    whichever window it is rendered in (vectorised transcendental functions give no such promise).
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
        return _sdf(self.code, gy - self.y, gx - self.x, self.a, self.b, c, s)


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
        raise ValueError(f"field_shape must be positive, got {field_shape!r}")
    rng = np.random.default_rng(seed)
    codes_allowed = np.array([_shape_code(s) for s in shapes])
    if shape_weights is None:
        shape_weights = DEFAULT_SHAPE_WEIGHTS if tuple(shapes) == SHAPES else [1.0] * len(shapes)
    weights = np.asarray(shape_weights, dtype=np.float64)
    if weights.shape != codes_allowed.shape or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"shape_weights {shape_weights!r} do not match shapes {tuple(shapes)!r}")
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
        columns=_PARTICLE_COLUMNS,
    )


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
    """Substrate texture of a window (float64), a pure function of global pixel coordinates.

    Smoothstep-interpolated value noise on hashed lattices, so any two windows agree exactly
    where they overlap.
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
        sd = _sdf(code, dy, dx, a, b, float(index.cos[i]), float(index.sin[i]))
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
# Noise
# --------------------------------------------------------------------------------------------


def add_noise(
    image: np.ndarray,
    *,
    sigma: float,
    rng: np.random.Generator,
    shot_fraction: float = 0.5,
    mean_level: float | None = None,
) -> np.ndarray:
    """Add Gaussian read noise plus Poisson shot noise of total standard deviation ``sigma``.

    The shot part has variance ``alpha * image`` with ``alpha = shot_fraction * sigma**2 /
    mean_level`` and the Gaussian part variance ``(1 - shot_fraction) * sigma**2``, so the noise
    std over an image whose mean is ``mean_level`` is ``sigma``.

    Parameters
    ----------
    image : ndarray
        Clean, non-negative image.
    sigma : float
        Target total noise standard deviation (0 returns a float64 copy).
    rng : numpy.random.Generator
        Source of randomness.
    shot_fraction : float
        Share of the noise variance that is shot noise, in [0, 1].
    mean_level : float, optional
        Level at which the variances are balanced; the image mean by default.

    Returns
    -------
    ndarray of float64
    """
    out = np.asarray(image, dtype=np.float64)
    if not 0.0 <= shot_fraction <= 1.0:
        raise ValueError(f"shot_fraction must be in [0, 1], got {shot_fraction}")
    if sigma <= 0:
        return out.copy()
    level = float(out.mean()) if mean_level is None else float(mean_level)
    noisy = out.copy()
    if shot_fraction > 0 and level > 0:
        alpha = shot_fraction * sigma * sigma / level
        noisy = alpha * rng.poisson(np.maximum(out, 0.0) / alpha).astype(np.float64)
    gauss_sd = math.sqrt((1.0 - shot_fraction) * sigma * sigma)
    if gauss_sd > 0:
        noisy += rng.normal(0.0, gauss_sd, size=out.shape)
    return noisy


def _noise_sigma(snr: float | None, mean_signal: float) -> float:
    if snr is None or math.isinf(snr):
        return 0.0
    if snr <= 0:
        raise ValueError(f"snr must be positive, None or inf, got {snr}")
    return mean_signal / snr


def synth_field(
    shape: tuple[int, int],
    *,
    snr: float | None = 20.0,
    seed: int = 0,
    pixel_size_nm: float = 2.0,
    shot_fraction: float = 0.5,
    appearance: Appearance | None = None,
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
        Share of the noise variance that is Poisson shot noise (see :func:`add_noise`).
    appearance : Appearance, optional
        Substrate and particle profile settings.
    **particle_kwargs
        Passed to :func:`make_particles`.

    Returns
    -------
    image : ndarray of float32
    labels : ndarray of uint32
    particles : pandas.DataFrame
        The catalogue (see :func:`make_particles`).
    """
    app = appearance or Appearance()
    height, width = (int(v) for v in shape)
    particles = make_particles(
        (height, width), pixel_size_nm=pixel_size_nm, seed=seed, **particle_kwargs
    )
    signal, labels = _render_parts(index_particles(particles), 0, 0, height, width, app)
    clean = render_substrate(0, 0, height, width, seed=seed, appearance=app) + signal
    mask = labels > 0
    mean_signal = float(signal[mask].mean()) if mask.any() else 1.0
    sigma = _noise_sigma(snr, mean_signal)
    rng = np.random.default_rng([seed, _STREAM_FIELD_NOISE])
    image = add_noise(clean, sigma=sigma, rng=rng, shot_fraction=shot_fraction)
    return image.astype(np.float32), labels, particles


# --------------------------------------------------------------------------------------------
# Maps-like tile grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridTruth:
    """Where :func:`write_maps_grid` put things, and the size of the true mosaic."""

    folder: Path
    grid_json: Path
    ground_truth_dir: Path
    tile_origins_csv: Path
    particles_csv: Path
    labels_zarr: Path
    tiles: tuple[Path, ...]
    n_particles: int
    mosaic_shape: tuple[int, int]


def tile_name(row: int, col: int) -> str:
    """Maps file name of tile (``row``, ``col``), both 1-based."""
    return f"Tile_{row:03d}-{col:03d}-000000_0-000.tif"


def _fei_ini(
    pixel_size_m: float, stage_y_m: float, stage_x_m: float, height: int, width: int
) -> str:
    return (
        "[User]\n"
        "User=mosaicflow.synth\n"
        "[System]\n"
        "Software=mosaicflow.synth\n"
        "[Scan]\n"
        f"PixelWidth={pixel_size_m!r}\n"
        f"PixelHeight={pixel_size_m!r}\n"
        "[Stage]\n"
        f"StageX={stage_x_m!r}\n"
        f"StageY={stage_y_m!r}\n"
        "StageZ=0\n"
        "StageR=0\n"
        "StageT=0\n"
        "[Image]\n"
        f"ResolutionX={width}\n"
        f"ResolutionY={height}\n"
    )


def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    """Multiplicative radial falloff: 1 at the tile centre, ``1 - strength`` at the corners."""
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ry = (np.arange(height) - cy)[:, None]
    rx = (np.arange(width) - cx)[None, :]
    r2 = (ry * ry + rx * rx) / max(cy * cy + cx * cx, 1e-12)
    return 1.0 - strength * r2


def _quantise(image: np.ndarray, bit_depth: int) -> np.ndarray:
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    top = float(np.iinfo(dtype).max)
    lo, hi = DTYPE_RANGE_FRACTION[0] * top, DTYPE_RANGE_FRACTION[1] * top
    v0, v1 = INTENSITY_RANGE
    scaled = lo + (image - v0) * ((hi - lo) / (v1 - v0))
    return np.clip(np.rint(scaled), 0, top).astype(dtype)


def write_tile(
    folder: Path,
    row: int,
    col: int,
    image: np.ndarray,
    *,
    origin_px: tuple[int, int],
    stage_error_px: Sequence[float],
    pixel_m: float,
    bit_depth: int,
) -> Path:
    """Quantise one tile and write it as ``Tile_RRR-CCC-*.tif`` with FEI/Thermo metadata whose
    stage position is the tile centre plus the stage error (see ``docs/GRID_FORMAT.md``)."""
    tile_h, tile_w = image.shape
    oy, ox = origin_px
    stage_y0, stage_x0 = STAGE_ORIGIN_M
    centre_y = oy + (tile_h - 1) / 2.0 + float(stage_error_px[0])
    centre_x = ox + (tile_w - 1) / 2.0 + float(stage_error_px[1])
    ini = _fei_ini(
        pixel_m, stage_y0 - centre_y * pixel_m, stage_x0 + centre_x * pixel_m, tile_h, tile_w
    )
    path = Path(folder) / tile_name(row, col)
    tifffile.imwrite(
        path,
        _quantise(image, bit_depth),
        photometric="minisblack",
        extratags=[(FEI_TAG, "s", 0, ini, True)],
    )
    return path


def write_tiles(
    folder: Path,
    render: Callable[[int, int], np.ndarray],
    *,
    rows: int,
    cols: int,
    tile_shape: tuple[int, int],
    step: tuple[int, int],
    overlap: float,
    missing: Iterable[tuple[int, int]] = (),
    pixel_size_nm: float,
    bit_depth: int,
    seed: int,
    stage_error_px: float,
    noise_sigma: float,
    mean_level: float,
    shot_fraction: float,
    gain_sigma: float,
    offset_sigma: float,
    vignetting: float,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Path], Path, Path]:
    """Cut a clean field into a Maps-like grid: what every synthetic grid writer shares.

    ``render(oy, ox)`` returns the clean tile whose top-left pixel is ``(oy, ox)`` in the field.
    Each tile gets vignetting, noise, its own gain and offset, a stage error and FEI metadata
    (:func:`write_tile`); ``ground_truth/tile_origins.csv`` and ``mosaicflow-grid.json`` are
    written too. Random streams are keyed by tile, so a missing tile changes no other.
    Returns the tile paths, the origins CSV and the grid JSON.
    """
    tile_h, tile_w = tile_shape
    step_y, step_x = step
    missing = set(missing)
    grid_tiles = [(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]
    origins = pd.DataFrame(
        {
            "row": [r for r, _ in grid_tiles],
            "col": [c for _, c in grid_tiles],
            "y_px": [float((r - 1) * step_y) for r, _ in grid_tiles],
            "x_px": [float((c - 1) * step_x) for _, c in grid_tiles],
        }
    )
    gt_dir = Path(folder) / "ground_truth"
    gt_dir.mkdir(parents=True, exist_ok=True)
    origins_csv = gt_dir / "tile_origins.csv"
    origins.to_csv(origins_csv, index=False)
    # Stage errors drawn for every tile, missing or not, so removing a tile changes no other.
    stage_err = np.random.default_rng([seed, _STREAM_STAGE]).normal(
        0.0, 1.0, size=(rows, cols, 2)
    ) * float(stage_error_px)
    pixel_m = pixel_size_nm * 1e-9
    vignette = _vignette(tile_h, tile_w, vignetting) if vignetting else None
    present = [rc for rc in grid_tiles if rc not in missing]
    tile_paths: list[Path] = []
    entries: list[dict[str, object]] = []
    for done, (r, c) in enumerate(present, start=1):
        oy, ox = (r - 1) * step_y, (c - 1) * step_x
        rng = np.random.default_rng([seed, _STREAM_TILE, r, c])
        gain = 1.0 + gain_sigma * float(rng.normal())
        offset = offset_sigma * float(rng.normal())
        img = render(oy, ox)
        if vignette is not None:
            img = img * vignette
        img = add_noise(
            img, sigma=noise_sigma, rng=rng, shot_fraction=shot_fraction, mean_level=mean_level
        )
        path = write_tile(
            Path(folder),
            r,
            c,
            img * gain + offset,
            origin_px=(oy, ox),
            stage_error_px=stage_err[r - 1, c - 1],
            pixel_m=pixel_m,
            bit_depth=bit_depth,
        )
        tile_paths.append(path)
        entries.append({"row": r, "col": c, "file": path.name})
        if progress is not None:
            progress(done, len(present))
    grid = {
        "format": GRID_FORMAT,
        "rows": rows,
        "cols": cols,
        "tile_height": tile_h,
        "tile_width": tile_w,
        "overlap": overlap,
        "pixel_size_nm": pixel_size_nm,
        "bit_depth": bit_depth,
        "tiles": entries,
        "missing": [[r, c] for r, c in sorted(missing)],
    }
    grid_json = Path(folder) / "mosaicflow-grid.json"
    grid_json.write_text(json.dumps(grid, indent=2) + "\n")
    return tile_paths, origins_csv, grid_json


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
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got rows={rows}, cols={cols}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    app = appearance or Appearance()
    tile_h, tile_w = (int(v) for v in tile_shape)
    step_y = round(tile_h * (1.0 - overlap))
    step_x = round(tile_w * (1.0 - overlap))
    mosaic_shape = ((rows - 1) * step_y + tile_h, (cols - 1) * step_x + tile_w)
    missing = {(int(r), int(c)) for r, c in missing_tiles}
    for r, c in sorted(missing):
        if not (1 <= r <= rows and 1 <= c <= cols):
            raise ValueError(f"missing tile ({r}, {c}) is outside the {rows} x {cols} grid")

    folder = Path(out_dir)
    gt_dir = folder / "ground_truth"
    gt_dir.mkdir(parents=True, exist_ok=True)
    particles = make_particles(
        mosaic_shape, pixel_size_nm=pixel_size_nm, seed=seed, **particle_kwargs
    )
    index = index_particles(particles)
    n_labels = len(particles)

    # Ground-truth labels, one chunk at a time; the same pass measures the particles exactly
    # and the mean particle signal that sets the noise level.
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
    counts = np.zeros(n_labels + 1, dtype=np.int64)
    sum_y = np.zeros(n_labels + 1, dtype=np.float64)
    sum_x = np.zeros(n_labels + 1, dtype=np.float64)
    signal_sum = 0.0
    clean_sum = 0.0
    chunk_origins = [
        (y, x)
        for y in range(0, mosaic_shape[0], LABEL_CHUNKS[0])
        for x in range(0, mosaic_shape[1], LABEL_CHUNKS[1])
    ]
    tiles_todo = [(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]
    total = len(chunk_origins) + len(tiles_todo) - len(missing)
    done = 0
    for y, x in chunk_origins:
        h = min(LABEL_CHUNKS[0], mosaic_shape[0] - y)
        w = min(LABEL_CHUNKS[1], mosaic_shape[1] - x)
        signal, lab = _render_parts(index, y, x, h, w, app)
        substrate = render_substrate(y, x, h, w, seed=seed, appearance=app)
        arr[y : y + h, x : x + w] = lab
        flat = lab.ravel()
        gy, gx = np.indices((h, w))
        counts += np.bincount(flat, minlength=n_labels + 1)
        sum_y += np.bincount(flat, weights=(gy + y).ravel(), minlength=n_labels + 1)
        sum_x += np.bincount(flat, weights=(gx + x).ravel(), minlength=n_labels + 1)
        signal_sum += float(signal[lab > 0].sum())
        clean_sum += float(substrate.sum() + signal.sum())
        done += 1
        if progress is not None:
            progress(done, total)

    n_fg = int(counts[1:].sum())
    mean_signal = signal_sum / n_fg if n_fg else 1.0
    mean_level = clean_sum / (mosaic_shape[0] * mosaic_shape[1])
    sigma = _noise_sigma(snr, mean_signal)

    # Truth table: only particles that own at least one pixel (all, unless hidden by others).
    lab_ids = particles["label"].to_numpy(np.int64)
    area = counts[lab_ids]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = sum_y[lab_ids] / area
        cx = sum_x[lab_ids] / area
    truth = pd.DataFrame(
        {
            "label": lab_ids.astype(np.uint32),
            "shape": particles["shape"].to_numpy(),
            "centroid_y_nm": cy * pixel_size_nm,
            "centroid_x_nm": cx * pixel_size_nm,
            "area_px": area,
            "area_nm2": area * pixel_size_nm**2,
            "ecd_nm": np.sqrt(4.0 * area / math.pi) * pixel_size_nm,
            "group": particles["group"].to_numpy(np.int64),
        },
        columns=_TRUTH_COLUMNS,
    )
    truth = truth[truth["area_px"] > 0].reset_index(drop=True)
    particles_csv = gt_dir / "particles.csv"
    truth.to_csv(particles_csv, index=False, float_format="%.6f")

    tile_paths, origins_csv, grid_json = write_tiles(
        folder,
        lambda oy, ox: (
            render_substrate(oy, ox, tile_h, tile_w, seed=seed, appearance=app)
            + _render_parts(index, oy, ox, tile_h, tile_w, app)[0]
        ),
        rows=rows,
        cols=cols,
        tile_shape=(tile_h, tile_w),
        step=(step_y, step_x),
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
        progress=None if progress is None else (lambda k, _n: progress(done + k, total)),
    )
    return GridTruth(
        folder=folder,
        grid_json=grid_json,
        ground_truth_dir=gt_dir,
        tile_origins_csv=origins_csv,
        particles_csv=particles_csv,
        labels_zarr=labels_path,
        tiles=tuple(tile_paths),
        n_particles=len(truth),
        mosaic_shape=mosaic_shape,
    )


# --------------------------------------------------------------------------------------------
# Reading ground truth back
# --------------------------------------------------------------------------------------------


def _gt_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder if folder.name == "ground_truth" else folder / "ground_truth"


def read_ground_truth(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``particles.csv`` and ``tile_origins.csv`` of a synthetic acquisition folder.

    Parameters
    ----------
    folder : str or Path
        The acquisition folder (or its ``ground_truth`` subfolder).

    Returns
    -------
    particles : pandas.DataFrame
        Columns as in ``docs/GRID_FORMAT.md``; ``label`` is uint32.
    origins : pandas.DataFrame
        ``row``, ``col`` (1-based) and true top-left ``y_px``, ``x_px``.
    """
    gt = _gt_dir(folder)
    particles = pd.read_csv(
        gt / "particles.csv",
        dtype={"label": np.uint32, "shape": str, "area_px": np.int64, "group": np.int64},
    )
    origins = pd.read_csv(
        gt / "tile_origins.csv",
        dtype={"row": np.int64, "col": np.int64, "y_px": np.float64, "x_px": np.float64},
    )
    return particles, origins


def truth_labels(folder: str | Path) -> zarr.Array:
    """Open the true label mosaic (``ground_truth/labels.zarr``) read-only."""
    return zarr.open_array(str(_gt_dir(folder) / "labels.zarr"), mode="r")
