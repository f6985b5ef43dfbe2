"""The run report: statistics against NumPy, figures' numbers, outline colours, the HTML page."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from mosaicflow.report import plots
from mosaicflow.report.summary import encode_classes

CLASSES = ["cube", "rod", "sphere"]


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


# -- PNG encoding ---------------------------------------------------------------------------
def _savefig_rgba(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGBA"))


def test_png_bytes_equals_matplotlib_savefig_with_pasted_and_composited_images() -> None:
    """Pasted figure images (``gid=PASTED``) land where Agg composites them, clipped at the
    figure's edge; other figure images, text and axes are drawn by Agg; an opaque figure is
    written as RGB with the same pixels as matplotlib's own RGBA PNG."""
    rng = np.random.default_rng(3)
    fig = Figure(figsize=(3.2, 2.4), dpi=100, facecolor="white")
    ax = fig.add_axes((0.55, 0.55, 0.4, 0.4))
    ax.plot([0, 1], [1, 0])
    inside = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    cut = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)  # spills over the right edge
    plain = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    fig.text(0.02, 0.95, "title", va="top")
    expected_fig = Figure(figsize=(3.2, 2.4), dpi=100, facecolor="white")
    for target, gid in ((fig, plots.PASTED), (expected_fig, None)):
        target.figimage(inside, xo=5, yo=10, origin="upper", gid=gid)
        target.figimage(cut, xo=300, yo=150, origin="upper", gid=gid)
        target.figimage(plain, xo=120, yo=20, origin="upper")
    expected_fig.add_axes((0.55, 0.55, 0.4, 0.4)).plot([0, 1], [1, 0])
    expected_fig.text(0.02, 0.95, "title", va="top")
    expected = _savefig_rgba(expected_fig)
    got = np.asarray(Image.open(io.BytesIO(plots.png_bytes(fig))))
    assert got.shape == (*expected.shape[:2], 3)
    np.testing.assert_array_equal(got, expected[..., :3])
    assert (expected[..., 3] == 255).all()
    # the pasted pixels are the arrays themselves (top-left of ``inside`` at row 240-10-60)
    np.testing.assert_array_equal(got[170:230, 5:95], inside)
    np.testing.assert_array_equal(got[40:90, 300:320], cut[:, :20])
    assert all(im.get_visible() for im in fig.images)  # hidden only while drawing


def test_png_bytes_keeps_transparency_and_refuses_images_it_cannot_paste() -> None:
    fig = Figure(figsize=(1, 1), dpi=50)
    fig.patch.set_alpha(0.0)
    png = np.asarray(Image.open(io.BytesIO(plots.png_bytes(fig))))
    assert png.shape == (50, 50, 4) and (png[..., 3] == 0).all()
    bad = Figure(figsize=(1, 1), dpi=50)
    bad.figimage(np.zeros((5, 5)), origin="upper", gid=plots.PASTED)
    with pytest.raises(ValueError, match="8-bit RGB"):
        plots.png_bytes(bad)
