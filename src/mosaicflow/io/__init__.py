"""Tile-set readers and the run store."""

from __future__ import annotations

from mosaicflow.io.store import RunStore, open_run
from mosaicflow.io.tiles import TileSet, read_tile, read_tileset

__all__ = ["RunStore", "TileSet", "open_run", "read_tile", "read_tileset"]
