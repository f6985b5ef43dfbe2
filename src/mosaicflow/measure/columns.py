"""The particle table's vocabulary: column names, groups, property names, dtypes and units.

This module is the one home of what the columns of :func:`mosaicflow.measure.regionprops_table`
are called, which groups and scikit-image property names select them, their dtypes and their
units (:func:`column_units`), and of the units written into a stored table's Parquet schema
(:func:`table_schema_metadata`). A column that is not described here has no unit, and
:func:`column_units` refuses it: adding a column to the table means giving it a unit here.

Positions: ``centroid-0/1`` are ``origin + px * spacing``, the mean of the particle's pixel
centres. For a label image in a coordinate frame (a DataArray, ``frame=True``) ``bbox-0..3``
are the box's outer pixel *edges* in that frame, ``origin + (index - 0.5) * spacing`` for
scikit-image's half-open indices ``[min_row, min_col, max_row, max_col)`` (coordinates are
pixel centres, so pixel ``k`` spans ``coordinate(k) -+ spacing / 2``: ``bbox-0`` is the top
edge of the first row, ``bbox-2`` the bottom edge of the last row, and ``bbox-2 - bbox-0`` is
the box's height in rows times the pixel size), and the same positions in pixels are kept as
:data:`PIXEL_POSITION_COLUMNS`. Otherwise ``bbox-0..3`` are scikit-image's pixel indices,
whatever ``spacing`` (as ``skimage.measure.regionprops_table`` does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError
from mosaicflow.measure.features import FOURIER_COLUMNS

CENTROID_COLUMNS: tuple[str, ...] = ("centroid-0", "centroid-1")
BBOX_COLUMNS: tuple[str, ...] = ("bbox-0", "bbox-1", "bbox-2", "bbox-3")
#: The ``class`` column's value for a particle the classifier cannot classify
#: (:func:`mosaicflow.classify.predict`); the report counts such particles apart.
UNCLASSIFIED = "unclassified"

#: Centroid and bounding box in pixels of the whole image (bbox end exclusive), next to the
#: physical ``centroid-*`` / ``bbox-*`` of a label image in a coordinate frame (DataArray).
PIXEL_POSITION_COLUMNS: tuple[str, ...] = (
    "centroid_px-0",
    "centroid_px-1",
    "bbox_px-0",
    "bbox_px-1",
    "bbox_px-2",
    "bbox_px-3",
)
#: Property names of :data:`PIXEL_POSITION_COLUMNS` (like scikit-image's ``centroid``).
PIXEL_POSITION_PROPERTIES: dict[str, tuple[str, ...]] = {
    "centroid_px": PIXEL_POSITION_COLUMNS[:2],
    "bbox_px": PIXEL_POSITION_COLUMNS[2:],
}
#: Identity, size, position and bounding box (end exclusive) of every particle.
BASE_COLUMNS: tuple[str, ...] = (
    "label",
    "num_pixels",
    "area",
    "equivalent_diameter_area",
    "centroid-0",
    "centroid-1",
    "bbox-0",
    "bbox-1",
    "bbox-2",
    "bbox-3",
)
#: Geometry columns, in table order, with scikit-image's names where they exist.
SHAPE_COLUMNS: tuple[str, ...] = (
    "perimeter",
    "feret_diameter_max",
    "feret_diameter_min",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "eccentricity",
    "solidity",
    "area_convex",
    "circularity",
    "aspect_ratio",
    "roundness",
    "boundary_area_ratio",
    *(f"moments_hu-{k}" for k in range(7)),
)
INTENSITY_STATS: tuple[str, ...] = ("mean", "std", "min", "max")
#: Statistics of the intensity image over each particle's pixels.
INTENSITY_COLUMNS: tuple[str, ...] = tuple(f"intensity_{s}" for s in INTENSITY_STATS)
FLAG_COLUMNS: tuple[str, ...] = ("touches_edge", "touches_uncovered", "touches_chunk")
#: The column groups, in table order.
GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "basic": BASE_COLUMNS,
    "shape": SHAPE_COLUMNS,
    "intensity": INTENSITY_COLUMNS,
    "features": FOURIER_COLUMNS,
    "flags": FLAG_COLUMNS,
}
#: The group names; all of them are the default ``properties`` (the whole table).
PROPERTY_GROUPS: tuple[str, ...] = tuple(GROUP_COLUMNS)
#: Columns that are mosaicflow's own: scikit-image has no property of that name.
OWN_COLUMNS: tuple[str, ...] = (
    "feret_diameter_min",
    "circularity",
    "aspect_ratio",
    "roundness",
    "boundary_area_ratio",
    *FOURIER_COLUMNS,
    *FLAG_COLUMNS,
)
#: Columns whose unit is a length (scaled by the pixel size), an area (by its square) or the
#: inverse of a length (divided by the pixel size). Centroids are positions:
#: ``origin + px * pixel size``.
LENGTH_COLUMNS = frozenset(
    {
        "perimeter",
        "feret_diameter_max",
        "feret_diameter_min",
        "axis_major_length",
        "axis_minor_length",
        "equivalent_diameter_area",
    }
)
AREA_COLUMNS = frozenset({"area", "area_convex"})
PER_LENGTH_COLUMNS = frozenset({"boundary_area_ratio"})
#: Integer columns; ``bbox-*`` only for a label image without a coordinate frame.
INTEGER_COLUMNS = frozenset({"num_pixels", *BBOX_COLUMNS, *PIXEL_POSITION_COLUMNS[2:]})


def extra_intensity_columns(name: str) -> list[str]:
    """Columns of the extra intensity image ``name``: ``intensity_<stat>_<name>``."""
    return [f"{c}_{name}" for c in INTENSITY_COLUMNS]


def _skimage_properties() -> dict[str, tuple[str, ...]]:
    props: dict[str, list[str]] = {}
    for column in (*BASE_COLUMNS, *SHAPE_COLUMNS, *INTENSITY_COLUMNS):
        if column not in OWN_COLUMNS:
            # scikit-image names the k-th element of an array property ``<name>-<k>``.
            props.setdefault(column.split("-")[0], []).append(column)
    return {name: tuple(columns) for name, columns in props.items()}


#: The scikit-image properties the kernel computes, each with the columns it becomes in
#: ``skimage.measure.regionprops_table`` of a 2-D image, in scikit-image's order.
SKIMAGE_PROPERTIES: dict[str, tuple[str, ...]] = _skimage_properties()


def basic_columns(*, frame: bool) -> tuple[str, ...]:
    """The ``basic`` group: :data:`BASE_COLUMNS`, then, for a label image in a coordinate
    frame (``frame``), :data:`PIXEL_POSITION_COLUMNS`."""
    return (*BASE_COLUMNS, *PIXEL_POSITION_COLUMNS) if frame else BASE_COLUMNS


def table_columns(
    groups: Collection[str], *, intensity: bool, extras: Sequence[str], frame: bool = False
) -> list[str]:
    """The table's columns, in table order, for a selection of :data:`GROUP_COLUMNS`.

    ``basic`` (with the pixel positions where ``frame``), the flags and the statistics of the
    ``extras`` images are always in; the ``intensity`` and ``features`` groups only with an
    intensity image.
    """
    cols = list(basic_columns(frame=frame))
    if "shape" in groups:
        cols += SHAPE_COLUMNS
    if intensity and "intensity" in groups:
        cols += INTENSITY_COLUMNS
    for name in extras:
        cols += extra_intensity_columns(name)
    if intensity and "features" in groups:
        cols += FOURIER_COLUMNS
    cols += FLAG_COLUMNS
    return cols


def property_columns(
    properties: Any, *, intensity: bool, extras: Sequence[str], frame: bool = False
) -> list[str]:
    """The columns that ``properties`` names, in order; ``properties`` as in
    :func:`mosaicflow.measure.regionprops_table` (whose ConfigError this raises). ``frame``:
    the label image has a coordinate frame (a DataArray), which adds the pixel positions."""
    names = [properties] if isinstance(properties, str) else list(properties)
    if not names:
        raise ConfigError("regionprops_table: properties is empty; name at least one property")
    if all(isinstance(name, str) and name in GROUP_COLUMNS for name in names):
        return table_columns(names, intensity=intensity, extras=extras, frame=frame)
    pixel_names = [*PIXEL_POSITION_PROPERTIES, *PIXEL_POSITION_COLUMNS]
    if not frame:
        asked = [name for name in names if name in pixel_names]
        if asked:
            raise ConfigError(
                f"regionprops_table: {asked} exist for a DataArray label image only (its "
                "centroid and bbox are nm in its coordinate frame); for an array without "
                "coordinates 'centroid' is px * spacing and 'bbox' is in pixels already"
            )
    extra_columns = [c for name in extras for c in extra_intensity_columns(name)]
    every = table_columns(GROUP_COLUMNS, intensity=True, extras=extras, frame=frame)
    vocabulary: dict[str, tuple[str, ...]] = {c: (c,) for c in every}
    vocabulary.update(SKIMAGE_PROPERTIES)
    vocabulary.update(GROUP_COLUMNS)
    vocabulary["basic"] = basic_columns(frame=frame)
    if frame:
        vocabulary.update(PIXEL_POSITION_PROPERTIES)
    vocabulary["intensity"] = (*INTENSITY_COLUMNS, *extra_columns)
    unknown = [name for name in names if not isinstance(name, str) or name not in vocabulary]
    if unknown:
        own = [*OWN_COLUMNS, *(pixel_names if frame else ()), *extra_columns]
        raise ConfigError(
            f"regionprops_table: unknown or uncomputable properties {unknown}; valid names are "
            f"the scikit-image properties {list(SKIMAGE_PROPERTIES)}, the groups "
            f"{list(PROPERTY_GROUPS)}, mosaicflow's own columns {own} and any single column "
            "of the table (such as 'centroid-0')"
        )
    columns = list(dict.fromkeys(c for name in names for c in vocabulary[name]))
    need_image = [c for c in columns if c in INTENSITY_COLUMNS or c in FOURIER_COLUMNS]
    if need_image and not intensity:
        raise ConfigError(
            f"regionprops_table: {need_image} are measured on an intensity image; pass "
            "intensity_image"
        )
    return columns


def empty_table(columns: Sequence[str], *, frame: bool = False) -> pd.DataFrame:
    """A typed table with no rows (the meta of the Dask DataFrame); ``frame``: ``bbox-*`` are
    positions in a coordinate frame (float), not pixel indices."""
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c == "label":
            out[c] = np.empty(0, dtype=np.uint32)
        elif c in INTEGER_COLUMNS and not (frame and c in BBOX_COLUMNS):
            out[c] = np.empty(0, dtype=np.int64)
        elif c in FLAG_COLUMNS:
            out[c] = np.empty(0, dtype=bool)
        else:
            out[c] = np.empty(0, dtype=np.float64)
    return pd.DataFrame(out)


# -- units -------------------------------------------------------------------------------------
#: Key of the Parquet schema metadata holding ``{column: unit}`` (JSON, in column order).
UNITS_KEY = "mosaicflow.units"
#: Key of the Parquet schema metadata holding the pixel size ``[y, x]`` in nm (JSON; ``null``
#: for a table in pixels).
PIXEL_SIZE_KEY = "mosaicflow.pixel_size_nm"
#: Key of the Parquet schema metadata describing the position conventions (plain text).
POSITIONS_KEY = "mosaicflow.positions"

#: Angles, in radians.
ANGLE_COLUMNS = frozenset({"orientation"})
#: Ratios and invariants without a unit.
DIMENSIONLESS_COLUMNS = frozenset(
    {
        "eccentricity",
        "solidity",
        "circularity",
        "aspect_ratio",
        "roundness",
        *(f"moments_hu-{k}" for k in range(7)),
    }
)
#: Columns the pipeline adds to the stored table: the mean segmentation probability (0..1,
#: model segmenters only) and the classifier's outputs (``class``, ``class_probability``, one
#: ``proba_<class>`` per class; see ``mosaicflow.classify.predict.output_columns``).
PIPELINE_UNITS: dict[str, str] = {
    "probability_mean": "dimensionless",
    "class": "class name",
    "class_probability": "dimensionless",
}
_PROBA_PREFIX = "proba_"
_EXTRA_INTENSITY = re.compile(r"intensity_(?:mean|std|min|max)_\w+")


def _fixed_units(*, length: str, bbox: str) -> dict[str, str]:
    """The unit of every fixed column for one choice of length and bbox units."""
    units = {"label": "label", "num_pixels": "count"}
    units.update(dict.fromkeys(LENGTH_COLUMNS, length))
    units.update(dict.fromkeys(AREA_COLUMNS, f"{length}^2"))
    units.update(dict.fromkeys(PER_LENGTH_COLUMNS, f"1/{length}"))
    units.update(dict.fromkeys(CENTROID_COLUMNS, length))
    units.update(dict.fromkeys(BBOX_COLUMNS, bbox))
    units.update(dict.fromkeys(PIXEL_POSITION_COLUMNS, "px"))
    units.update(dict.fromkeys(ANGLE_COLUMNS, "rad"))
    units.update(dict.fromkeys(DIMENSIONLESS_COLUMNS, "dimensionless"))
    units.update(dict.fromkeys(INTENSITY_COLUMNS, "grey level"))
    # fft_mean / fft_std: DFT amplitudes (sums of grey levels) per particle pixel.
    units.update({"fft_mean": "grey level", "fft_std": "grey level", "fft_com": "cycles/px"})
    units.update(dict.fromkeys(FLAG_COLUMNS, "boolean"))
    units.update(PIPELINE_UNITS)
    return units


def column_units(columns: Iterable[str], *, physical: bool, frame: bool = False) -> dict[str, str]:
    """The unit of each column of a particle table, as a short string.

    Parameters
    ----------
    columns : iterable of str
        Column names: those :func:`mosaicflow.measure.regionprops_table` makes (any
        ``extra_intensity`` name included) and those the pipeline adds
        (:data:`PIPELINE_UNITS`, ``proba_<class>``).
    physical : bool, keyword-only
        Lengths are nm: the table was measured with a pixel size in nm (a DataArray's
        ``pixel_size_nm``, or ``spacing=`` in nm per pixel). Otherwise pixels.
    frame : bool, keyword-only
        The label image was a DataArray: ``bbox-*`` are positions in its coordinate frame
        (nm where ``physical``), not pixel indices.

    Returns
    -------
    dict of str to str
        ``{column: unit}`` in the order given. Units: ``nm``, ``nm^2``, ``1/nm`` (or ``px``,
        ``px^2``, ``1/px``), ``rad``, ``grey level`` (the intensity image's own values),
        ``cycles/px``, ``dimensionless``, ``count``, ``boolean``, ``label``, ``class name``.

    Raises
    ------
    KeyError
        A column without a unit here, named in the message.
    """
    length = "nm" if physical else "px"
    fixed = _fixed_units(length=length, bbox=length if frame else "px")
    out = {}
    for column in columns:
        if column in fixed:
            out[column] = fixed[column]
        elif _EXTRA_INTENSITY.fullmatch(column):
            out[column] = "grey level"
        elif column.startswith(_PROBA_PREFIX) and len(column) > len(_PROBA_PREFIX):
            out[column] = "dimensionless"
        else:
            raise KeyError(
                f"column {column!r} has no unit: give it one in mosaicflow/measure/columns.py "
                "(column_units), next to its name"
            )
    return out


def _pixel_size_pair(pixel_size_nm: float | Sequence[float] | None) -> list[float] | None:
    if pixel_size_nm is None:
        return None
    values = [float(v) for v in np.atleast_1d(np.asarray(pixel_size_nm, dtype=np.float64))]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"pixel_size_nm must be 1 or 2 positive numbers, got {pixel_size_nm!r}")
    return values


def table_schema_metadata(
    columns: Iterable[str],
    *,
    pixel_size_nm: float | Sequence[float] | None,
    frame: bool = True,
) -> dict[bytes, bytes]:
    """What a stored particle table carries in its Parquet schema metadata.

    Parameters
    ----------
    columns : iterable of str
        The table's columns, in order (see :func:`column_units`).
    pixel_size_nm : float or (float, float) or None, keyword-only
        The pixel size ``(y, x)`` the table was measured with; ``None``: a table in pixels.
    frame : bool, keyword-only
        The label image was a DataArray (the pipeline's case): ``bbox-*`` are positions in
        its frame. ``False`` for a plain array, whose ``bbox-*`` are pixel indices.

    Returns
    -------
    dict of bytes to bytes
        :data:`UNITS_KEY`: JSON ``{column: unit}``; :data:`PIXEL_SIZE_KEY`: JSON ``[y, x]``
        or ``null``; :data:`POSITIONS_KEY`: the position conventions in words. Pass it as
        ``custom_metadata=`` of ``dask.dataframe.to_parquet``, or merge it into a
        ``pyarrow.Table``'s schema metadata.

    Raises
    ------
    KeyError
        A column without a unit (see :func:`column_units`).
    ConfigError
        A pixel size that is not one or two positive numbers.
    """
    pair = _pixel_size_pair(pixel_size_nm)
    units = column_units(columns, physical=pair is not None, frame=frame)
    length = "nm" if pair is not None else "px"
    if frame:
        positions = (
            f"centroid-0/1: mean of the particle's pixel centres, {length} in the image's "
            f"coordinates (pixel k of an axis at origin + k * pixel size); bbox-0..3 (top, left, "
            f"bottom, right): the box's outer pixel edges, {length} in the same coordinates, "
            "origin + (bbox_px - 0.5) * pixel size; centroid_px-0/1, bbox_px-0..3: the same in "
            "level-0 pixel indices, bbox_px half-open [min_row, min_col, max_row, max_col)"
        )
    else:
        positions = (
            f"centroid-0/1: mean pixel index times the pixel size ({length}); bbox-0..3: pixel "
            "indices, half-open [min_row, min_col, max_row, max_col)"
        )
    return {
        UNITS_KEY.encode(): json.dumps(units).encode(),
        PIXEL_SIZE_KEY.encode(): json.dumps(pair).encode(),
        POSITIONS_KEY.encode(): positions.encode(),
    }


def units_from_metadata(
    metadata: Mapping[bytes, bytes] | Mapping[str, str] | None,
) -> tuple[dict[str, str], list[float] | None]:
    """``({column: unit}, [y, x] pixel size in nm or None)`` from a Parquet schema's metadata
    (``pyarrow.parquet.read_schema(path).metadata``), as :func:`table_schema_metadata` wrote
    it; ``({}, None)`` for a table without it."""
    found: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        k = key.decode() if isinstance(key, bytes) else str(key)
        if k in (UNITS_KEY, PIXEL_SIZE_KEY):
            found[k] = json.loads(value)
    return dict(found.get(UNITS_KEY, {})), found.get(PIXEL_SIZE_KEY)
