"""Tests for the Maps-like tile grid and its ground-truth files (mosaicflow.synth.grid), written
through the SEM and HRTEM grid writers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from mosaicflow import synth
from mosaicflow.errors import ConfigError
from mosaicflow.synth import grid
from mosaicflow.synth import hrtem as sh

# Small grid whose mosaic (760 x 1680) spans two label chunks along x.
SMALL: dict[str, Any] = dict(rows=2, cols=3, tile_shape=(400, 600), overlap=0.10)


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _read_tile(folder: Path, row: int, col: int) -> tuple[np.ndarray, dict]:
    with tifffile.TiffFile(folder / synth.tile_name(row, col)) as tif:
        meta = tif.fei_metadata
        assert meta is not None, "tag 34682 did not parse"
        return tif.asarray(), meta


@pytest.fixture(scope="module")
def clean_grid(tmp_path_factory: pytest.TempPathFactory) -> synth.GridTruth:
    """Noise-free grid without per-tile gain, offset or vignetting, and exact stage positions."""
    out = tmp_path_factory.mktemp("clean")
    return synth.write_maps_grid(
        out,
        **SMALL,
        snr=None,
        gain_sigma=0.0,
        offset_sigma=0.0,
        vignetting=0.0,
        stage_error_px=0.0,
        bit_depth=16,
        seed=3,
        touching_fraction=0.1,
        agglomerate_fraction=0.1,
    )


def test_write_is_deterministic(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(rows=2, cols=2, tile_shape=(160, 240), overlap=0.2, snr=15.0)
    synth.write_maps_grid(tmp_path / "a", seed=7, **kw)
    synth.write_maps_grid(tmp_path / "b", seed=7, **kw)
    synth.write_maps_grid(tmp_path / "c", seed=8, **kw)
    ha, hb, hc = (_hash_tree(tmp_path / n) for n in "abc")
    assert ha == hb
    assert len(ha) > 4
    tiles = [k for k in ha if k.endswith(".tif")]
    assert len(tiles) == 4
    assert all(ha[k] != hc[k] for k in tiles)


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_tiles_follow_the_contract(tmp_path: Path, bit_depth: int, dtype: type) -> None:
    rows, cols, (th, tw), sigma = 3, 3, (120, 200), 2.0
    gt = synth.write_maps_grid(
        tmp_path,
        rows=rows,
        cols=cols,
        tile_shape=(th, tw),
        overlap=0.15,
        bit_depth=bit_depth,
        pixel_size_nm=1.5,
        stage_error_px=sigma,
        seed=1,
    )
    grid = json.loads(gt.grid_json.read_text())
    assert grid["format"] == "mosaicflow-grid/1"
    assert (grid["rows"], grid["cols"], grid["tile_height"], grid["tile_width"]) == (3, 3, th, tw)
    assert grid["bit_depth"] == bit_depth and grid["pixel_size_nm"] == 1.5
    assert grid["missing"] == []
    assert [(t["row"], t["col"]) for t in grid["tiles"]] == [
        (r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)
    ]
    _, origins = synth.read_ground_truth(tmp_path)
    y0, x0 = synth.STAGE_ORIGIN_M
    p = 1.5e-9
    for entry, (_, o) in zip(grid["tiles"], origins.iterrows(), strict=True):
        assert entry["file"] == f"Tile_{entry['row']:03d}-{entry['col']:03d}-000000_0-000.tif"
        assert (o["row"], o["col"]) == (entry["row"], entry["col"])
        img, meta = _read_tile(tmp_path, entry["row"], entry["col"])
        assert img.shape == (th, tw) and img.dtype == dtype
        assert meta["Scan"]["PixelWidth"] == pytest.approx(p, rel=1e-12)
        assert meta["Scan"]["PixelHeight"] == pytest.approx(p, rel=1e-12)
        assert (meta["Image"]["ResolutionX"], meta["Image"]["ResolutionY"]) == (tw, th)
        cx = (meta["Stage"]["StageX"] - x0) / p
        cy = (y0 - meta["Stage"]["StageY"]) / p  # stage Y points up
        assert abs(cx - (o["x_px"] + (tw - 1) / 2)) < 5 * sigma
        assert abs(cy - (o["y_px"] + (th - 1) / 2)) < 5 * sigma
    # The stage error is really there, and really Gaussian-sized.
    assert (
        0.3 * sigma
        < np.std(
            [
                (_read_tile(tmp_path, r, c)[1]["Stage"]["StageX"] - x0) / p
                - (origins.set_index(["row", "col"]).loc[(r, c), "x_px"] + (tw - 1) / 2)
                for r in range(1, 4)
                for c in range(1, 4)
            ]
        )
        < 3 * sigma
    )
    # A fixed 10 %..90 % scale: almost nothing saturates.
    img, _ = _read_tile(tmp_path, 2, 2)
    top = np.iinfo(dtype).max
    assert np.mean((img == 0) | (img == top)) < 1e-3


def test_exact_stage_without_error(clean_grid: synth.GridTruth) -> None:
    _, origins = synth.read_ground_truth(clean_grid.folder)
    th, tw = SMALL["tile_shape"]
    y0, x0 = synth.STAGE_ORIGIN_M
    for _, o in origins.iterrows():
        _, meta = _read_tile(clean_grid.folder, int(o["row"]), int(o["col"]))
        cx = (meta["Stage"]["StageX"] - x0) / 2e-9
        cy = (y0 - meta["Stage"]["StageY"]) / 2e-9
        assert cx == pytest.approx(o["x_px"] + (tw - 1) / 2, abs=1e-6)
        assert cy == pytest.approx(o["y_px"] + (th - 1) / 2, abs=1e-6)


def test_true_origins_and_mosaic_shape(clean_grid: synth.GridTruth) -> None:
    th, tw = SMALL["tile_shape"]
    sy, sx = round(th * 0.9), round(tw * 0.9)
    _, origins = synth.read_ground_truth(clean_grid.folder)
    assert list(origins.columns) == ["row", "col", "y_px", "x_px"]
    np.testing.assert_array_equal(origins["y_px"], (origins["row"] - 1) * sy)
    np.testing.assert_array_equal(origins["x_px"], (origins["col"] - 1) * sx)
    assert clean_grid.mosaic_shape == (sy + th, 2 * sx + tw)


@pytest.mark.parametrize("second", [(1, 2), (2, 1), (2, 2)])
def test_overlapping_tiles_agree(clean_grid: synth.GridTruth, second: tuple[int, int]) -> None:
    _, origins = synth.read_ground_truth(clean_grid.folder)
    org = {(int(r.row), int(r.col)): (int(r.y_px), int(r.x_px)) for r in origins.itertuples()}
    th, tw = SMALL["tile_shape"]
    a, _ = _read_tile(clean_grid.folder, 1, 1)
    b, _ = _read_tile(clean_grid.folder, *second)
    (ay, ax), (by, bx) = org[(1, 1)], org[second]
    y0, y1 = max(ay, by), min(ay, by) + th
    x0, x1 = max(ax, bx), min(ax, bx) + tw
    assert y1 > y0 and x1 > x0
    pa = a[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
    pb = b[y0 - by : y1 - by, x0 - bx : x1 - bx]
    np.testing.assert_array_equal(pa, pb)
    assert pa.std() > 0  # not a vacuous comparison of two flat patches


def test_noisy_overlaps_differ(tmp_path: Path) -> None:
    gt = synth.write_maps_grid(tmp_path, rows=1, cols=2, tile_shape=(100, 200), snr=10.0, seed=2)
    a, _ = _read_tile(gt.folder, 1, 1)
    b, _ = _read_tile(gt.folder, 1, 2)
    assert not np.array_equal(a[:, 180:], b[:, :20])  # independent acquisitions


def test_ground_truth_matches_labels(clean_grid: synth.GridTruth) -> None:
    particles, _ = synth.read_ground_truth(clean_grid.folder)
    assert list(particles.columns) == [
        "label",
        "shape",
        "centroid_y_nm",
        "centroid_x_nm",
        "area_px",
        "area_nm2",
        "ecd_nm",
        "group",
    ]
    labels_z = synth.truth_labels(clean_grid.folder)
    assert labels_z.shape == clean_grid.mosaic_shape
    assert labels_z.dtype == np.uint32
    assert labels_z.chunks == (1024, 1024)
    assert labels_z.metadata.zarr_format == 3
    labels = np.asarray(labels_z[:])
    counts = np.bincount(labels.ravel())
    present = np.flatnonzero(counts[1:]) + 1
    assert len(present) == len(particles) == clean_grid.n_particles > 10
    np.testing.assert_array_equal(np.sort(particles["label"]), present)
    np.testing.assert_array_equal(particles["area_px"], counts[particles["label"]])
    np.testing.assert_allclose(particles["area_nm2"], particles["area_px"] * 4.0)
    np.testing.assert_allclose(particles["ecd_nm"], np.sqrt(4 * particles["area_nm2"] / np.pi))
    idx = particles["label"].to_numpy()
    cy, cx = np.asarray(ndimage.center_of_mass(labels > 0, labels, idx)).T
    np.testing.assert_allclose(particles["centroid_y_nm"], cy * 2.0, atol=1e-5)
    np.testing.assert_allclose(particles["centroid_x_nm"], cx * 2.0, atol=1e-5)
    assert set(particles["shape"]) <= {"sphere", "rod", "cube"}
    assert (particles["group"] > 0).any() and (particles["group"] == 0).any()
    # labels.zarr is exactly the on-demand rendering of the whole mosaic.
    catalogue = synth.make_particles(
        clean_grid.mosaic_shape, seed=3, touching_fraction=0.1, agglomerate_fraction=0.1
    )
    _, whole = synth.render_window(catalogue, 0, 0, *clean_grid.mosaic_shape, seed=3)
    np.testing.assert_array_equal(labels, whole)


def test_tiles_show_the_true_particles(clean_grid: synth.GridTruth) -> None:
    labels = np.asarray(synth.truth_labels(clean_grid.folder)[:])
    th, tw = SMALL["tile_shape"]
    img, _ = _read_tile(clean_grid.folder, 1, 1)
    lab = labels[:th, :tw]
    assert img[lab > 0].mean() > img[lab == 0].mean() + 0.3 * np.iinfo(np.uint16).max


def test_missing_tiles(tmp_path: Path) -> None:
    gt = synth.write_maps_grid(
        tmp_path, rows=2, cols=3, tile_shape=(80, 120), missing_tiles=[(1, 2), (2, 3)]
    )
    grid = json.loads(gt.grid_json.read_text())
    assert grid["missing"] == [[1, 2], [2, 3]]
    listed = {(t["row"], t["col"]) for t in grid["tiles"]}
    assert listed == {(1, 1), (1, 3), (2, 1), (2, 2)}
    written = sorted(p.name for p in tmp_path.glob("Tile_*.tif"))
    assert written == sorted(synth.tile_name(r, c) for r, c in listed)
    assert len(gt.tiles) == 4
    _, origins = synth.read_ground_truth(tmp_path)
    assert len(origins) == 6  # true origins of every grid position, written or not
    with pytest.raises(ValueError, match="outside"):
        synth.write_maps_grid(tmp_path / "x", rows=2, cols=2, missing_tiles=[(3, 1)])


def test_progress_is_reported(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    synth.write_maps_grid(
        tmp_path,
        rows=1,
        cols=2,
        tile_shape=(80, 120),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1][0] == calls[-1][1] == len(calls) == 3  # one label chunk + two tiles


def test_bad_grid_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bit_depth"):
        synth.write_maps_grid(tmp_path, bit_depth=12)
    for kwargs, message in [
        (dict(rows=0), "rows and cols"),
        (dict(overlap=1.0), "overlap"),
        (dict(tile_shape=(0, 10)), "tile_shape"),
    ]:
        with pytest.raises(ConfigError, match=message):
            synth.write_maps_grid(tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="overlap"):
        sh.write_hrtem_grid(tmp_path, overlap=-0.1)


def test_layout_of_a_grid() -> None:
    layout = grid.grid_layout(2, 3, (400, 600), 0.10, 8)
    assert layout == grid.GridLayout((400, 600), (360, 540), (760, 1680))
