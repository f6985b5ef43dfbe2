"""Tile positions and fusion into one mosaic."""

from __future__ import annotations

from mosaicflow.stitch.fuse import fuse, mosaic_shape, pixel_coords

__all__ = ["fuse", "mosaic_shape", "pixel_coords"]
