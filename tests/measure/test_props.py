"""The particle table against scikit-image's ``regionprops_table`` on the whole image."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi
import skimage.measure
import xarray as xr

from mosaicflow.errors import ConfigError
from mosaicflow.measure import regionprops_table
from mosaicflow.measure.columns import PIXEL_POSITION_COLUMNS, SKIMAGE_PROPERTIES
from mosaicflow.measure.features import fourier_features

# Whole image, 4x6 chunks, uneven 7x7 chunks, thin strips: all with >= 3x3 chunks except the
# first, and all smaller than the giant particle of the ``field`` fixture (conftest.py).
CHUNKINGS = [(1000, 1000), (64, 64), (37, 53), (23, 150)]

SKIMAGE_PROPS = (
    "label",
    "num_pixels",
    "area",
    "equivalent_diameter_area",
    "centroid",
    "bbox",
    "perimeter",
    "feret_diameter_max",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "eccentricity",
    "solidity",
    "area_convex",
    "intensity_mean",
    "intensity_std",
    "intensity_min",
    "intensity_max",
)
ACCEPTANCE_PROPS = [
    "label",
    "area",
    "centroid",
    "bbox",
    "perimeter",
    "eccentricity",
    "solidity",
    "intensity_mean",
]


def _assert_table_equal(table: pd.DataFrame, expected: dict[str, np.ndarray]) -> None:
    table = table.sort_values("label", ignore_index=True)
    assert list(table["label"]) == list(expected["label"])
    for column, values in expected.items():
        values = np.asarray(values)
        if np.issubdtype(values.dtype, np.integer):
            np.testing.assert_array_equal(table[column], values, err_msg=column)
        else:
            # <= 1e-9 relative; values that are zero up to rounding get the column's scale.
            scale = np.nanmax(np.abs(values)) if values.size else 1.0
            np.testing.assert_allclose(
                table[column], values, rtol=1e-9, atol=1e-12 * scale, err_msg=column
            )


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_table_equals_skimage_on_the_whole_image(field, chunks):
    image, labels = field
    table = regionprops_table(
        da.from_array(labels, chunks=chunks), da.from_array(image, chunks=chunks), spacing=2.0
    ).compute(scheduler="sync")
    expected = skimage.measure.regionprops_table(
        labels, image, properties=SKIMAGE_PROPS, spacing=(2.0, 2.0)
    )
    _assert_table_equal(table, expected)
    # Hu invariants are scale-free; scikit-image computes them for unit spacing only.
    hu = skimage.measure.regionprops_table(labels, properties=("label", "moments_hu"))
    _assert_table_equal(table, hu)


@pytest.mark.parametrize("band_px", [1, 3000])
def test_perimeters_band_by_band_equal_skimage(field, band_px, monkeypatch):
    """The perimeter kernel works a few rows at a time: bands of one row (and of a few) give
    scikit-image's perimeters over the whole image, particles across band borders included."""
    from mosaicflow.measure import _kernel

    monkeypatch.setattr(_kernel, "PERIMETER_BAND_PX", band_px)
    _, labels = field
    assert 3000 // (labels.shape[1] + 2) - 6 < labels.shape[0] // 4  # several bands
    table = regionprops_table(labels, properties=("label", "perimeter"))
    expected = skimage.measure.regionprops_table(labels, properties=("label", "perimeter"))
    _assert_table_equal(table, expected)


@pytest.mark.parametrize("spacing", [None, 2.0])
@pytest.mark.parametrize("chunks", CHUNKINGS[1:])
def test_skimage_property_names_give_skimage_columns(field, chunks, spacing):
    """scikit-image's names in, scikit-image's columns out: same names, same order, same values
    (``spacing`` scales lengths, areas and centroids as scikit-image's ``spacing`` does)."""
    image, labels = field
    table = regionprops_table(
        da.from_array(labels, chunks=chunks),
        da.from_array(image, chunks=chunks),
        properties=ACCEPTANCE_PROPS,
        spacing=spacing,
    ).compute(scheduler="sync")
    kwargs = {} if spacing is None else {"spacing": (spacing, spacing)}
    expected = skimage.measure.regionprops_table(
        labels, image, properties=ACCEPTANCE_PROPS, **kwargs
    )
    assert list(table.columns) == list(expected)
    _assert_table_equal(table, expected)


def test_every_skimage_property_expands_as_skimage_does(field):
    image, labels = field
    names = list(SKIMAGE_PROPERTIES)
    table = regionprops_table(labels, image, names)  # properties is the third positional
    expected = skimage.measure.regionprops_table(labels, image, properties=names)
    assert list(table.columns) == list(expected)
    for name, columns in SKIMAGE_PROPERTIES.items():
        single = skimage.measure.regionprops_table(labels[:60, :60], image[:60, :60], [name])
        assert tuple(single) == columns
    _assert_table_equal(table, expected)


def test_names_groups_and_own_columns_mix_in_the_order_named(field):
    image, labels = field
    names = ["circularity", "label", "centroid", "flags", "fft_com", "area", "intensity_max_raw"]
    names += ["centroid-1", "label"]  # repeated names give one column, where first named
    table = regionprops_table(
        da.from_array(labels, chunks=64),
        da.from_array(image, chunks=64),
        names,
        extra_intensity={"raw": da.from_array(image * 2.0, chunks=64)},
    ).compute(scheduler="sync")
    assert list(table.columns) == [
        "circularity",
        "label",
        "centroid-0",
        "centroid-1",
        "touches_edge",
        "touches_uncovered",
        "touches_chunk",
        "fft_com",
        "area",
        "intensity_max_raw",
    ]
    full = regionprops_table(labels, image, extra_intensity={"raw": image * 2.0})
    pd.testing.assert_frame_equal(
        table.sort_values("label", ignore_index=True).drop(columns="touches_chunk"),
        full[[c for c in table.columns if c != "touches_chunk"]],
        rtol=1e-12,
    )


def test_a_table_without_label(field):
    image, labels = field
    table = regionprops_table(labels, image, ["area", "intensity_mean"])
    assert list(table.columns) == ["area", "intensity_mean"]
    expected = skimage.measure.regionprops_table(labels, image, ["area", "intensity_mean"])
    np.testing.assert_array_equal(table["area"], expected["area"])
    lazy = regionprops_table(da.from_array(labels, chunks=64), None, ["bbox"])
    assert list(lazy.columns) == ["bbox-0", "bbox-1", "bbox-2", "bbox-3"]
    assert len(lazy.compute()) == len(table)


@pytest.mark.parametrize(
    ("properties", "match"),
    [
        (["area", "colour"], r"unknown or uncomputable properties \['colour'\].*'centroid'"),
        (["euler_number"], "scikit-image properties.*'moments_hu'"),  # skimage's, not ours
        (["area", "touches_edge_raw"], "own columns.*'circularity'"),
        ([], "empty"),
    ],
)
def test_unknown_property_names_list_the_valid_ones(field, properties, match):
    with pytest.raises(ConfigError, match=match):
        regionprops_table(field[1], field[0], properties)


def test_intensity_columns_need_an_intensity_image(field):
    for properties in (["label", "intensity_mean"], ["area", "fft_mean"], ["label", "intensity"]):
        with pytest.raises(ConfigError, match="intensity_image"):
            regionprops_table(field[1], properties=properties)


@pytest.mark.parametrize("halo", [1, 6])
def test_particles_larger_than_the_halo_are_assembled_exactly(field, halo):
    image, labels = field
    table = regionprops_table(
        da.from_array(labels, chunks=(37, 53)), da.from_array(image, chunks=(37, 53)), halo=halo
    )
    giants = table.partitions[table.npartitions - 1].compute(scheduler="sync")
    sizes = np.bincount(labels.ravel())
    assert len(giants) > 0 and sizes[giants["label"].to_numpy()].max() == sizes[1:].max()
    expected = skimage.measure.regionprops_table(labels, image, properties=SKIMAGE_PROPS)
    _assert_table_equal(table.compute(scheduler="sync"), expected)


@pytest.mark.parametrize(("chunks", "halo"), [((64, 64), 64), ((37, 53), 8)])
def test_stored_images_are_read_with_their_halo_by_each_measuring_task(
    field, tmp_path, chunks, halo
):
    """Images read from Zarr take the direct path (each measuring task reads its chunk and halo
    in one read, no edge tasks); the table still equals scikit-image's, giants included."""
    import zarr

    from mosaicflow._shared.halo import store_source

    image, labels = field
    stored = {}
    for name, data in (("labels", labels), ("image", image)):
        target = zarr.create_array(
            str(tmp_path / f"{name}.zarr"), shape=data.shape, chunks=chunks, dtype=data.dtype
        )
        target[...] = data
        stored[name] = da.from_zarr(str(tmp_path / f"{name}.zarr"))
    assert store_source(stored["labels"]) is not None
    assert store_source(da.from_array(labels, chunks=chunks)) is None
    table = regionprops_table(stored["labels"], stored["image"], halo=halo)
    graph = dict(table.__dask_graph__())
    assert not any("props-edges" in str(key) for key in graph)
    expected = skimage.measure.regionprops_table(labels, image, properties=SKIMAGE_PROPS)
    _assert_table_equal(table.compute(scheduler="sync"), expected)


def test_numpy_input_gives_the_same_pandas_table(field):
    image, labels = field
    table = regionprops_table(labels, image)
    assert isinstance(table, pd.DataFrame)
    lazy = regionprops_table(da.from_array(labels, chunks=64), da.from_array(image, chunks=64))
    pd.testing.assert_frame_equal(
        table.drop(columns="touches_chunk"),
        lazy.compute().sort_values("label", ignore_index=True).drop(columns="touches_chunk"),
        rtol=1e-12,
    )


def _framed(labels, chunks=64):
    y = 1000.0 + np.arange(labels.shape[0]) * 2.5
    x = -40.0 + np.arange(labels.shape[1]) * 2.5
    data = labels if chunks is None else da.from_array(labels, chunks=chunks)
    return xr.DataArray(
        data, dims=("y", "x"), coords={"y": y, "x": x}, attrs={"pixel_size_nm": [2.5, 2.5]}
    )


@pytest.mark.parametrize("chunks", [(37, 53), None])
def test_dataarray_gives_nm_in_the_image_frame(field, chunks):
    """Lengths, areas, centroids and bounding boxes in nm in the DataArray's coordinates, the
    pixel positions next to them, equal to scikit-image's pixel columns (giants included: a
    6 px halo sends the large particles through the assembly task)."""
    labels = field[1]
    arr = _framed(labels, chunks)
    table = regionprops_table(arr, halo=6)
    if chunks is not None:
        assert len(table.partitions[table.npartitions - 1].compute()) > 0  # giants
        table = table.compute()
    table = table.sort_values("label", ignore_index=True)
    px = skimage.measure.regionprops_table(
        labels, properties=("label", "centroid", "bbox", "perimeter", "area")
    )
    np.testing.assert_allclose(table["area"], px["area"] * 2.5**2)
    np.testing.assert_allclose(table["perimeter"], px["perimeter"] * 2.5)
    np.testing.assert_allclose(table["centroid-0"], 1000.0 + px["centroid-0"] * 2.5)
    np.testing.assert_allclose(table["centroid-1"], -40.0 + px["centroid-1"] * 2.5)
    for i in range(4):
        np.testing.assert_array_equal(table[f"bbox_px-{i}"], px[f"bbox-{i}"])
        assert table[f"bbox_px-{i}"].dtype == np.int64 and table[f"bbox-{i}"].dtype == np.float64
    for i in range(2):
        np.testing.assert_allclose(table[f"centroid_px-{i}"], px[f"centroid-{i}"], rtol=1e-12)
    # Oracle: the coordinates (pixel centres) of the first and last pixel, half a pixel out.
    y, x = arr["y"].values, arr["x"].values
    np.testing.assert_allclose(table["bbox-0"], y[px["bbox-0"]] - 1.25, rtol=1e-12)
    np.testing.assert_allclose(table["bbox-1"], x[px["bbox-1"]] - 1.25, rtol=1e-12)
    np.testing.assert_allclose(table["bbox-2"], y[px["bbox-2"] - 1] + 1.25, rtol=1e-12)
    np.testing.assert_allclose(table["bbox-3"], x[px["bbox-3"] - 1] + 1.25, rtol=1e-12)
    assert (table["bbox-0"] < table["centroid-0"]).all()
    assert (table["centroid-0"] < table["bbox-2"]).all()
    np.testing.assert_allclose(
        table["bbox-2"] - table["bbox-0"], (px["bbox-2"] - px["bbox-0"]) * 2.5, rtol=1e-12
    )
    columns = list(table.columns)
    assert columns[columns.index("bbox-3") + 1 :][:6] == list(PIXEL_POSITION_COLUMNS)


def test_pixel_positions_by_name_for_dataarrays_only(field):
    labels = field[1]
    table = regionprops_table(_framed(labels, None), properties=["label", "bbox_px", "centroid"])
    assert list(table.columns) == [
        "label",
        *(f"bbox_px-{i}" for i in range(4)),
        "centroid-0",
        "centroid-1",
    ]
    basic = regionprops_table(_framed(labels, None), properties=["basic", "area"])
    assert "centroid_px-1" in basic and "bbox_px-3" in basic
    for name in ("bbox_px", "centroid_px-0"):
        with pytest.raises(ConfigError, match="DataArray label image only"):
            regionprops_table(labels, properties=["label", name])
    assert not set(PIXEL_POSITION_COLUMNS) & set(regionprops_table(labels).columns)


def test_derived_shape_columns_follow_their_definitions(field):
    table = regionprops_table(field[1])
    a, p = table["area"], table["perimeter"]
    np.testing.assert_allclose(table["circularity"], np.minimum(1.0, 4 * np.pi * a / p**2))
    major, minor = table["axis_major_length"], table["axis_minor_length"]
    np.testing.assert_allclose(table["aspect_ratio"], major / minor)
    np.testing.assert_allclose(table["roundness"], 4 * a / (np.pi * major**2))
    np.testing.assert_allclose(table["boundary_area_ratio"], p / a)
    assert (table["feret_diameter_min"] <= table["feret_diameter_max"] + 1e-9).all()


def test_extra_intensities_flags_and_coverage(field):
    image, labels = field
    raw = image * 3.0 + 7.0
    coverage = np.ones(labels.shape, dtype=bool)
    coverage[:, 300:] = False  # a missing tile on the right
    coverage[150:, :40] = False
    table = regionprops_table(
        da.from_array(labels, chunks=(64, 64)),
        da.from_array(image, chunks=(64, 64)),
        extra_intensity={"raw": da.from_array(raw, chunks=(64, 64))},
        coverage=da.from_array(coverage, chunks=(64, 64)),
    ).compute()
    table = table.sort_values("label", ignore_index=True)
    ref = skimage.measure.regionprops_table(
        labels, raw, properties=("intensity_mean", "intensity_std", "intensity_max")
    )
    for stat in ("mean", "std", "max"):
        np.testing.assert_allclose(table[f"intensity_{stat}_raw"], ref[f"intensity_{stat}"])
    near = ndi.binary_dilation(~coverage, structure=np.ones((3, 3)))
    touched = np.unique(labels[near & (labels > 0)])
    np.testing.assert_array_equal(table["touches_uncovered"], np.isin(table["label"], touched))
    assert 0 < table["touches_uncovered"].sum() < len(table)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    np.testing.assert_array_equal(table["touches_edge"], np.isin(table["label"], edge[edge > 0]))
    spans = (table["bbox-0"] // 64 != (table["bbox-2"] - 1) // 64) | (
        table["bbox-1"] // 64 != (table["bbox-3"] - 1) // 64
    )
    np.testing.assert_array_equal(table["touches_chunk"], spans)


def test_property_groups_select_columns(field):
    """Groups alone keep their rule: table order, with basic, the flags and the extra
    intensities always in, intensity and features only with an intensity image."""
    image, labels = field
    table = regionprops_table(labels, properties=("basic",))
    assert "perimeter" not in table and "area" in table and "touches_edge" in table
    table = regionprops_table(labels, image, ("features", "basic"), extra_intensity={"raw": image})
    assert list(table.columns) == [
        "label",
        "num_pixels",
        "area",
        "equivalent_diameter_area",
        "centroid-0",
        "centroid-1",
        *(f"bbox-{i}" for i in range(4)),
        *(f"intensity_{s}_raw" for s in ("mean", "std", "min", "max")),
        *("fft_mean", "fft_std", "fft_com"),
        "touches_edge",
        "touches_uncovered",
        "touches_chunk",
    ]
    no_image = regionprops_table(labels, properties=("features", "shape"))
    assert list(no_image.columns) == list(regionprops_table(labels, properties=("shape",)).columns)


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="integer dtype"):
        regionprops_table(da.zeros((4, 4), chunks=2, dtype=np.float32))
    with pytest.raises(TypeError, match="integer dtype"):
        regionprops_table(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ConfigError, match="anisotropic"):
        regionprops_table(np.zeros((4, 4), dtype=np.uint32), spacing=(2.0, 3.5))
    with pytest.raises(ConfigError, match="shape"):
        regionprops_table(np.zeros((4, 4), dtype=np.uint32), np.zeros((4, 5)))


def test_empty_label_image_gives_a_typed_empty_table():
    table = regionprops_table(da.zeros((50, 50), chunks=20, dtype=np.uint32), da.ones((50, 50)))
    out = table.compute()
    assert len(out) == 0 and out["label"].dtype == np.uint32 and "perimeter" in out


def test_no_two_columns_of_the_pipeline_table_are_the_same(field):
    """The table as the pipeline measures it (a DataArray with a pixel size, an intensity
    image) has no duplicated column; Groschner's real-space pair, which ``fourier_features``
    returns, is ``intensity_mean`` / ``intensity_std`` and is not stored."""
    image, labels = field
    table = regionprops_table(_framed(labels, None), image)
    assert not {"real_mean", "real_std"} & set(table.columns)
    values = table.drop(columns=["touches_uncovered", "touches_chunk"]).to_numpy(np.float64)
    for a, b in itertools.combinations(range(values.shape[1]), 2):
        assert not np.allclose(values[:, a], values[:, b], equal_nan=True), (
            table.columns[a],
            table.columns[b],
        )
    slices = ndi.find_objects(labels)
    for k in (0, 5, int(np.argmax(np.bincount(labels.ravel())[1:]))):
        crop, mask = image[slices[k]], labels[slices[k]] == k + 1
        real_mean, real_std = fourier_features(crop, mask)[3:]
        row = table.iloc[k]
        assert row["label"] == k + 1
        assert real_mean == pytest.approx(row["intensity_mean"], rel=1e-12)
        assert real_std == pytest.approx(row["intensity_std"], rel=1e-9)
