"""napari reader: a run store opened as layers (mosaic, denoised, probability, particle labels
with the particle table as their features).

The plugin is declared in ``napari.yaml`` (npe2 manifest, entry point ``napari.manifest``), so
``napari run.zarr`` opens a run. This module never imports napari: it returns plain layer-data
tuples ``(data, kwargs, layer_type)``, the data lazy Dask arrays, one per pyramid level, read
through :class:`~mosaicflow.io.store.RunStore` only. Coordinates are in nm: each layer's
``scale`` and ``translate`` are level 0's OME-Zarr transform, so layers, the particle table's
centroids and the mosaic's stage frame line up. See ``docs/NAPARI.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from mosaicflow.io.store import RunStore

#: ``(data, kwargs, layer_type)`` as napari's readers return them.
LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

#: The particle-table columns shown when hovering a particle (those the table has, this order).
FEATURE_COLUMNS = (
    "equivalent_diameter_area",
    "area",
    "feret_diameter_max",
    "feret_diameter_min",
    "circularity",
    "aspect_ratio",
    "solidity",
    "eccentricity",
    "intensity_mean",
    "class",
    "class_probability",
    "touches_edge",
    "touches_uncovered",
)
#: Image layers besides the mosaic: store name, napari kwargs.
_EXTRA_IMAGES: dict[str, dict[str, Any]] = {
    "denoised": {"colormap": "gray", "visible": False},
    # Stored as uint8 round(p * 255).
    "probability": {"colormap": "magma", "contrast_limits": (0, 255), "visible": False},
}
LABELS_NAME = "labels/particles"
#: Contrast limits are computed on the first pyramid level with at most this many pixels.
CONTRAST_MAX_PIXELS = 1 << 20
CONTRAST_PERCENTILES = (0.5, 99.5)


def napari_get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The napari reader hook: a reader when every path is a mosaicflow run store, else None.

    Parameters
    ----------
    path : str or sequence of str
        What napari was asked to open (a local path or an fsspec URL).
    """
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(_is_run_store(str(p)) for p in paths):
        return None
    return read_run_store


def _is_run_store(path: str) -> bool:
    try:
        return RunStore.is_run_store(path)
    except Exception:  # an unreadable path or an unknown URL scheme is not ours to open
        return False


def read_run_store(path: str | Sequence[str]) -> list[LayerData]:
    """Layer data of one run store (or several, one after the other).

    Per store, bottom to top: ``mosaic``; ``denoised`` and ``probability`` (hidden) where
    stored; ``particles``, a ``labels`` layer whose ``features`` hold the particle table's
    :data:`FEATURE_COLUMNS` (plus ``index``, the particle's label, which napari uses to find a
    label's row), so hovering a particle shows its size and shape.
    """
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(run_store_layers(RunStore(str(p), mode="r")))
    return layers


def run_store_layers(store: RunStore) -> list[LayerData]:
    """The layer data of an open run store (see :func:`read_run_store`)."""
    layers = []
    if store.has_image("mosaic"):
        layers.append(_image_layer(store, "mosaic", {"colormap": "gray"}))
    for name, kwargs in _EXTRA_IMAGES.items():
        if store.has_image(name):
            layers.append(_image_layer(store, name, kwargs))
    if store.has_image(LABELS_NAME):
        layers.append(_labels_layer(store))
    return layers


def _levels(store: RunStore, name: str) -> list[Any]:
    return [store.read_image(name, level).data for level in store.image_levels(name)]


def _common_kwargs(store: RunStore, name: str, levels: list[Any]) -> dict[str, Any]:
    scale, translate = store.image_transform(name, 0)
    kwargs: dict[str, Any] = {
        "name": name.split("/")[-1],
        "multiscale": len(levels) > 1,
        "scale": tuple(float(s) for s in scale),
        "translate": tuple(float(t) for t in translate),
        "metadata": {"mosaicflow": {"store": store.url, "image": name}},
    }
    if _napari_has_units():
        kwargs["units"] = ("nm", "nm")
        kwargs["axis_labels"] = ("y", "x")
    return kwargs


def _image_layer(store: RunStore, name: str, extra: dict[str, Any]) -> LayerData:
    levels = _levels(store, name)
    kwargs = _common_kwargs(store, name, levels)
    kwargs.update(extra)
    if "contrast_limits" not in kwargs:
        kwargs["contrast_limits"] = contrast_limits(levels)
    return (levels if len(levels) > 1 else levels[0], kwargs, "image")


def _labels_layer(store: RunStore) -> LayerData:
    levels = _levels(store, LABELS_NAME)
    kwargs = _common_kwargs(store, LABELS_NAME, levels)
    kwargs["opacity"] = 0.5
    features = particle_features(store)
    if features is not None:
        kwargs["features"] = features
    return (levels if len(levels) > 1 else levels[0], kwargs, "labels")


def particle_features(store: RunStore) -> Any:
    """The particle table's :data:`FEATURE_COLUMNS` with ``index`` (the label) first, or None
    when the run has no particle table. Reads only those columns."""
    if not store.has_table("particles"):
        return None
    present = set(store.table_columns("particles"))
    if "label" not in present:
        return None
    columns = [c for c in FEATURE_COLUMNS if c in present]
    table = store.read_table("particles", columns=["label", *columns])
    table = table.rename(columns={"label": "index"})
    return table[["index", *columns]].reset_index(drop=True)


def contrast_limits(levels: Sequence[Any]) -> tuple[float, float]:
    """Display range of an image pyramid: the :data:`CONTRAST_PERCENTILES` of its first level
    below level 0 with at most :data:`CONTRAST_MAX_PIXELS` pixels (the coarsest if none is that
    small; level 0 only when it is the only level), so level 0 is never read."""
    candidates = list(levels[1:]) or list(levels)
    small = next(
        (lv for lv in candidates if int(np.prod(lv.shape)) <= CONTRAST_MAX_PIXELS), candidates[-1]
    )
    values = np.asarray(small)
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if values.size == 0:
        return (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(values, CONTRAST_PERCENTILES))
    if high <= low:
        high = low + 1.0
    return (low, high)


def _napari_has_units() -> bool:
    """Whether the installed napari takes ``units=`` and ``axis_labels=`` (0.6 and later)."""
    try:
        major, minor = (int(p) for p in version("napari").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (0, 6)
