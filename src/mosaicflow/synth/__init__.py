"""Synthetic inputs with exact ground truth: SEM/HAADF particle fields (:mod:`.sem`), five-class
HRTEM fields (:mod:`.hrtem`), cut into Maps-like tile grids (:mod:`.grid`)."""

from __future__ import annotations

from mosaicflow.synth import grid, hrtem, sem
from mosaicflow.synth.grid import (
    DTYPE_RANGE_FRACTION,
    INTENSITY_RANGE,
    STAGE_ORIGIN_M,
    GridTruth,
    read_ground_truth,
    tile_name,
    truth_labels,
    write_tile,
    write_tiles,
)
from mosaicflow.synth.hrtem import CLASSES, hrtem_field, particle_crops, write_hrtem_grid
from mosaicflow.synth.sem import (
    Appearance,
    ParticleIndex,
    add_noise,
    index_particles,
    make_particles,
    render_substrate,
    render_window,
    synth_field,
    write_maps_grid,
)

__all__ = [
    "CLASSES",
    "DTYPE_RANGE_FRACTION",
    "INTENSITY_RANGE",
    "STAGE_ORIGIN_M",
    "Appearance",
    "GridTruth",
    "ParticleIndex",
    "add_noise",
    "grid",
    "hrtem",
    "hrtem_field",
    "index_particles",
    "make_particles",
    "particle_crops",
    "read_ground_truth",
    "render_substrate",
    "render_window",
    "sem",
    "synth_field",
    "tile_name",
    "truth_labels",
    "write_hrtem_grid",
    "write_maps_grid",
    "write_tile",
    "write_tiles",
]
