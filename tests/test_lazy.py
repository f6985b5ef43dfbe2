"""Building the stages' graphs, from the tiles to the particle table, computes nothing."""

from __future__ import annotations

from mosaicflow.measure import label, regionprops_table
from mosaicflow.restoration import gaussian_filter


def test_building_graphs_computes_nothing(no_compute, small_grid):
    from mosaicflow.io import read_tileset
    from mosaicflow.stitch import fuse

    tiles = read_tileset(small_grid.folder)
    with no_compute():
        mosaic = fuse(tiles, chunks=128)
        den = gaussian_filter(mosaic, sigma=1.5)
        labels = label(den > 100)
        regionprops_table(labels, den)
