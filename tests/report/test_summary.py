"""The run report: statistics against NumPy, figures' numbers, outline colours, the HTML page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mosaicflow.classify.metrics import class_fractions
from mosaicflow.report import ECD, size_statistics, write_report

CLASSES = ["cube", "rod", "sphere"]

CONFUSION = [[40, 6, 4], [3, 45, 2], [5, 1, 44]]


# -- helpers -------------------------------------------------------------------------------


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


def test_summary_equals_numpy_on_the_table(
    check_page, full_table, table_store, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    table = full_table(rng, 3000)
    table.loc[:9, "circularity"] = np.inf  # zero perimeter: left out of the shape medians
    truth = pd.DataFrame(
        {
            "ecd_nm": rng.lognormal(np.log(40.0), 0.3, 2900),
            "class": np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, 2900)],
        }
    )
    store = table_store(tmp_path / "t.zarr", table)
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
    assert gt["count_error_percent"] == pytest.approx(100 * (3000 - 2900) / 2900)
    true_median = np.median(truth["ecd_nm"])
    assert gt["median_ecd_error_percent"] == pytest.approx(
        100 * (np.median(ecd) - true_median) / true_median
    )
    # no input folder recorded (no truth label mosaic): no one-to-one figures, and a note
    assert gt["matching"] is None
    assert any("one-to-one" in note for note in summary["notes"])
    page = (tmp_path / "t.zarr" / "report" / "index.html").read_text()
    assert f"{gt['count_error_percent']:.1f} %" in page  # 3.4 %, not 0.03448
    # class fractions as percentages with their intervals
    first = summary["classes"]["fractions"][0]
    assert f"{100 * first['fraction']:.1f} %" in page
    assert f"{100 * first['ci_low']:.1f} – {100 * first['ci_high']:.1f} %" in page
    assert gt["true_median_ecd_nm"] == pytest.approx(np.median(truth["ecd_nm"]))
    expected = truth["class"].value_counts(normalize=True)
    got = {r["class"]: r["fraction"] for r in gt["class_fractions"]}
    assert got == pytest.approx(expected.to_dict())
    assert summary["stages"]["particles"] == {"seconds": 1.5, "mpx_per_s": 12.0}
    # only the columns the report uses are read
    assert "fft_mean" not in summary["columns_read"]
    assert "intensity_mean" not in summary["columns_read"]
    check_page(tmp_path / "t.zarr" / "report", summary)


def test_class_fractions_equal_classify_metrics(full_table, table_store, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    table = full_table(rng, 2000)
    table.loc[:24, "class"] = "unclassified"
    store = table_store(tmp_path / "c.zarr", table)
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
    store = table_store(tmp_path / "raw.zarr", table, confusion=False)
    summary = write_report(store)
    classes = sorted(set(table["class"]) - {"unclassified"})
    expected = class_fractions(table["class"], classes)
    got = pd.DataFrame(summary["classes"]["fractions"])
    assert summary["classes"]["adjusted"] is False
    assert "adjusted_fraction" not in got
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)


def test_million_rows_are_summarised(check_page, table_store, tmp_path: Path) -> None:
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
    store = table_store(tmp_path / "m.zarr", table)
    summary = write_report(store, max_scatter_points=20_000)
    assert summary["particles"]["count"] == n
    for key, value in size_statistics(ecd).items():
        assert summary["particles"][key] == pytest.approx(value, rel=1e-12)
    assert sum(r["count"] for r in summary["classes"]["fractions"]) == n
    check_page(tmp_path / "m.zarr" / "report", summary)


def test_stitching_section_only_with_registration(full_table, table_store, tmp_path: Path) -> None:
    """No registration columns in the tiles table: no stitching figures, no section."""
    from mosaicflow.report.stitching import REGISTRATION_COLUMNS

    tiles = pd.DataFrame({"row": [1, 1], "col": [1, 2], "y_px": [0.0, 3.0], "x_px": [0.0, 1260.0]})
    store = table_store(tmp_path / "s.zarr", full_table(np.random.default_rng(3), 20))
    store.write_table("tiles", tiles)
    summary = write_report(store)
    page = (tmp_path / "s.zarr" / "report" / "index.html").read_text()
    assert summary["stitching"] is None and "id='stitching'" not in page

    moved = tiles.assign(
        **{REGISTRATION_COLUMNS[0]: [0.0, 6.0], REGISTRATION_COLUMNS[1]: [0.0, 1264.0]}
    )
    store.write_table("tiles", moved)
    summary = write_report(store)
    page = (tmp_path / "s.zarr" / "report" / "index.html").read_text()
    # corrections (0, 0) and (3, 4) px, less their median (1.5, 2): 2.5 px each
    assert summary["stitching"]["median_correction_px"] == pytest.approx(2.5)
    assert summary["stitching"]["max_correction_px"] == pytest.approx(2.5)
    assert "id='stitching'" in page
    assert not (tmp_path / "s.zarr" / "report" / "tile_residuals.png").exists()  # no tile shape

    # with the tile set's shape, the pairs and the mosaic stage's record: the residual map, the
    # rejected pairs by reason and the equalisation's ranges
    store.update_meta(tileset={"tile_shape": [900, 1400]})
    store.write_table("tiles", moved.assign(residual_px=[0.1, float("nan")]))
    pairs = pd.DataFrame(
        {
            "i": [0, 0, 0],
            "j": [1, 1, 1],
            "kind": ["neighbour", "neighbour", "null"],
            "kept": [True, False, False],
            "reason": ["", "quality", ""],
            "quality": [0.6, 0.1, 0.05],
            "quality_nominal": [0.2, 0.0, 0.0],
        }
    )
    store.write_table("pairs", pairs)
    store.set_stage("mosaic", "done", blend="linear", gain_range=[0.9, 1.1], offset_range=[-3, 4])
    summary = write_report(store)
    page = (tmp_path / "s.zarr" / "report" / "index.html").read_text()
    assert (tmp_path / "s.zarr" / "report" / "tile_residuals.png").stat().st_size > 1000
    assert summary["stitching"]["rejected_by_reason"] == {"quality": 1}
    assert summary["stitching"]["gain_range"] == [0.9, 1.1]
    assert "1 quality" in page and "tile gains (equalisation)" in page and "0.9 to 1.1" in page
    # the kept pair's overlap NCC before and after registration
    assert summary["stitching"]["overlap_ncc_nominal"] == pytest.approx(0.2)
    assert summary["stitching"]["overlap_ncc_registered"] == pytest.approx(0.6)
    assert "0.200 -&gt; 0.600" in page or "0.200 -> 0.600" in page


def test_tile_residual_figure_draws_every_tile_and_pair() -> None:
    """One box per tile, coloured by its residual (grey without one); one segment between tile
    centres per neighbour pair, kept ones solid and rejected ones dashed."""
    from matplotlib.collections import LineCollection, PatchCollection

    from mosaicflow.report.stitching import plot_tile_residuals

    tiles = pd.DataFrame(
        {
            "y_px": [0.0, 0.0, 90.0, 90.0],
            "x_px": [0.0, 140.0, 0.0, 140.0],
            "residual_px": [0.1, np.nan, 0.3, 0.2],
        }
    )
    pairs = pd.DataFrame(
        {
            "i": [0, 0, 1, 2, 0],
            "j": [1, 2, 3, 3, 3],
            "kind": ["neighbour"] * 4 + ["diagonal"],
            "kept": [True, False, True, True, True],
        }
    )
    fig = plot_tile_residuals(tiles, pairs, (100, 150))
    ax = fig.axes[0]
    (patches,) = [c for c in ax.collections if isinstance(c, PatchCollection)]
    assert len(patches.get_paths()) == 4
    faces = patches.get_facecolors()
    assert tuple(faces[1][:3]) == (0.85, 0.85, 0.85) and tuple(faces[0][:3]) != (0.85, 0.85, 0.85)
    solid, dashed = [c for c in ax.collections if isinstance(c, LineCollection)]
    centre = {0: (75, 50), 1: (215, 50), 2: (75, 140), 3: (215, 140)}
    expect = [[centre[i], centre[j]] for i, j in ((0, 1), (1, 3), (2, 3))]
    np.testing.assert_allclose(np.array(solid.get_segments()), expect)
    np.testing.assert_allclose(np.array(dashed.get_segments()), [[centre[0], centre[2]]])
    assert solid.get_linestyle()[0][1] is None and dashed.get_linestyle()[0][1] is not None
