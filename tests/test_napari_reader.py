"""The napari reader: a real run store opened as layers, headless (no Qt, no window)."""

from __future__ import annotations

import importlib
import importlib.util
import tomllib
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from mosaicflow.config import Config
from mosaicflow.io.store import RunStore
from mosaicflow.napari_reader import (
    FEATURE_COLUMNS,
    contrast_limits,
    napari_get_reader,
    read_run_store,
)
from mosaicflow.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("mosaic", "denoised", "probability", "labels/particles")


#: napari and npe2 (pydantic models) warn about pydantic 1 idioms while importing and building
#: layers; that says nothing about this plugin.
PYDANTIC_V1_IDIOMS = pytest.mark.filterwarnings(
    "ignore::pydantic.warnings.PydanticDeprecatedSince20"
    if importlib.util.find_spec("pydantic")
    else "default"
)


@pytest.fixture(scope="module")
def run(small_grid, tmp_path_factory) -> RunStore:
    out = tmp_path_factory.mktemp("napari") / "run.zarr"
    config = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    Pipeline(config, str(out)).run()  # every stage, as `mosaicflow run` writes a store
    return RunStore(str(out), mode="r")


def _by_name(layers):
    return {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in layers}


def test_reader_only_for_run_stores(run, tmp_path):
    assert napari_get_reader(run.url) is read_run_store
    assert napari_get_reader([run.url]) is read_run_store
    (tmp_path / "image.tif").write_bytes(b"not a store")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    for path in ("image.tif", "other.zarr", "missing.zarr", "."):
        assert napari_get_reader(str(tmp_path / path)) is None, path
    assert napari_get_reader([run.url, str(tmp_path / "other.zarr")]) is None
    assert napari_get_reader([]) is None


def test_layers_scales_levels_and_features(run):
    reader = napari_get_reader(run.url)
    assert reader is not None
    layers = reader(run.url)
    assert [(k["name"], kind) for _, k, kind in layers] == [
        ("mosaic", "image"),
        ("denoised", "image"),
        ("probability", "image"),
        ("particles", "labels"),
    ]
    named = _by_name(layers)
    pixel = run.read_image("mosaic").attrs["pixel_size_nm"]
    for image in IMAGES:
        data, kwargs, _ = named[image.split("/")[-1]]
        levels = run.image_levels(image)
        assert len(levels) > 1 and kwargs["multiscale"] is True
        assert [a.shape for a in data] == [run.read_image(image, lv).shape for lv in levels]
        assert all(isinstance(a, da.Array) for a in data)  # lazy: nothing read yet
        scale, translate = run.image_transform(image, 0)
        assert kwargs["scale"] == tuple(scale) == tuple(pixel)  # nm per pixel
        assert kwargs["translate"] == tuple(translate)  # nm, level 0's pixel centre
        np.testing.assert_array_equal(data[-1].compute(), run.read_image(image, levels[-1]).values)
    assert named["mosaic"][1].get("visible", True)
    assert not named["denoised"][1]["visible"] and not named["probability"][1]["visible"]
    assert named["probability"][1]["contrast_limits"] == (0, 255)
    # From level 1 (the first coarse level under 2^20 px), never level 0.
    level1 = run.read_image("mosaic", 1).values
    limits = tuple(float(v) for v in np.percentile(level1, (0.5, 99.5)))
    assert named["mosaic"][1]["contrast_limits"] == limits
    assert limits[0] < limits[1]

    features = named["particles"][1]["features"]
    table = run.read_table("particles")
    shown = [c for c in FEATURE_COLUMNS if c in table.columns]
    assert "equivalent_diameter_area" in shown and "area" in shown
    assert list(features.columns) == ["index", *shown]
    expected = table[["label", *shown]].rename(columns={"label": "index"})
    pd.testing.assert_frame_equal(features, expected)
    assert features["index"].max() == int(named["particles"][0][0].max().compute())


def test_contrast_limits_read_a_coarse_level_only():
    level0 = da.full((4096, 4096), 7, dtype=np.uint16)
    level0 = level0.map_blocks(
        lambda b: pytest.fail("level 0 was read"), meta=np.array((), dtype=np.uint16)
    )
    coarse = np.arange(2048 * 2048, dtype=np.float32).reshape(2048, 2048) % 1000
    coarse[0, :10] = np.nan
    levels = [level0, da.from_array(coarse), da.from_array(coarse[::2, ::2])]
    # Level 1 has more than 2^20 pixels, level 2 is the first small enough.
    assert contrast_limits(levels) == tuple(
        float(v) for v in np.nanpercentile(coarse[::2, ::2], (0.5, 99.5))
    )
    assert contrast_limits([da.full((5, 5), 3.0)]) == (3.0, 4.0)  # one level, constant
    assert contrast_limits([da.full((5, 5), np.nan)]) == (0.0, 1.0)


def test_manifest_is_packaged_and_names_the_reader():
    manifest = yaml.safe_load((files("mosaicflow") / "napari.yaml").read_text())
    assert manifest["name"] == "mosaicflow"
    (reader,) = manifest["contributions"]["readers"]
    assert reader["command"] == "mosaicflow.get_reader"
    assert reader["accepts_directories"] is True and "*.zarr" in reader["filename_patterns"]
    (command,) = [c for c in manifest["contributions"]["commands"] if c["id"] == reader["command"]]
    module, func = command["python_name"].split(":")
    assert getattr(importlib.import_module(module), func) is napari_get_reader

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "napari.yaml" in project["tool"]["setuptools"]["package-data"]["mosaicflow"]
    entry = project["project"]["entry-points"]["napari.manifest"]["mosaicflow"]
    assert entry == "mosaicflow:napari.yaml"
    # Where the installed metadata is current, napari finds the same manifest.
    for ep in entry_points(group="napari.manifest", name="mosaicflow"):
        assert ep.value == entry


@PYDANTIC_V1_IDIOMS
def test_manifest_validates_with_npe2():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(str(files("mosaicflow") / "napari.yaml"))
    assert manifest.name == "mosaicflow"
    (reader,) = manifest.contributions.readers
    assert reader.command == "mosaicflow.get_reader"
    assert reader.accepts_directories and reader.filename_patterns == ["*.zarr", "*"]
    (command,) = manifest.contributions.commands
    assert command.id == reader.command
    assert command.python_name == "mosaicflow.napari_reader:napari_get_reader"
    manifest.validate_imports()  # every python_name imports


@PYDANTIC_V1_IDIOMS
def test_napari_viewer_model_shows_particle_size_on_hover(run):
    napari = pytest.importorskip("napari")
    from napari.components import ViewerModel

    viewer = ViewerModel()
    for data, kwargs, kind in read_run_store(run.url):
        viewer._add_layer_from_data(data, kwargs, kind)
    assert [layer.name for layer in viewer.layers] == [
        "mosaic",
        "denoised",
        "probability",
        "particles",
    ]
    scale, translate = run.image_transform("mosaic", 0)
    for layer in viewer.layers:
        np.testing.assert_array_equal(layer.scale, scale)
        np.testing.assert_array_equal(layer.translate, translate)
        assert layer.multiscale
        if tuple(int(p) for p in napari.__version__.split(".")[:2]) >= (0, 6):
            assert [str(u) for u in layer.units] == ["nanometer", "nanometer"]
    labels = viewer.layers["particles"]
    table = run.read_table("particles")
    pd.testing.assert_frame_equal(
        labels.features[["index", "equivalent_diameter_area"]],
        table[["label", "equivalent_diameter_area"]].rename(columns={"label": "index"}),
    )

    # The largest particle whose centroid lies inside it: hovering there names it and its size.
    level0 = run.read_image("labels/particles").values
    for _, row in table.sort_values("area", ascending=False).iterrows():
        centre = (row["centroid-0"], row["centroid-1"])  # nm, the mosaic frame
        pixel = [round((c - t) / s) for c, t, s in zip(centre, translate, scale, strict=True)]
        if level0[pixel[0], pixel[1]] == row["label"]:
            break
    # Headless, napari shows the coarsest level; hover at full resolution (napari >= 0.7.1).
    labels.locked_data_level = 0
    assert labels.get_value(centre, world=True) == (0, row["label"])
    status = labels.get_status(centre, world=True)["value"]
    assert status.startswith(f"0, {row['label']};")
    assert f"equivalent_diameter_area: {row['equivalent_diameter_area']:.3g}" in status
    assert f"circularity: {row['circularity']:.3g}" in status


@PYDANTIC_V1_IDIOMS
def test_napari_opens_the_store_through_the_installed_plugin(run):
    pytest.importorskip("napari")
    npe2 = pytest.importorskip("npe2")
    from napari.components import ViewerModel

    if not list(entry_points(group="napari.manifest", name="mosaicflow")):
        pytest.skip("mosaicflow's installed metadata predates the napari entry point: reinstall")
    npe2.PluginManager.instance().discover()  # what napari does when its window starts
    viewer = ViewerModel()
    layers = viewer.open(run.url, plugin="mosaicflow")
    assert [(layer.name, type(layer).__name__) for layer in layers] == [
        ("mosaic", "Image"),
        ("denoised", "Image"),
        ("probability", "Image"),
        ("particles", "Labels"),
    ]
    assert {layer.source.reader_plugin for layer in layers} == {"mosaicflow"}
    assert "equivalent_diameter_area" in viewer.layers["particles"].features
