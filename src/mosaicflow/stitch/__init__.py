"""Tile positions and fusion into one mosaic."""

from __future__ import annotations

from mosaicflow.stitch.coverage import coverage
from mosaicflow.stitch.equalize import equalize_tileset, estimate_flatfield
from mosaicflow.stitch.fuse import fuse, fuse_overlapped, mosaic_shape, pixel_coords
from mosaicflow.stitch.register import register_pairs
from mosaicflow.stitch.seams import seam_contrast
from mosaicflow.stitch.solve import first_pass, register_tileset, solve_positions

__all__ = [
    "coverage",
    "equalize_tileset",
    "estimate_flatfield",
    "first_pass",
    "fuse",
    "fuse_overlapped",
    "mosaic_shape",
    "pixel_coords",
    "register_pairs",
    "register_tileset",
    "seam_contrast",
    "solve_positions",
]
