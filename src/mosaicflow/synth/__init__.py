"""Synthetic inputs with exact ground truth: SEM/HAADF particle fields (:mod:`.sem`), five-class
HRTEM fields (:mod:`.hrtem`), cut into Maps-like tile grids (:mod:`.grid`).

The names below are imported from their modules when first asked for: importing one small
module of this package (the command line's help reads the HRTEM defaults) does not load them
all, with pandas, tifffile and Zarr.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from mosaicflow.synth.hrtem import (
        CLASSES,
        hrtem_field,
        particle_crops,
        write_hrtem_grid,
    )
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

#: Where each public name lives (a module of this package).
_HOMES = {
    "grid": "grid",
    "hrtem": "hrtem",
    "sem": "sem",
    **dict.fromkeys(
        (
            "DTYPE_RANGE_FRACTION",
            "INTENSITY_RANGE",
            "STAGE_ORIGIN_M",
            "GridTruth",
            "read_ground_truth",
            "tile_name",
            "truth_labels",
            "write_tile",
            "write_tiles",
        ),
        "grid",
    ),
    **dict.fromkeys(("CLASSES", "hrtem_field", "particle_crops", "write_hrtem_grid"), "hrtem"),
    **dict.fromkeys(
        (
            "Appearance",
            "ParticleIndex",
            "add_noise",
            "index_particles",
            "make_particles",
            "render_substrate",
            "render_window",
            "synth_field",
            "write_maps_grid",
        ),
        "sem",
    ),
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{home}")
    return module if name == home else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
