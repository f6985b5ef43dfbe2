"""Units of the particle table: every column has one, they match how the values scale with the
pixel size, and they travel in the Parquet schema metadata."""

from __future__ import annotations

import itertools
import json

import dask.array as da
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr

from mosaicflow.errors import ConfigError
from mosaicflow.measure import regionprops_table
from mosaicflow.measure.columns import (
    GROUP_COLUMNS,
    PIPELINE_UNITS,
    PIXEL_POSITION_COLUMNS,
    PIXEL_POSITION_PROPERTIES,
    PIXEL_SIZE_KEY,
    POSITIONS_KEY,
    SKIMAGE_PROPERTIES,
    UNITS_KEY,
    column_units,
    property_columns,
    table_columns,
    table_schema_metadata,
    units_from_metadata,
)

KNOWN_UNITS = {
    "nm",
    "nm^2",
    "1/nm",
    "px",
    "px^2",
    "1/px",
    "rad",
    "grey level",
    "cycles/px",
    "dimensionless",
    "count",
    "boolean",
    "label",
    "class name",
}
EXTRAS = ["raw", "probability"]


def _every_column(*, frame: bool) -> list[str]:
    """Every column the table can have: all groups with an intensity image and extra images,
    every scikit-image property, the pixel positions where the image has a frame."""
    columns = table_columns(GROUP_COLUMNS, intensity=True, extras=EXTRAS, frame=frame)
    names = [*SKIMAGE_PROPERTIES, *(PIXEL_POSITION_PROPERTIES if frame else ())]
    columns += property_columns(names, intensity=True, extras=EXTRAS, frame=frame)
    return list(dict.fromkeys(columns))


@pytest.mark.parametrize(("physical", "frame"), list(itertools.product([False, True], repeat=2)))
def test_every_column_the_table_can_have_has_a_unit(physical, frame):
    columns = _every_column(frame=frame)
    assert (set(PIXEL_POSITION_COLUMNS) <= set(columns)) == frame
    units = column_units(columns, physical=physical, frame=frame)
    assert list(units) == columns
    assert set(units.values()) <= KNOWN_UNITS
    length = "nm" if physical else "px"
    assert units["area"] == units["area_convex"] == f"{length}^2"
    assert units["perimeter"] == units["equivalent_diameter_area"] == length
    assert units["centroid-0"] == length and units["boundary_area_ratio"] == f"1/{length}"
    assert units["bbox-2"] == (length if frame else "px")
    assert units["orientation"] == "rad" and units["moments_hu-6"] == "dimensionless"
    assert units["intensity_std"] == units["intensity_max_raw"] == units["fft_mean"]
    assert units["intensity_std"] == "grey level" and units["fft_com"] == "cycles/px"
    assert units["touches_edge"] == "boolean" and units["num_pixels"] == "count"
    if frame:
        assert units["bbox_px-3"] == units["centroid_px-0"] == "px"


def test_the_pipeline_columns_have_units():
    columns = [*PIPELINE_UNITS, "proba_sphere", "proba_rod"]
    units = column_units(columns, physical=True, frame=True)
    assert units["probability_mean"] == units["proba_rod"] == "dimensionless"
    assert units["class"] == "class name"


@pytest.mark.parametrize(
    "column", ["colour", "real_mean", "real_std", "intensity_median", "proba_", "bbox-4"]
)
def test_a_column_without_a_unit_is_refused_by_name(column):
    with pytest.raises(KeyError, match=f"'{column}' has no unit"):
        column_units(["label", column, "area"], physical=True)


def _tables(field):
    """Tables of the same labels in pixels and with a 2 nm pixel: plain arrays (with and
    without an intensity image, extra images) and DataArrays (frame at the origin)."""
    image, labels = field
    kwargs = {"extra_intensity": {"raw": image * 2.0}}
    plain = [
        (
            regionprops_table(labels, image, **kwargs),
            regionprops_table(labels, image, spacing=2.0, **kwargs),
            False,
        ),
        (regionprops_table(labels), regionprops_table(labels, spacing=2.0), False),
    ]
    h, w = labels.shape
    in_px = xr.DataArray(
        da.from_array(labels, chunks=64),
        dims=("y", "x"),
        coords={"y": np.arange(h), "x": np.arange(w)},
    )
    in_nm = in_px.assign_coords(y=np.arange(h) * 2.0, x=np.arange(w) * 2.0)
    in_nm.attrs["pixel_size_nm"] = [2.0, 2.0]
    framed = []
    for intensity in (None, image):
        px, nm = (
            regionprops_table(a, intensity, **kwargs)
            .compute()
            .sort_values("label", ignore_index=True)
            for a in (in_px, in_nm)
        )
        framed.append((px, nm, True))
    return [*plain, *framed]


def test_units_say_how_each_column_scales_with_the_pixel_size(field):
    """The oracle for the units: with a 2 nm pixel a column in nm doubles, one in nm^2
    quadruples, one in 1/nm halves, every other column is unchanged; each table's columns
    all have units."""
    for px, nm, frame in _tables(field):
        assert list(px.columns) == list(nm.columns)
        units_px = column_units(px.columns, physical=False, frame=frame)
        units_nm = column_units(nm.columns, physical=True, frame=frame)
        factor = {"nm": 2.0, "nm^2": 4.0, "1/nm": 0.5}
        for column, unit in units_nm.items():
            expected = px[column].to_numpy(np.float64) * factor.get(unit, 1.0)
            np.testing.assert_allclose(nm[column], expected, rtol=1e-12, err_msg=column)
            assert (unit in factor) == (units_px[column] != unit), column
        assert frame == ("bbox_px-0" in nm)


def test_schema_metadata_is_written_and_read_back(field, tmp_path):
    image, labels = field
    h, w = labels.shape
    arr = xr.DataArray(
        da.from_array(labels, chunks=100),
        dims=("y", "x"),
        coords={"y": 50.0 + np.arange(h) * 2.5, "x": np.arange(w) * 2.5},
        attrs={"pixel_size_nm": [2.5, 2.5]},
    )
    table = regionprops_table(arr, da.from_array(image, chunks=100))
    meta = table_schema_metadata(table.columns, pixel_size_nm=arr.attrs["pixel_size_nm"])
    assert set(meta) == {k.encode() for k in (UNITS_KEY, PIXEL_SIZE_KEY, POSITIONS_KEY)}
    assert json.loads(meta[PIXEL_SIZE_KEY.encode()]) == [2.5, 2.5]
    assert b"origin + (bbox_px - 0.5) * pixel size" in meta[POSITIONS_KEY.encode()]
    # Dask: every part's footer, as the pipeline writes it from the workers.
    table.to_parquet(tmp_path / "parts", write_index=False, custom_metadata=meta)
    parts = sorted((tmp_path / "parts").glob("*.parquet"))
    assert len(parts) == table.npartitions
    for part in parts:
        units, pixel = units_from_metadata(pq.read_schema(part).metadata)
        assert list(units) == list(table.columns) and pixel == [2.5, 2.5]
    assert units["bbox-0"] == "nm" and units["bbox_px-0"] == "px" and units["area"] == "nm^2"
    # pandas: merged into the Arrow schema's metadata.
    frame = table.compute()
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**arrow.schema.metadata, **meta})
    pq.write_table(arrow, tmp_path / "one.parquet")
    units, _ = units_from_metadata(pq.read_schema(tmp_path / "one.parquet").metadata)
    assert units == column_units(frame.columns, physical=True, frame=True)
    assert pd.read_parquet(tmp_path / "one.parquet").shape == frame.shape


def test_schema_metadata_of_a_table_in_pixels_and_bad_pixel_sizes():
    meta = table_schema_metadata(["label", "area", "bbox-0"], pixel_size_nm=None, frame=False)
    units, pixel = units_from_metadata(meta)
    assert units == {"label": "label", "area": "px^2", "bbox-0": "px"} and pixel is None
    assert units_from_metadata(None) == ({}, None)
    assert units_from_metadata({b"pandas": b"{}"}) == ({}, None)
    one = table_schema_metadata(["area"], pixel_size_nm=1.5)
    assert units_from_metadata(one) == ({"area": "nm^2"}, [1.5, 1.5])
    for bad in (0.0, [1.0, 2.0, 3.0], float("nan")):
        with pytest.raises(ConfigError, match="pixel_size_nm"):
            table_schema_metadata(["area"], pixel_size_nm=bad)
    with pytest.raises(KeyError, match="'real_mean' has no unit"):
        table_schema_metadata(["area", "real_mean"], pixel_size_nm=1.0)
