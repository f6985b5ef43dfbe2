"""Shared helpers of the report tests: synthetic particle tables and run stores, the page check."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from skimage.measure import regionprops_table

from mosaicflow.io.store import RunStore
from mosaicflow.report import ECD

CLASSES = ["cube", "rod", "sphere"]

CONFUSION = [[40, 6, 4], [3, 45, 2], [5, 1, 44]]


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
    # zarr.json: the store may mark report/ as a Zarr group of its own (not a report file)
    written = {p.name for p in report.iterdir()} - {"index.html", "zarr.json"}
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


@pytest.fixture
def check_page():
    """``_check_page`` for the tests."""
    return _check_page


@pytest.fixture
def full_table():
    """``_full_table`` for the tests."""
    return _full_table


@pytest.fixture
def image_store():
    """``_image_store`` for the tests."""
    return _image_store


@pytest.fixture
def scene_table():
    """``_scene_table`` for the tests."""
    return _scene_table


@pytest.fixture
def table_store():
    """``_table_store`` for the tests."""
    return _table_store
