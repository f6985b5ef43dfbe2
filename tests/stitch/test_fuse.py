"""Fusion: the chunked mosaic equals a whole-image placement of the tiles by the same rule
(nearest centre, or linear blending with gains and a flat field), for any chunking; coverage
marks exactly the acquired pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from mosaicflow import synth
from mosaicflow.errors import ConfigError
from mosaicflow.io import read_tileset
from mosaicflow.stitch import coverage, fuse, fuse_overlapped, mosaic_shape


def _whole_image_oracle(tileset) -> tuple[np.ndarray, np.ndarray]:
    """Every tile over the whole mosaic at once: each pixel from the tile whose centre is
    nearest in half-tile units (first tile on ties), and which pixels some tile covers."""
    origins = np.rint(tileset.tiles[["y_px", "x_px"]].to_numpy(float)).astype(int)
    origins -= origins.min(axis=0)
    h, w = tileset.tile_shape
    shape = (origins[:, 0].max() + h, origins[:, 1].max() + w)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    best = np.full(shape, np.inf)
    out = np.zeros(shape, dtype=tileset.dtype)
    covered = np.zeros(shape, dtype=bool)
    for (ty, tx), path in zip(origins, tileset.tiles["path"], strict=True):
        dist = np.maximum(
            np.abs(yy - (ty + (h - 1) / 2)) / (h / 2), np.abs(xx - (tx + (w - 1) / 2)) / (w / 2)
        )
        inside = np.zeros(shape, dtype=bool)
        inside[ty : ty + h, tx : tx + w] = True
        take = inside & (dist < best)
        placed = np.zeros(shape, dtype=tileset.dtype)
        placed[ty : ty + h, tx : tx + w] = tifffile.imread(path)
        out[take] = placed[take]
        best[take] = dist[take]
        covered |= inside
    return out, covered


@pytest.fixture(scope="module")
def holey_grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("holey") / "acq"
    synth.write_maps_grid(
        folder, rows=3, cols=3, tile_shape=(120, 160), snr=20.0, seed=4, missing_tiles=[(2, 2)]
    )
    return read_tileset(folder)


@pytest.mark.parametrize("chunks", [1000, 128, (37, 53), (9, 250)])
def test_fused_mosaic_equals_the_whole_image_placement(holey_grid, chunks):
    expected, covered = _whole_image_oracle(holey_grid)
    mosaic = fuse(holey_grid, chunks=chunks, blend="nearest")
    assert mosaic.shape == expected.shape == mosaic_shape(holey_grid)
    np.testing.assert_array_equal(mosaic.values, expected)
    np.testing.assert_array_equal(coverage(holey_grid, chunks=chunks).values, covered)
    assert not covered.all()  # the missing tile leaves a hole the coverage shows
    assert (mosaic.values[~covered] == 0).all()


def test_any_box_of_the_coverage_is_read_in_one_task(holey_grid):
    """The particle table reads each chunk of the coverage with its halo directly (no edge
    tasks): the coverage must be a plain read of one source, and any box of it, across chunk
    borders, the whole-image coverage's box."""
    from mosaicflow._shared.halo import read_box_task, store_source

    _, covered = _whole_image_oracle(holey_grid)
    data = coverage(holey_grid, chunks=(37, 53)).data
    source = store_source(data)
    assert source is not None
    graph = dict(data.__dask_graph__())
    rng = np.random.default_rng(0)
    for _ in range(20):
        y0, x0 = (int(rng.integers(0, n)) for n in covered.shape)
        y1 = int(rng.integers(y0, covered.shape[0] + 1))
        x1 = int(rng.integers(x0, covered.shape[1] + 1))
        func, key, where = read_box_task(source, (y0, x0, y1, x1))
        np.testing.assert_array_equal(func(graph[key], where), covered[y0:y1, x0:x1])


def test_coordinates_are_nm_from_the_pixel_size(holey_grid):
    mosaic = fuse(holey_grid, chunks=64)
    py, px = holey_grid.pixel_size_nm
    np.testing.assert_allclose(mosaic["y"].values, np.arange(mosaic.shape[0]) * py)
    np.testing.assert_allclose(mosaic["x"].values, np.arange(mosaic.shape[1]) * px)
    assert mosaic.attrs["pixel_size_nm"] == [py, px]


def test_positions_must_match_the_tiles(holey_grid):
    with pytest.raises(ConfigError, match="positions has 2 rows"):
        fuse(holey_grid, holey_grid.tiles.iloc[:2])


def _blend_oracle(tileset, gains=None, flat=None) -> np.ndarray:
    """Every tile over the whole mosaic at once, corrected, then averaged with weights equal to
    the distance (1 at the border pixel) to the tile's nearest edge."""
    origins = np.rint(tileset.tiles[["y_px", "x_px"]].to_numpy(float)).astype(int)
    origins -= origins.min(axis=0)
    h, w = tileset.tile_shape
    shape = (origins[:, 0].max() + h, origins[:, 1].max() + w)
    yy, xx = np.mgrid[:h, :w]
    edge = np.minimum.reduce([yy + 1, h - yy, xx + 1, w - xx]).astype(float)
    total, weight = np.zeros(shape), np.zeros(shape)
    for k, ((ty, tx), path) in enumerate(zip(origins, tileset.tiles["path"], strict=True)):
        tile = tifffile.imread(path).astype(float)
        if flat is not None:
            tile = tile / flat
        if gains is not None:
            tile = tile * gains["gain"].iloc[k] + gains["offset"].iloc[k]
        total[ty : ty + h, tx : tx + w] += edge * tile
        weight[ty : ty + h, tx : tx + w] += edge
    fused = np.divide(total, weight, out=np.zeros(shape), where=weight > 0)
    return np.clip(np.rint(fused), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("chunks", [1000, (37, 53)])
def test_linear_blend_equals_the_whole_image_blend(holey_grid, chunks):
    n = len(holey_grid.tiles)
    rng = np.random.default_rng(0)
    gains = pd.DataFrame({"gain": rng.uniform(0.8, 1.2, n), "offset": rng.uniform(-9, 9, n)})
    yy, xx = np.mgrid[: holey_grid.tile_shape[0], : holey_grid.tile_shape[1]]
    flat = (1.0 - 0.1 * ((yy / yy.max() - 0.5) ** 2 + (xx / xx.max() - 0.5) ** 2)).astype(
        np.float32
    )
    for g, f in ((None, None), (gains, flat)):
        expected = _blend_oracle(holey_grid, g, f)
        fused = fuse(holey_grid, chunks=chunks, blend="linear", gains=g, flatfield=f).values
        # float rounding order may differ from the oracle's by one grey level at .5 boundaries
        assert np.abs(fused.astype(int) - expected).max() <= 1
        assert (fused != expected).mean() < 1e-3
    # the chunking itself never changes a pixel
    np.testing.assert_array_equal(
        fuse(holey_grid, chunks=chunks, gains=gains, flatfield=flat).values,
        fuse(holey_grid, chunks=64, gains=gains, flatfield=flat).values,
    )


def test_corrections_apply_in_nearest_mode_too(holey_grid):
    n = len(holey_grid.tiles)
    gains = pd.DataFrame({"gain": np.full(n, 0.5), "offset": np.full(n, 10.0)})
    plain = fuse(holey_grid, chunks=64, blend="nearest").values.astype(float)
    scaled = fuse(holey_grid, chunks=64, blend="nearest", gains=gains).values
    covered = coverage(holey_grid, chunks=64).values
    expected = np.clip(np.rint(plain * 0.5 + 10), 0, 255)
    np.testing.assert_array_equal(scaled[covered], expected[covered])
    assert (scaled[~covered] == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"blend": "feather"}, "option blend: 'feather'"),
        ({"gains": pd.DataFrame({"gain": [1.0]})}, "gains: expected 'gain' and 'offset'"),
        ({"flatfield": np.ones((3, 3))}, "flatfield: expected finite positive"),
    ],
)
def test_bad_fusion_options_are_named(holey_grid, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fuse(holey_grid, **kwargs)


def test_overlap_cells_are_exactly_the_pixels_several_tiles_cover():
    """The linear blend forms weighted sums only in these cells: every pixel two or more boxes
    cover lies in exactly one cell, which lists exactly the boxes covering it, in order."""
    from mosaicflow.stitch.nearest import overlap_cells

    rng = np.random.default_rng(3)
    for _ in range(50):
        boxes = []
        for _ in range(int(rng.integers(1, 7))):
            y0, x0 = (int(v) for v in rng.integers(0, 40, 2))
            boxes.append((y0, y0 + int(rng.integers(1, 30)), x0, x0 + int(rng.integers(1, 30))))
        members = [[[] for _ in range(70)] for _ in range(70)]
        for k, (a, b, c, d) in enumerate(boxes):
            for y in range(a, b):
                for x in range(c, d):
                    members[y][x].append(k)
        seen = np.zeros((70, 70), dtype=int)
        for (a, b, c, d), cell in overlap_cells(boxes):
            seen[a:b, c:d] += 1
            assert all(members[y][x] == cell for y in range(a, b) for x in range(c, d))
        several = np.array([[len(m) > 1 for m in row] for row in members])
        np.testing.assert_array_equal(seen, several.astype(int))


def test_nearest_tile_equals_every_tile_compared_at_every_pixel():
    """The owner of each pixel, worked out only where tiles overlap, equals the rule applied
    to every tile at every pixel of the region: nearest centre in half-tile units, the first
    tile on ties (equal origins give exact ties), 0 where no tile covers the pixel."""
    from mosaicflow.stitch.nearest import nearest_tile

    rng = np.random.default_rng(5)
    h, w = 13, 17
    for _ in range(40):
        origins = rng.integers(-10, 40, size=(int(rng.integers(1, 8)), 2))
        if len(origins) > 2:
            origins[-1] = origins[0]  # a tie everywhere the two cover
        y0, x0 = (int(v) for v in rng.integers(-5, 30, 2))
        region = (y0, y0 + int(rng.integers(1, 40)), x0, x0 + int(rng.integers(1, 40)))
        yy, xx = np.mgrid[region[0] : region[1], region[2] : region[3]].astype(float)
        best = np.full(yy.shape, np.inf)
        expected = np.zeros(yy.shape, dtype=np.int32)
        for k, (ty, tx) in enumerate(origins):
            inside = (yy >= ty) & (yy < ty + h) & (xx >= tx) & (xx < tx + w)
            dist = np.maximum(
                np.abs(yy - ty - (h - 1) / 2) / (h / 2), np.abs(xx - tx - (w - 1) / 2) / (w / 2)
            )
            take = inside & (dist < best)
            expected[take] = k + 1
            best[take] = dist[take]
        np.testing.assert_array_equal(nearest_tile(region, origins, (h, w)), expected)


@pytest.mark.parametrize(("chunks", "depth"), [(128, 4), ((37, 53), 9), ((9, 250), 4), (1000, 3)])
def test_overlapped_blocks_are_the_fused_mosaic_around_each_chunk(holey_grid, chunks, depth):
    """Each block of ``fuse_overlapped`` is the fused mosaic's chunk with ``depth`` pixels on
    every side where the mosaic goes on (clipped at its border); the mosaic it returns is
    ``fuse``'s."""
    expected = fuse(holey_grid, chunks=chunks, blend="linear").values
    mosaic, overlapped = fuse_overlapped(holey_grid, chunks=chunks, depth=depth)
    np.testing.assert_array_equal(mosaic.values, expected)
    assert mosaic.chunks == fuse(holey_grid, chunks=chunks).chunks == overlapped.chunks
    assert overlapped.depth == (depth, depth) and overlapped.shape == expected.shape
    ys, xs = (np.cumsum((0, *c)) for c in overlapped.chunks)
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            block = overlapped.blocks.blocks[i, j].compute()
            y0, x0 = max(0, ys[i] - depth), max(0, xs[j] - depth)
            y1, x1 = min(ys[-1], ys[i + 1] + depth), min(xs[-1], xs[j + 1] + depth)
            np.testing.assert_array_equal(block, expected[y0:y1, x0:x1])
    with pytest.raises(ConfigError, match="depth"):
        fuse_overlapped(holey_grid, chunks=chunks, depth=0)
