"""The run report: statistics against NumPy, figures' numbers, outline colours, the HTML page."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from skimage.draw import disk
from skimage.measure import regionprops_table
from skimage.segmentation import find_boundaries

from mosaicflow.classify.metrics import class_fractions
from mosaicflow.config import Config
from mosaicflow.io.store import RunStore
from mosaicflow.pipeline import Pipeline
from mosaicflow.report import ECD, overlay, plots, size_statistics, write_report
from mosaicflow.report.summary import encode_classes

CLASSES = ["cube", "rod", "sphere"]
CONFUSION = [[40, 6, 4], [3, 45, 2], [5, 1, 44]]


# -- helpers -------------------------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value and not value.startswith("#"):
                self.links.append(value)


def _check_page(report: Path, summary: dict) -> list[str]:
    """Every link of index.html exists; every file of report/ is linked; returns the links."""
    parser = _Links()
    parser.feed((report / "index.html").read_text())
    links = parser.links
    assert links, "index.html links nothing"
    for link in links:
        assert (report / link).is_file(), link
    written = {p.name for p in report.iterdir()} - {"index.html"}
    assert written == set(links)
    assert set(summary["figures"].values()) == {p for p in written if p.endswith(".png")}
    for name in summary["figures"].values():
        assert (report / name).stat().st_size > 1000
        assert matplotlib.image.imread(report / name).ndim == 3
    return links


def _full_table(rng: np.random.Generator, n: int, *, classes: bool = True) -> pd.DataFrame:
    """A particle table with the measure stage's column set (values random but plausible)."""
    ecd = rng.lognormal(np.log(40.0), 0.35, n)
    table = pd.DataFrame(
        {
            "label": np.arange(1, n + 1, dtype=np.uint32),
            "num_pixels": np.round(np.pi * (ecd / 2) ** 2 / 4).astype(np.int64),
            "area": np.pi * (ecd / 2) ** 2,
            ECD: ecd,
            "perimeter": np.pi * ecd * rng.uniform(1.0, 1.3, n),
            "circularity": rng.uniform(0.4, 1.05, n),
            "aspect_ratio": rng.uniform(1.0, 3.0, n),
            "solidity": rng.uniform(0.7, 1.0, n),
            "eccentricity": rng.uniform(0.0, 0.95, n),
            "centroid-0": rng.uniform(0, 2e5, n),
            "centroid-1": rng.uniform(0, 2e5, n),
            "intensity_mean": rng.uniform(50, 200, n),
            "touches_edge": rng.random(n) < 0.02,
            "fft_mean": rng.random(n),
        }
    )
    for i, col in enumerate(("bbox-0", "bbox-1")):
        table[col] = rng.integers(0, 100_000, n)
        table[f"bbox-{i + 2}"] = table[col] + rng.integers(1, 40, n)
    if classes:
        table["class"] = np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, n)]
        table["class_probability"] = rng.uniform(0.4, 1.0, n)
    return table


def _table_store(path: Path, table: pd.DataFrame, *, confusion: bool = True) -> RunStore:
    store = RunStore(str(path), mode="w")
    store.write_table("particles", table)
    stages = {"particles": {"status": "done", "seconds": 1.5, "mpx_per_s": 12.0}}
    if confusion:
        stages["particles"] = {
            **stages.get("particles", {}),
            "classifier": {"classes": CLASSES, "confusion": CONFUSION},
        }
    store.update_meta(version="test", created="2026-01-01T00:00:00", stages=stages)
    return store


def _labels_scene(rng: np.random.Generator, shape=(600, 700), n=60) -> np.ndarray:
    """Discs of random size, some overlapping (so some outlines run between two labels)."""
    labels = np.zeros(shape, dtype=np.uint32)
    for lab in range(1, n + 1):
        r = rng.uniform(5, 25)
        rr, cc = disk((rng.uniform(0, shape[0]), rng.uniform(0, shape[1])), r, shape=shape)
        labels[rr, cc] = lab
    return labels


def _array(data: np.ndarray, pixel_nm: float = 2.0) -> xr.DataArray:
    return xr.DataArray(
        data,
        dims=("y", "x"),
        coords={"y": np.arange(data.shape[0]) * pixel_nm, "x": np.arange(data.shape[1]) * pixel_nm},
        attrs={"pixel_size_nm": [pixel_nm, pixel_nm]},
    )


def _image_store(path: Path, labels: np.ndarray, table: pd.DataFrame, *, chunk: int = 128):
    rng = np.random.default_rng(5)
    mosaic = (60 + 120 * (labels > 0) + rng.normal(0, 10, labels.shape)).clip(0, 255)
    store = _table_store(path, table)
    store.update_meta(tileset={"pixel_size_nm": [2.0, 2.0]})
    store.write_image("mosaic", _array(mosaic.astype(np.uint8)), chunk=chunk)
    store.write_image("labels/particles", _array(labels), chunk=chunk, label=True)
    return store


def _scene_table(labels: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    props = regionprops_table(labels, properties=("label", "area", "bbox", "perimeter"))
    table = pd.DataFrame(props)
    table["num_pixels"] = table["area"].astype(np.int64)
    table[ECD] = np.sqrt(4 * table["area"] / np.pi) * 2.0
    table["area"] = table["area"] * 4.0
    table["circularity"] = 4 * np.pi * table["area"] / (2.0 * table["perimeter"]) ** 2
    table["class"] = np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, len(table))]
    return table


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


# -- statistics ------------------------------------------------------------------------------
def test_size_statistics_equal_numpy() -> None:
    ecd = np.random.default_rng(0).lognormal(3.0, 0.5, 1001)
    stats = size_statistics(ecd)
    assert stats["mean_nm"] == pytest.approx(np.mean(ecd), rel=1e-12)
    assert stats["median_nm"] == pytest.approx(np.median(ecd), rel=1e-12)
    assert stats["std_nm"] == pytest.approx(np.std(ecd), rel=1e-12)
    for key, q in (("d10_nm", 10), ("d50_nm", 50), ("d90_nm", 90)):
        assert stats[key] == pytest.approx(np.percentile(ecd, q), rel=1e-12)
    assert all(v is None for v in size_statistics(np.empty(0)).values())


def test_summary_equals_numpy_on_the_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table = _full_table(rng, 3000)
    table.loc[:9, "circularity"] = np.inf  # zero perimeter: left out of the shape medians
    truth = pd.DataFrame(
        {
            "ecd_nm": rng.lognormal(np.log(40.0), 0.3, 2900),
            "class": np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, 2900)],
        }
    )
    store = _table_store(tmp_path / "t.zarr", table)
    store.write_table("ground_truth", truth)
    summary = write_report(store)
    on_disk = json.loads((tmp_path / "t.zarr" / "report" / "summary.json").read_text())
    assert on_disk == summary

    ecd = table[ECD].to_numpy()
    p = summary["particles"]
    assert p["count"] == len(table)
    assert p["touches_edge"] == int(table["touches_edge"].sum())
    for key, value in size_statistics(ecd).items():
        assert p[key] == pytest.approx(value, rel=1e-12)
    circ = table["circularity"].to_numpy()
    finite = circ[np.isfinite(circ)]
    assert summary["shape"]["circularity"]["median"] == pytest.approx(np.median(finite))
    assert summary["shape"]["circularity"]["non_finite"] == 10
    assert summary["shape"]["aspect_ratio"]["median"] == pytest.approx(
        np.median(table["aspect_ratio"])
    )
    gt = summary["ground_truth"]
    assert gt["true_count"] == len(truth)
    assert gt["true_median_ecd_nm"] == pytest.approx(np.median(truth["ecd_nm"]))
    expected = truth["class"].value_counts(normalize=True)
    got = {r["class"]: r["fraction"] for r in gt["class_fractions"]}
    assert got == pytest.approx(expected.to_dict())
    assert summary["stages"]["particles"] == {"seconds": 1.5, "mpx_per_s": 12.0}
    # only the columns the report uses are read
    assert "fft_mean" not in summary["columns_read"]
    assert "intensity_mean" not in summary["columns_read"]
    _check_page(tmp_path / "t.zarr" / "report", summary)


def test_class_fractions_equal_classify_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    table = _full_table(rng, 2000)
    table.loc[:24, "class"] = "unclassified"
    store = _table_store(tmp_path / "c.zarr", table)
    summary = write_report(store)
    expected = class_fractions(table["class"], CLASSES, confusion=np.asarray(CONFUSION))
    got = pd.DataFrame(summary["classes"]["fractions"])
    pd.testing.assert_frame_equal(
        got[expected.columns], expected, check_dtype=False, check_exact=False, rtol=1e-12
    )
    assert summary["classes"]["adjusted"] is True
    assert summary["classes"]["unclassified"] == 25
    assert summary["classes"]["n_classified"] == 1975
    for row in summary["classes"]["fractions"]:
        sel = table.loc[table["class"] == row["class"], ECD]
        assert row["median_ecd_nm"] == pytest.approx(np.median(sel))
    assert "class_fractions" in summary["figures"]

    # without a confusion matrix: raw fractions only, still equal to the metrics
    store = _table_store(tmp_path / "raw.zarr", table, confusion=False)
    summary = write_report(store)
    classes = sorted(set(table["class"]) - {"unclassified"})
    expected = class_fractions(table["class"], classes)
    got = pd.DataFrame(summary["classes"]["fractions"])
    assert summary["classes"]["adjusted"] is False
    assert "adjusted_fraction" not in got
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)


# -- figures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("log", [False, True])
def test_histogram_counts_equal_numpy(log: bool) -> None:
    rng = np.random.default_rng(3)
    ecd = rng.lognormal(np.log(30.0), 0.4, 5000)
    ecd[:3] = [900.0, 1200.0, 1500.0]  # merged blobs far out in the tail
    codes, names = encode_classes(np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, 5000)])
    _, hist = plots.plot_size_histogram(ecd, class_codes=codes, class_names=names, log=log)
    expected, _ = np.histogram(ecd, bins=hist.edges)
    np.testing.assert_array_equal(hist.total, expected)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(
            hist.by_class[name], np.histogram(ecd[codes == i], bins=hist.edges)[0]
        )
    np.testing.assert_array_equal(sum(hist.by_class.values()), hist.total)
    assert hist.outside == ecd.size - hist.total.sum()
    if log:
        ratios = hist.edges[1:] / hist.edges[:-1]
        np.testing.assert_allclose(ratios, ratios[0])
        assert hist.edges[0] == pytest.approx(ecd.min()) and hist.outside == 0
    else:
        np.testing.assert_allclose(np.diff(hist.edges), np.diff(hist.edges)[0])
        assert hist.edges[-1] == pytest.approx(np.percentile(ecd, 99.5))
        assert hist.outside == int((ecd > hist.edges[-1]).sum()) >= 3


def test_histogram_of_one_and_of_no_particle() -> None:
    _, one = plots.plot_size_histogram(np.array([42.0]))
    assert one.total.sum() == 1 and one.edges[0] < 42.0 < one.edges[-1]
    _, one_log = plots.plot_size_histogram(np.array([42.0]), log=True)
    assert one_log.total.sum() == 1
    fig, none = plots.plot_size_histogram(np.empty(0))
    assert none.total.sum() == 0
    assert "no particles" in [t.get_text() for t in fig.axes[0].texts]


def test_shape_scatter_draws_a_deterministic_sample() -> None:
    rng = np.random.default_rng(4)
    ecd, circ = rng.lognormal(3, 0.4, 5000), rng.uniform(0.3, 1.0, 5000)
    circ[:7] = np.nan
    fig, scatter = plots.plot_shape_scatter(ecd, circ, max_points=1000, seed=3)
    assert scatter.sampled and scatter.total == 4993 and scatter.rows.size == 1000
    assert np.unique(scatter.rows).size == 1000 and not np.isin(np.arange(7), scatter.rows).any()
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_array_equal(offsets, np.column_stack([ecd, circ])[scatter.rows])
    assert "random sample of 1,000 of 4,993" in fig.axes[0].get_title()
    _, again = plots.plot_shape_scatter(ecd, circ, max_points=1000, seed=3)
    np.testing.assert_array_equal(again.rows, scatter.rows)
    _, whole = plots.plot_shape_scatter(ecd, circ, max_points=10_000)
    assert not whole.sampled and whole.rows.size == 4993


# -- overlays --------------------------------------------------------------------------------
def test_overlay_outline_colours_are_class_colours(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    labels = _labels_scene(rng)
    table = _scene_table(labels, rng)
    store = _image_store(tmp_path / "o.zarr", labels, table)
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


def test_overview_png_holds_the_overlay_pixel_for_pixel(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    labels = _labels_scene(rng, shape=(300, 420), n=25)
    table = _scene_table(labels, rng)
    store = _image_store(tmp_path / "p.zarr", labels, table, chunk=256)
    summary = write_report(store, overview_px=2048, crop_px=128)
    report = tmp_path / "p.zarr" / "report"
    png = np.round(matplotlib.image.imread(report / "overview.png") * 255).astype(np.uint8)
    h, w = labels.shape
    block = png[-h:, :w, :3]
    _, names = encode_classes(table["class"], CLASSES)
    _assert_outlines(block, labels, find_boundaries(labels, mode="inner"), table, names)
    assert summary["overview"] == {"factor": 1, "image_level": 0, "labels_level": 0}
    # crops: densest, random and largest particle (all inside the mosaic, 128 px)
    crops = {c["name"]: c for c in summary["crops"]}
    largest = table.loc[table["num_pixels"].idxmax()]
    c = crops["largest"]
    assert c["h"] == c["w"] == 128
    assert c["y0"] <= (largest["bbox-0"] + largest["bbox-2"]) / 2 <= c["y0"] + 128
    assert c["x0"] <= (largest["bbox-1"] + largest["bbox-3"]) / 2 <= c["x0"] + 128
    for name in crops:
        crop_png = matplotlib.image.imread(report / f"crop_{name}.png")
        assert crop_png.shape[0] > 128
    _check_page(report, summary)


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


# -- whole reports ---------------------------------------------------------------------------
def test_report_of_a_pipeline_run(small_grid, tmp_path: Path) -> None:
    """A real run: every figure linked, the size statistics those of the stored table."""
    config = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    store = Pipeline(config, str(tmp_path / "run.zarr")).run()
    report = tmp_path / "run.zarr" / "report"
    summary = json.loads((report / "summary.json").read_text())
    table = store.read_table("particles")
    assert summary["particles"]["count"] == len(table) > 10
    for key, value in size_statistics(table[ECD].to_numpy()).items():
        assert summary["particles"][key] == pytest.approx(value)
    assert summary["ground_truth"]["true_count"] == len(store.read_table("ground_truth"))
    assert set(summary["stages"]) >= {"tiles", "mosaic", "labels", "particles"}
    assert ("shape_scatter" in summary["figures"]) == ("circularity" in table)
    assert (summary["classes"] is None) == ("class" not in table)
    assert {"size_histogram", "size_histogram_log", "overview", "crop_densest"} <= set(
        summary["figures"]
    )
    page = (report / "index.html").read_text()
    assert store.meta["version"] in page and "2 x 2" in page  # version, pixel size (nm)
    _check_page(report, summary)


def test_zero_particle_store(tmp_path: Path) -> None:
    labels = np.zeros((300, 400), dtype=np.uint32)
    table = _scene_table(np.pad(labels[1:-1, 1:-1], 1), np.random.default_rng(0))
    assert len(table) == 0
    store = _image_store(tmp_path / "z.zarr", labels, table)
    summary = write_report(store)
    assert summary["particles"]["count"] == 0
    assert summary["particles"]["median_nm"] is None
    assert [c["name"] for c in summary["crops"]] == ["centre"]
    assert summary["classes"]["n_classified"] == 0
    report = tmp_path / "z.zarr" / "report"
    _check_page(report, summary)
    assert {"size_histogram", "shape_scatter", "class_fractions", "overview"} <= set(
        summary["figures"]
    )


def test_table_without_shape_columns(tmp_path: Path) -> None:
    """Tables made before shape measurements: no scatter, and the page says why."""
    table = _full_table(np.random.default_rng(12), 200, classes=False)
    table = table.drop(columns=["circularity", "aspect_ratio", "solidity", "eccentricity"])
    store = _table_store(tmp_path / "old.zarr", table, confusion=False)
    summary = write_report(store)
    assert "shape_scatter" not in summary["figures"] and summary["shape"] == {}
    assert summary["classes"] is None
    page = (tmp_path / "old.zarr" / "report" / "index.html").read_text()
    assert "no circularity column" in page and "no class column" in page
    _check_page(tmp_path / "old.zarr" / "report", summary)


def test_partitioned_table(tmp_path: Path) -> None:
    """A table stored as a directory of Parquet parts is read whole (needed columns only)."""
    table = _full_table(np.random.default_rng(13), 500)
    store = _table_store(tmp_path / "parts.zarr", table.iloc[:0])
    folder = Path(store.table_path("particles"))
    folder.unlink()
    folder.mkdir()
    table.iloc[:200].to_parquet(folder / "part-0.parquet", index=False)
    table.iloc[200:].to_parquet(folder / "part-1.parquet", index=False)
    summary = write_report(store)
    assert summary["particles"]["count"] == 500
    assert summary["particles"]["median_nm"] == pytest.approx(np.median(table[ECD]))
    assert sum(r["count"] for r in summary["classes"]["fractions"]) == 500


def test_one_particle_without_images(tmp_path: Path) -> None:
    table = _full_table(np.random.default_rng(9), 1, classes=False)
    store = _table_store(tmp_path / "one.zarr", table, confusion=False)
    summary = write_report(store)
    assert summary["particles"]["count"] == 1
    assert summary["particles"]["d10_nm"] == pytest.approx(table[ECD].iloc[0])
    assert summary["particles"]["std_nm"] == 0.0
    assert summary["overview"] is None
    assert any("no 'mosaic' image" in note for note in summary["notes"])
    _check_page(tmp_path / "one.zarr" / "report", summary)


def test_page_escapes_strings_from_the_data(tmp_path: Path) -> None:
    table = _full_table(np.random.default_rng(10), 50, classes=False)
    odd = "<script>alert('x')</script> & <b>"
    table["class"] = np.where(np.arange(50) % 2 == 0, odd, "plain")
    store = _table_store(tmp_path / "e.zarr", table, confusion=False)
    store.update_meta(config={"input": "<img src=x onerror=alert(1)>"})
    summary = write_report(store)
    page = (tmp_path / "e.zarr" / "report" / "index.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "<style>" in page and "http" not in page  # self-contained
    assert {r["class"] for r in summary["classes"]["fractions"]} == {odd, "plain"}
    _check_page(tmp_path / "e.zarr" / "report", summary)


def test_million_rows_are_summarised(tmp_path: Path) -> None:
    n = 1_000_000
    rng = np.random.default_rng(11)
    ecd = rng.lognormal(np.log(35.0), 0.4, n)
    table = pd.DataFrame(
        {
            "label": np.arange(1, n + 1, dtype=np.uint32),
            ECD: ecd,
            "circularity": rng.uniform(0.3, 1.05, n),
            "aspect_ratio": rng.uniform(1.0, 3.0, n),
            "bbox-0": rng.integers(0, 60_000, n),
            "bbox-1": rng.integers(0, 60_000, n),
            "class": np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, n)],
        }
    )
    table["bbox-2"] = table["bbox-0"] + 20
    table["bbox-3"] = table["bbox-1"] + 20
    store = _table_store(tmp_path / "m.zarr", table)
    summary = write_report(store, max_scatter_points=20_000)
    assert summary["particles"]["count"] == n
    for key, value in size_statistics(ecd).items():
        assert summary["particles"][key] == pytest.approx(value, rel=1e-12)
    assert sum(r["count"] for r in summary["classes"]["fractions"]) == n
    _check_page(tmp_path / "m.zarr" / "report", summary)
