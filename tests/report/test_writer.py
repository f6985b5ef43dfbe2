"""The run report: statistics against NumPy, figures' numbers, outline colours, the HTML page."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from mosaicflow import synth
from mosaicflow.config import Config
from mosaicflow.pipeline import Pipeline
from mosaicflow.report import ECD, matching, size_statistics, write_report

CLASSES = ["cube", "rod", "sphere"]

CONFUSION = [[40, 6, 4], [3, 45, 2], [5, 1, 44]]


# -- helpers -------------------------------------------------------------------------------


# -- whole reports ---------------------------------------------------------------------------
def test_report_of_a_pipeline_run(check_page, small_grid, tmp_path: Path) -> None:
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
    assert store.meta["version"] in page and "2 nm (square pixels)" in page
    # units: the threshold in grey levels of the denoised image, percentages as percent
    assert summary["threshold_unit"].startswith("grey level of the denoised image")
    assert f"{summary['threshold_grey_level']:.4g} (grey level of the denoised image" in page
    gt = summary["ground_truth"]
    assert f"{gt['median_ecd_error_percent']:.1f} %" in page
    # one to one: the small grid's particles are found and matched (frames aligned per tile)
    m = gt["matching"]
    assert m["true_count"] == gt["true_count"] and m["found_count"] == len(table)
    assert m["f1_percent"] > 90 and m["median_iou"] > 0.85
    assert abs(m["median_ecd_error_percent"]) < 5
    assert f"{m['f1_percent']:.1f} %" in page
    # the windowed driver equals the kernel on the whole label images
    found = np.asarray(store.open_level("labels/particles", 0)[...])
    _, origins = synth.read_ground_truth(small_grid.folder)
    frame = matching.TileFrame.from_tables(store.read_table("tiles"), origins, (300, 400))
    true = frame.truth_window(
        synth.truth_labels(small_grid.folder), 0, *found.shape[:1], 0, found.shape[1]
    )
    whole = matching.match_labels(found, true).summary()
    assert {k: m[k] for k in whole} == pytest.approx(whole)
    # objects the table does not list (e.g. below the minimum size) are background
    truth = store.read_table("ground_truth")
    fewer, _ = matching.truth_matching(store, truth, found_labels=table["label"].to_numpy()[1:])
    assert fewer is not None and fewer["found_count"] == len(table) - 1
    # the chunking diagnostic stays out of the page, in summary.json
    assert "touches_chunk" in summary["diagnostics"] and "touches_chunk" not in summary["particles"]
    assert "touches chunk" not in page and "touches_chunk" not in page
    # no classification: no class colours in the captions, no class legend
    assert "by class" not in page and "(one colour: the run has no classification)" in page
    check_page(report, summary)


def test_zero_particle_store(check_page, image_store, scene_table, tmp_path: Path) -> None:
    labels = np.zeros((300, 400), dtype=np.uint32)
    table = scene_table(np.pad(labels[1:-1, 1:-1], 1), np.random.default_rng(0))
    assert len(table) == 0
    store = image_store(tmp_path / "z.zarr", labels, table)
    summary = write_report(store)
    assert summary["particles"]["count"] == 0
    assert summary["particles"]["median_nm"] is None
    assert [c["name"] for c in summary["crops"]] == ["centre"]
    assert summary["classes"]["n_classified"] == 0
    report = tmp_path / "z.zarr" / "report"
    check_page(report, summary)
    assert {"size_histogram", "shape_scatter", "class_fractions", "overview"} <= set(
        summary["figures"]
    )


def test_table_without_shape_columns(check_page, full_table, table_store, tmp_path: Path) -> None:
    """Tables made before shape measurements: no scatter, and the page says why."""
    table = full_table(np.random.default_rng(12), 200, classes=False)
    table = table.drop(columns=["circularity", "aspect_ratio", "solidity", "eccentricity"])
    store = table_store(tmp_path / "old.zarr", table, confusion=False)
    summary = write_report(store)
    assert "shape_scatter" not in summary["figures"] and summary["shape"] == {}
    assert summary["classes"] is None
    page = (tmp_path / "old.zarr" / "report" / "index.html").read_text()
    assert "no circularity column" in page and "no class column" in page
    check_page(tmp_path / "old.zarr" / "report", summary)


def test_partitioned_table(full_table, table_store, tmp_path: Path) -> None:
    """A table stored as a directory of Parquet parts is read whole (needed columns only)."""
    table = full_table(np.random.default_rng(13), 500)
    store = table_store(tmp_path / "parts.zarr", table.iloc[:0])
    folder = Path(store.table_path("particles"))
    folder.unlink()
    folder.mkdir()
    table.iloc[:200].to_parquet(folder / "part-0.parquet", index=False)
    table.iloc[200:].to_parquet(folder / "part-1.parquet", index=False)
    summary = write_report(store)
    assert summary["particles"]["count"] == 500
    assert summary["particles"]["median_nm"] == pytest.approx(np.median(table[ECD]))
    assert sum(r["count"] for r in summary["classes"]["fractions"]) == 500


def test_a_failed_figure_write_fails_the_report(
    full_table, table_store, tmp_path: Path, monkeypatch
) -> None:
    """Figures are compressed and written by a background thread: an error there is raised by
    ``write_report`` once every other figure has been written, and no page or summary is."""
    from mosaicflow.report import plots

    table = full_table(np.random.default_rng(5), 300)
    store = table_store(tmp_path / "t.zarr", table)
    expected = write_report(store)["figures"]
    assert len(expected) >= 3
    encode, calls = plots.encode_png, []

    def failing(pixels):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise OSError("disk full")
        return encode(pixels)

    monkeypatch.setattr(plots, "encode_png", failing)
    with pytest.raises(OSError, match="disk full"):
        write_report(store)
    assert len(calls) == len(expected)  # the others were still written
    assert all(name.startswith("mosaicflow-report-png") for name in calls)
    report = tmp_path / "t.zarr" / "report"
    assert len(list(report.glob("*.png"))) == len(expected) - 1
    assert not (report / "summary.json").exists() and not (report / "index.html").exists()


def test_one_particle_without_images(check_page, full_table, table_store, tmp_path: Path) -> None:
    table = full_table(np.random.default_rng(9), 1, classes=False)
    store = table_store(tmp_path / "one.zarr", table, confusion=False)
    summary = write_report(store)
    assert summary["particles"]["count"] == 1
    assert summary["particles"]["d10_nm"] == pytest.approx(table[ECD].iloc[0])
    assert summary["particles"]["std_nm"] == 0.0
    assert summary["overview"] is None
    assert any("no 'mosaic' image" in note for note in summary["notes"])
    check_page(tmp_path / "one.zarr" / "report", summary)


def test_page_escapes_strings_from_the_data(
    check_page, full_table, table_store, tmp_path: Path
) -> None:
    table = full_table(np.random.default_rng(10), 50, classes=False)
    odd = "<script>alert('x')</script> & <b>"
    table["class"] = np.where(np.arange(50) % 2 == 0, odd, "plain")
    store = table_store(tmp_path / "e.zarr", table, confusion=False)
    store.update_meta(config={"input": "<img src=x onerror=alert(1)>"})
    summary = write_report(store)
    page = (tmp_path / "e.zarr" / "report" / "index.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "<style>" in page and "http" not in page  # self-contained
    assert {r["class"] for r in summary["classes"]["fractions"]} == {odd, "plain"}
    check_page(tmp_path / "e.zarr" / "report", summary)
