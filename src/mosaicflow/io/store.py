"""The run store: one Zarr v3 group per run holding images, tables, status and provenance.

Layout (see docs/ARCHITECTURE.md): ``mosaic/``, ``denoised/``, ``probability/`` and
``labels/particles/`` are OME-Zarr 0.5 multiscale images (level ``0`` full resolution, each next
level 2x smaller); ``tables/*.parquet`` are Parquet files; the root ``zarr.json`` attributes
hold ``mosaicflow``: version, config, per-stage status and timings. A stage is marked done only
after every chunk it writes is written.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from mosaicflow.errors import StoreError
from mosaicflow.runner import Runner

IMAGES = ("mosaic", "denoised", "probability")
LABELS = ("particles",)
OME_VERSION = "0.5"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_block(block: np.ndarray, target: zarr.Array, block_info: Any = None) -> np.ndarray:
    loc = block_info[0]["array-location"]
    target[tuple(slice(a, b) for a, b in loc)] = block
    return np.ones((1,) * block.ndim, dtype=np.uint8)


def store_array(arr: da.Array, target: zarr.Array, runner: Runner, description: str) -> None:
    """Write a Dask array into a Zarr array chunk by chunk, on the workers.

    The Dask chunks must equal the Zarr chunks (the last ones may be shorter), so that no two
    tasks write the same Zarr chunk.
    """
    expected = da.core.normalize_chunks(target.chunks, arr.shape)
    if arr.chunks != expected:
        arr = arr.rechunk(target.chunks)
    markers = da.map_blocks(
        _write_block,
        arr,
        target=target,
        chunks=tuple((1,) * len(c) for c in arr.chunks),
        dtype=np.uint8,
        meta=np.empty((0,) * arr.ndim, dtype=np.uint8),
    )
    written = runner.compute(markers, description)
    if int(np.asarray(written).sum()) != arr.npartitions:
        raise StoreError(
            f"{description}: only {int(written.sum())} of {arr.npartitions} chunks written"
        )


def _levels_for(shape: tuple[int, ...], chunk: int) -> int:
    return 1 + max(0, math.ceil(math.log2(max(shape) / chunk))) if max(shape) > chunk else 1


class RunStore:
    """One run's Zarr v3 group (local path or fsspec URL such as ``s3://bucket/run.zarr``).

    Parameters
    ----------
    url : str
        Where the store lives.
    mode : {"r", "a", "w"}
        ``"w"`` creates (replacing any existing store), ``"a"`` opens or creates, ``"r"`` reads.
    storage_options : dict, optional
        Passed to fsspec for remote stores.
    """

    def __init__(
        self, url: str, *, mode: str = "a", storage_options: dict[str, Any] | None = None
    ) -> None:
        self.url = str(url)
        self.storage_options = storage_options or {}
        fs, _ = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self._fs = fs
        if mode == "r" and not self._exists():
            raise StoreError(f"run store {self.url!r} does not exist")
        if mode == "w" and self._exists():
            fs.rm(self.url, recursive=True)
        kwargs: dict[str, Any] = {"zarr_format": 3}
        if self.storage_options:
            kwargs["storage_options"] = self.storage_options
        try:
            self.root: Any = zarr.open_group(self.url, mode="r" if mode == "r" else "a", **kwargs)
        except Exception as exc:
            raise StoreError(
                f"run store {self.url!r}: cannot open as a Zarr v3 group ({exc})"
            ) from exc

    def _exists(self) -> bool:
        return bool(self._fs.exists(self.url.rstrip("/") + "/zarr.json"))

    # -- run attributes -------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """The ``mosaicflow`` attributes: version, config, stages, provenance."""
        return dict(self.root.attrs.get("mosaicflow", {}))

    def update_meta(self, **values: Any) -> None:
        meta = self.meta
        meta.update(values)
        self.root.attrs["mosaicflow"] = meta

    def stages(self) -> dict[str, dict[str, Any]]:
        return dict(self.meta.get("stages", {}))

    def stage_done(self, stage: str) -> bool:
        return self.stages().get(stage, {}).get("status") == "done"

    def set_stage(self, stage: str, status: str, **info: Any) -> None:
        """Record a stage's status (``running``, ``done``, ``failed``) with timings or errors."""
        stages = self.stages()
        entry = dict(stages.get(stage, {})) if status != "running" else {}
        entry.update(info, status=status, updated=_now())
        stages[stage] = entry
        self.update_meta(stages=stages)

    # -- images ---------------------------------------------------------------------------
    def write_image(
        self,
        name: str,
        image: xr.DataArray,
        *,
        chunk: int = 1024,
        runner: Runner | None = None,
        label: bool = False,
    ) -> None:
        """Write ``image`` as an OME-Zarr multiscale image at ``name`` (e.g. ``labels/particles``).

        Level 0 is written from the Dask graph by the workers, then each further level is
        computed from the stored level above (2x2 mean for images, every second pixel for
        labels, which keeps label values intact).
        """
        runner = runner or Runner()
        data = image.data if isinstance(image.data, da.Array) else da.from_array(image.data)
        pixel = [float(v) for v in image.attrs.get("pixel_size_nm", (1.0, 1.0))]
        origin = [
            float(image["y"][0]) if image.sizes["y"] else 0.0,
            float(image["x"][0]) if image.sizes["x"] else 0.0,
        ]
        if name in self.root:
            del self.root[name]
        group = self.root.require_group(name)
        levels = _levels_for(data.shape, chunk)
        datasets = []
        for level in range(levels):
            if level:
                prev = da.from_zarr(group[str(level - 1)])
                if label:
                    data = prev[::2, ::2]
                else:
                    data = da.coarsen(
                        np.mean, prev.astype(np.float32), {0: 2, 1: 2}, trim_excess=True
                    )
                    data = _cast_like(data, prev.dtype)
            target = group.create_array(
                str(level),
                shape=data.shape,
                chunks=(min(chunk, data.shape[0]) or 1, min(chunk, data.shape[1]) or 1),
                dtype=data.dtype,
                fill_value=0,
                dimension_names=("y", "x"),
                overwrite=True,
            )
            store_array(data, target, runner, f"{name}[{level}]" if level else name)
            scale = [p * 2**level for p in pixel]
            shift = [o + (s - p) / 2 for o, s, p in zip(origin, scale, pixel, strict=True)]
            datasets.append(
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": shift},
                    ],
                }
            )
        ome: dict[str, Any] = {
            "version": OME_VERSION,
            "multiscales": [
                {
                    "name": name.split("/")[-1],
                    "axes": [
                        {"name": "y", "type": "space", "unit": "nanometer"},
                        {"name": "x", "type": "space", "unit": "nanometer"},
                    ],
                    "datasets": datasets,
                    "type": "nearest" if label else "mean",
                }
            ],
        }
        if label:
            ome["image-label"] = {"version": OME_VERSION, "source": {"image": "../../denoised"}}
            labels_group = self.root.require_group("labels")
            names = set(labels_group.attrs.get("ome", {}).get("labels", []))
            labels_group.attrs["ome"] = {
                "version": OME_VERSION,
                "labels": sorted(names | {name.split("/")[-1]}),
            }
        group.attrs.update({"ome": ome, "mosaicflow": dict(image.attrs)})

    def has_image(self, name: str) -> bool:
        return name in self.root and "0" in self.root[name]

    def read_image(self, name: str, level: int = 0) -> xr.DataArray:
        """Return level ``level`` of the stored image ``name`` as a Dask-backed DataArray."""
        if not self.has_image(name):
            raise StoreError(f"run store {self.url!r} has no image {name!r}")
        group: Any = self.root[name]
        arr = da.from_zarr(group[str(level)])
        ms = group.attrs["ome"]["multiscales"][0]["datasets"][level]["coordinateTransformations"]
        scale, shift = ms[0]["scale"], ms[1]["translation"]
        coords = {
            "y": shift[0] + np.arange(arr.shape[0]) * scale[0],
            "x": shift[1] + np.arange(arr.shape[1]) * scale[1],
        }
        attrs = dict(group.attrs.get("mosaicflow", {}))
        attrs["pixel_size_nm"] = list(scale)
        return xr.DataArray(
            arr, dims=("y", "x"), coords=coords, name=name.split("/")[-1], attrs=attrs
        )

    # -- tables ---------------------------------------------------------------------------
    def table_path(self, name: str) -> str:
        return f"{self.url.rstrip('/')}/tables/{name}.parquet"

    def write_table(self, name: str, table: pd.DataFrame) -> str:
        path = self.table_path(name)
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        table.to_parquet(path, index=False, storage_options=self.storage_options or None)
        return path

    def has_table(self, name: str) -> bool:
        return bool(self._fs.exists(self.table_path(name)))

    def count_rows(self, name: str) -> int:
        """Rows of a stored table, from the Parquet footers (reads no data)."""
        import pyarrow.dataset as ds

        fs, path = fsspec.core.url_to_fs(self.table_path(name), **self.storage_options)
        return int(ds.dataset(path, filesystem=fs, format="parquet").count_rows())

    def read_table(self, name: str) -> pd.DataFrame:
        if not self.has_table(name):
            raise StoreError(f"run store {self.url!r} has no table {name!r}")
        table = pd.read_parquet(self.table_path(name), storage_options=self.storage_options or None)
        # A table written by the workers comes in chunk order, one part per chunk.
        if "label" in table.columns and not table["label"].is_monotonic_increasing:
            table = table.sort_values("label", ignore_index=True)
        return table


def _cast_like(data: da.Array, dtype: np.dtype) -> da.Array:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return da.clip(da.round(data), info.min, info.max).astype(dtype)
    return data.astype(dtype)


def open_run(url: str, *, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Open a run store as an ``xarray.Dataset`` of its full-resolution images.

    Parameters
    ----------
    url : str
        Path or fsspec URL of a run store written by ``mosaicflow run``.

    Returns
    -------
    xarray.Dataset
        Variables ``mosaic``, ``denoised``, ``probability``, ``labels`` (those present), Dask
        backed, dims ``("y", "x")`` with coordinates in nm; ``attrs`` carry the run's metadata.
    """
    store = RunStore(url, mode="r", storage_options=storage_options)
    variables = {}
    for name in IMAGES:
        if store.has_image(name):
            variables[name] = store.read_image(name)
    for name in LABELS:
        if store.has_image(f"labels/{name}"):
            variables["labels" if name == "particles" else name] = store.read_image(
                f"labels/{name}"
            )
    return xr.Dataset(variables, attrs=store.meta)
