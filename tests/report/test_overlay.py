"""The run report: statistics against NumPy, figures' numbers, outline colours, the HTML page."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from mosaicflow.report import overlay, plots, scalebar, write_report
from mosaicflow.report.summary import encode_classes

CLASSES = ["cube", "rod", "sphere"]

CONFUSION = [[40, 6, 4], [3, 45, 2], [5, 1, 44]]


# -- helpers -------------------------------------------------------------------------------


def _labels_scene(rng: np.random.Generator, shape=(600, 700), n=60) -> np.ndarray:
    """Discs of random size, some overlapping (so some outlines run between two labels)."""
    labels = np.zeros(shape, dtype=np.uint32)
    for lab in range(1, n + 1):
        r = rng.uniform(5, 25)
        rr, cc = disk((rng.uniform(0, shape[0]), rng.uniform(0, shape[1])), r, shape=shape)
        labels[rr, cc] = lab
    return labels


def _assert_outlines(rgb, labels, boundary, table, names) -> None:
    """Oracle: outline pixels (``boundary``) have their particle's class colour from the
    table; every other pixel is grey."""
    hexes = dict(zip(names, plots.class_colors(names), strict=True))
    rgb_of_class = {k: [int(c[i : i + 2], 16) for i in (1, 3, 5)] for k, c in hexes.items()}
    class_of_label = pd.Series(table["class"].to_numpy(), index=table["label"].astype(int))
    ys, xs = np.nonzero(boundary)
    assert ys.size > 0
    classes = class_of_label.loc[labels[ys, xs].astype(int)]
    expected = np.array([rgb_of_class[c] for c in classes], dtype=np.uint8)
    np.testing.assert_array_equal(rgb[ys, xs], expected)
    rest = rgb[~boundary]
    np.testing.assert_array_equal(rest[:, 0], rest[:, 1])
    np.testing.assert_array_equal(rest[:, 1], rest[:, 2])


# -- overlays --------------------------------------------------------------------------------
def test_overlay_outline_colours_are_class_colours(
    image_store, scene_table, tmp_path: Path
) -> None:
    rng = np.random.default_rng(6)
    labels = _labels_scene(rng)
    table = scene_table(labels, rng)
    store = image_store(tmp_path / "o.zarr", labels, table)
    codes, names = encode_classes(table["class"], CLASSES)
    colors = overlay.class_colors_for_labels(table["label"].to_numpy(), codes, names)

    # overview at 1/4: labels are every 4th pixel of level 0, outlines of that image
    view = overlay.overview(store, colors, max_px=200)
    assert view is not None and view.factor == 4 and view.labels_level == 2
    small = labels[::4, ::4][: view.rgb.shape[0], : view.rgb.shape[1]]
    _assert_outlines(view.rgb, small, find_boundaries(small, mode="inner"), table, names)

    # a missing pyramid level: the next finer one, strided, gives the same labels
    del store.root["labels/particles"]["2"]
    again = overlay.overview(store, colors, max_px=200)
    assert again is not None and again.labels_level == 1
    np.testing.assert_array_equal(again.rgb, view.rgb)

    # full-resolution crops, inside and at the mosaic's corner: the whole image's outlines
    whole = find_boundaries(labels, mode="inner")
    for crop in (
        overlay.Crop("inside", "", 100, 150, 256, 300),
        overlay.Crop("corner", "", 344, 444, 256, 256),
    ):
        rgb, n_outline = overlay.crop_rgb(store, crop, colors)
        window = (slice(crop.y0, crop.y0 + crop.h), slice(crop.x0, crop.x0 + crop.w))
        assert n_outline == whole[window].sum()
        _assert_outlines(rgb, labels[window], whole[window], table, names)


def test_overview_png_holds_the_overlay_pixel_for_pixel(
    check_page, image_store, scene_table, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    labels = _labels_scene(rng, shape=(300, 420), n=25)
    table = scene_table(labels, rng)
    store = image_store(tmp_path / "p.zarr", labels, table, chunk=256)
    summary = write_report(store, overview_px=2048, crop_px=128)
    report = tmp_path / "p.zarr" / "report"
    png = np.round(matplotlib.image.imread(report / "overview.png") * 255).astype(np.uint8)
    h, w = labels.shape
    block = png[-h:, :w, :3]
    _, names = encode_classes(table["class"], CLASSES)
    _assert_outlines(block, labels, find_boundaries(labels, mode="inner"), table, names)
    view = summary["overview"]
    assert {k: view[k] for k in ("factor", "image_level", "labels_level")} == {
        "factor": 1,
        "image_level": 0,
        "labels_level": 0,
    }
    assert view["nm_per_px"] == 2.0
    # crops: densest, random and largest particle (all inside the mosaic, 128 px)
    crops = {c["name"]: c for c in summary["crops"]}
    largest = table.loc[table["num_pixels"].idxmax()]
    c = crops["largest"]
    assert c["h_px"] == c["w_px"] == 128
    assert c["y0_px"] <= (largest["bbox-0"] + largest["bbox-2"]) / 2 <= c["y0_px"] + 128
    assert c["x0_px"] <= (largest["bbox-1"] + largest["bbox-3"]) / 2 <= c["x0_px"] + 128
    for name in crops:
        crop_png = matplotlib.image.imread(report / f"crop_{name}.png")
        assert crop_png.shape[0] > 128
    check_page(report, summary)


# -- scale bars ------------------------------------------------------------------------------
def _bar_in_png(path: Path, image_h: int) -> tuple[int, int]:
    """The scale bar measured in a figure's PNG: the longest run of pure bar-coloured pixels
    in the header above the image block; returns (length in px, rows holding that run)."""
    png = np.round(matplotlib.image.imread(path) * 255).astype(np.uint8)[..., :3]
    header = png[: png.shape[0] - image_h]
    is_bar = (header == np.asarray(scalebar.SCALE_BAR_COLOR, dtype=np.uint8)).all(axis=-1)
    best = np.zeros(header.shape[0], dtype=int)
    starts = np.zeros(header.shape[0], dtype=int)
    for row in range(header.shape[0]):
        padded = np.concatenate([[0], is_bar[row].astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(padded))
        if edges.size:
            runs = edges[1::2] - edges[::2]
            best[row] = runs.max()
            starts[row] = edges[::2][runs.argmax()]
    length = int(best.max())
    rows = np.flatnonzero(best == length)
    assert (starts[rows] == 0).all()  # the bar starts above the image's first column
    assert np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size))  # one solid band
    # it ends SCALE_BAR_GAP pixels above the image
    assert header.shape[0] - 1 - rows[-1] == scalebar.SCALE_BAR_GAP
    return length, int(rows.size)


@pytest.mark.parametrize(
    ("width", "nm_per_px", "length_nm", "label"),
    [
        (1617, 8.0, 2000.0, "2 µm"),  # the default run's overview: 2587 nm wanted
        (512, 2.0, 200.0, "200 nm"),  # 204.8 nm wanted
        (420, 2.0, 200.0, "200 nm"),  # 168 nm: nearer 200 than 100 on a log scale
        (1000, 0.37, 100.0, "100 nm"),  # 74 nm: nearer 100 than 50
        (700, 31.0, 5000.0, "5 µm"),  # 4340 nm
        (640, 0.05, 5.0, "5 nm"),  # 6.4 nm
    ],
)
def test_scale_bar_is_a_round_fifth_of_the_width(width, nm_per_px, length_nm, label) -> None:
    bar = scalebar.scale_bar(width, nm_per_px)
    assert bar is not None
    assert (bar.length_nm, bar.label) == (length_nm, label)
    assert bar.length_px == round(length_nm / nm_per_px)
    assert 0.1 * width < bar.length_px < 0.45 * width


def test_scale_bar_without_a_pixel_size() -> None:
    assert scalebar.scale_bar(500, None) is None
    assert scalebar.scale_bar(500, 0.0) is None
    assert scalebar.scale_bar(500, float("nan")) is None
    assert scalebar.length_label(2500.0) == "2.5 µm" and scalebar.length_label(50.0) == "50 nm"


@pytest.mark.parametrize("overview_px", [2048, 120])
def test_scale_bars_measured_in_the_pngs(
    image_store, scene_table, tmp_path: Path, overview_px: int
) -> None:
    """The bar's length in the PNG equals its stated length / (pixel size x factor), for the
    overview (full resolution and 1/4) and every crop."""
    rng = np.random.default_rng(17)
    labels = _labels_scene(rng, shape=(300, 420), n=25)
    table = scene_table(labels, rng)
    store = image_store(tmp_path / "s.zarr", labels, table, chunk=128)
    pixel_nm = store.read_image("mosaic").attrs["pixel_size_nm"][1]
    summary = write_report(store, overview_px=overview_px, crop_px=128)
    report = tmp_path / "s.zarr" / "report"
    view = summary["overview"]
    factor = view["factor"]
    assert factor == (1 if overview_px == 2048 else 4)
    bar = view["scale_bar"]
    h_view = -(-labels.shape[0] // factor)
    length, rows = _bar_in_png(report / "overview.png", h_view)
    assert length == bar["length_px"] == round(bar["length_nm"] / (pixel_nm * factor))
    assert rows == scalebar.SCALE_BAR_THICKNESS
    page = (report / "index.html").read_text()
    assert bar["label"] in page
    assert "coloured by class" in page and "no classification" not in page  # classes: colours
    for crop in summary["crops"]:
        cbar = crop["scale_bar"]
        length, _ = _bar_in_png(report / f"crop_{crop['name']}.png", crop["h_px"])
        assert length == cbar["length_px"] == round(cbar["length_nm"] / pixel_nm)
        assert cbar["length_nm"] == 50.0  # 128 px x 2 nm / 5 = 51.2 nm


def test_pick_crops_densest_cell() -> None:
    rng = np.random.default_rng(8)
    centres = np.column_stack([rng.uniform(0, 2000, 300), rng.uniform(0, 3000, 300)])
    cluster = np.column_stack([rng.uniform(1100, 1500, 80), rng.uniform(600, 1000, 80)])
    centres = np.vstack([centres, cluster])
    sizes = rng.uniform(1, 10, len(centres))
    picks = overlay.pick_crops(centres, sizes, (2000, 3000), crop_px=512, seed=0)
    dense = picks[0]
    assert dense.name == "densest" and (dense.y0, dense.x0) == (1024, 512)
    hist, _, _ = np.histogram2d(
        centres[:, 0], centres[:, 1], bins=[np.arange(0, 2049, 512), np.arange(0, 3073, 512)]
    )
    assert f"({int(hist.max())} particles)" in dense.reason
    assert [p.name for p in picks] == ["densest", "random", "largest"]
    big = centres[np.argmax(sizes)]
    largest = picks[2]
    assert largest.y0 <= big[0] <= largest.y0 + 512 and largest.x0 <= big[1] <= largest.x0 + 512
    assert picks == overlay.pick_crops(centres, sizes, (2000, 3000), crop_px=512, seed=0)
