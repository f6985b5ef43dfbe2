"""Tile positions and fusion into one mosaic."""

from __future__ import annotations

from mosaicflow.stitch.fuse import coverage, fuse, mosaic_shape, pixel_coords

__all__ = ["coverage", "fuse", "mosaic_shape", "pixel_coords"]
