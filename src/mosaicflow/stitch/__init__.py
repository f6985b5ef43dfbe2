"""Tile positions and fusion into one mosaic."""

from __future__ import annotations

from mosaicflow.stitch.equalize import equalize_tileset, estimate_flatfield
from mosaicflow.stitch.fuse import coverage, fuse, mosaic_shape, pixel_coords
from mosaicflow.stitch.register import register_pairs
from mosaicflow.stitch.seams import seam_contrast
from mosaicflow.stitch.solve import register_tileset, solve_positions

__all__ = [
    "coverage",
    "equalize_tileset",
    "estimate_flatfield",
    "fuse",
    "mosaic_shape",
    "pixel_coords",
    "register_pairs",
    "register_tileset",
    "seam_contrast",
    "solve_positions",
]
