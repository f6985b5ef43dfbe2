"""The run store: one Zarr v3 group per run holding images, tables, status and provenance.

Layout (see docs/ARCHITECTURE.md): ``mosaic/``, ``denoised/``, ``probability/`` and
``labels/particles/`` are OME-Zarr 0.5 multiscale images (level ``0`` full resolution, each next
level 2x smaller); ``tables/*.parquet`` are Parquet files; the root ``zarr.json`` attributes
hold ``mosaicflow``: version, config, per-stage status and timings. A stage is marked done only
after every chunk it writes is written.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from mosaicflow.config import DEFAULT_CHUNK_PX
from mosaicflow.errors import StoreError
from mosaicflow.io.ome import OME_VERSION, write_multiscale
from mosaicflow.runner import Runner

IMAGES = ("mosaic", "denoised", "probability")
LABELS = ("particles",)
#: Marks a run store's root group (attributes ``mosaicflow.format``).
RUN_FORMAT = "mosaicflow-run/1"
#: The entries a run writes at the root of its store; nothing else is ever removed.
RUN_ENTRIES = frozenset({"zarr.json", *IMAGES, "labels", "tables", "report", "scratch"})


def _root_attrs(fs: Any, path: str) -> dict[str, Any] | None:
    """The ``mosaicflow`` attributes of the Zarr group at ``path``, or None if it is not a run
    store (no group, unreadable metadata, or no attributes of ours)."""
    import json

    meta_path = path.rstrip("/") + "/zarr.json"
    try:
        if not fs.exists(meta_path):
            return None
        with fs.open(meta_path, "rb") as fh:
            meta = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes", {}).get("mosaicflow") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict):
        return None
    # Stores written before the format marker carry the run's version and stage record.
    if attrs.get("format") == RUN_FORMAT or {"version", "stages"} <= set(attrs):
        return attrs
    return None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RunStore:
    """One run's Zarr v3 group (local path or fsspec URL such as ``s3://bucket/run.zarr``).

    The store is the only door to a run's files: the pipeline, the command line and the report
    read and write through its methods, never through its file system.

    Parameters
    ----------
    url : str
        Where the store lives.
    mode : {"r", "a", "w"}
        ``"r"`` reads a run store; ``"a"`` opens one or creates one where nothing is (a missing
        path or an empty folder); ``"w"`` creates one, replacing a run store already there.
    storage_options : dict, optional
        Passed to fsspec for remote stores.

    Raises
    ------
    StoreError
        ``url`` holds something mosaicflow did not make (a folder of other files, another
        program's Zarr store); it is never written into or deleted. Or, with ``"r"``, there is no
        run store at ``url``.

    Notes
    -----
    A run store is recognised by the ``mosaicflow`` attributes of its root group, written when
    the store is created. Replacing one (``mode="w"``) removes only the entries a run writes
    (:data:`RUN_ENTRIES`) and refuses if anything else lies beside them.
    """

    def __init__(
        self, url: str, *, mode: str = "a", storage_options: dict[str, Any] | None = None
    ) -> None:
        if mode not in ("r", "a", "w"):
            raise StoreError(f"run store mode must be 'r', 'a' or 'w', got {mode!r}")
        self.url = str(url).rstrip("/")
        self.storage_options = storage_options or {}
        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self._fs = fs
        self._path = path
        state = self._state()
        if state == "foreign":
            raise StoreError(self._foreign_message())
        if mode == "r" and state != "run":
            raise StoreError(f"run store {self.url!r} does not exist")
        if mode == "w" and state == "run":
            self._clear()
            state = "empty"
        kwargs: dict[str, Any] = {"zarr_format": 3}
        if self.storage_options:
            kwargs["storage_options"] = self.storage_options
        try:
            self.root: Any = zarr.open_group(self.url, mode="r" if mode == "r" else "a", **kwargs)
        except Exception as exc:
            raise StoreError(
                f"run store {self.url!r}: cannot open as a Zarr v3 group ({exc})"
            ) from exc
        if state == "empty":
            self.root.attrs["mosaicflow"] = {"format": RUN_FORMAT}

    @classmethod
    def check_target(
        cls, url: str, *, replace: bool, storage_options: dict[str, Any] | None = None
    ) -> bool:
        """Check, without writing anything, that a run may write to ``url``.

        Returns whether a run store is already there. Raises :class:`StoreError` where the
        constructor would (something else is there), and where ``replace`` is set and the run
        store holds entries a run does not write.
        """
        probe = cls.__new__(cls)
        probe.url = str(url).rstrip("/")
        probe.storage_options = storage_options or {}
        probe._fs, probe._path = fsspec.core.url_to_fs(probe.url, **probe.storage_options)
        state = probe._state()
        if state == "foreign":
            raise StoreError(probe._foreign_message())
        if state == "run" and replace:
            probe._foreign_entries(raise_error=True)
        return state == "run"

    @classmethod
    def is_run_store(cls, url: str, *, storage_options: dict[str, Any] | None = None) -> bool:
        """Whether ``url`` holds a run store that mosaicflow made."""
        fs, path = fsspec.core.url_to_fs(str(url).rstrip("/"), **(storage_options or {}))
        return _root_attrs(fs, path) is not None

    def _state(self) -> str:
        """``"run"`` (a run store), ``"empty"`` (nothing there) or ``"foreign"`` (anything else)."""
        if _root_attrs(self._fs, self._path) is not None:
            return "run"
        if not self._fs.exists(self._path):
            return "empty"
        if self._fs.isfile(self._path) or self._fs.ls(self._path, detail=False):
            return "foreign"
        return "empty"

    def _foreign_message(self) -> str:
        if self._fs.isfile(self._path):
            return f"output path {self.url!r} is a file, not a run store; choose another --out"
        if self._fs.exists(self._path + "/zarr.json"):
            return (
                f"output path {self.url!r} is a Zarr store that mosaicflow did not make; it is "
                "left untouched: choose another --out"
            )
        names = sorted(e.rsplit("/", 1)[-1] for e in self._fs.ls(self._path, detail=False))
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return (
            f"output path {self.url!r} is a folder that is not a run store (it holds "
            f"{len(names)} entries: {shown}); mosaicflow never writes into or deletes it: "
            "choose another --out"
        )

    def _foreign_entries(self, *, raise_error: bool) -> dict[str, str]:
        """The store's root entries by name; with ``raise_error``, refuse any a run does not
        write."""
        entries = {e.rsplit("/", 1)[-1]: e for e in self._fs.ls(self._path, detail=False)}
        foreign = sorted(set(entries) - RUN_ENTRIES)
        if foreign and raise_error:
            raise StoreError(
                f"run store {self.url!r} also holds entries a run does not write "
                f"({', '.join(foreign)}); it is not replaced: move them away or choose "
                "another --out"
            )
        return entries

    def _clear(self) -> None:
        entries = self._foreign_entries(raise_error=True)
        for name in RUN_ENTRIES & set(entries):
            self._fs.rm(entries[name], recursive=True)

    # -- run attributes -------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """The ``mosaicflow`` attributes: version, config, stages, provenance."""
        return dict(self.root.attrs.get("mosaicflow", {}))

    def update_meta(self, **values: Any) -> None:
        """Merge ``values`` into the ``mosaicflow`` attributes."""
        meta = self.meta
        meta.update(values)
        self.root.attrs["mosaicflow"] = meta

    def stages(self) -> dict[str, dict[str, Any]]:
        """Each stage's recorded status, timings and details."""
        return dict(self.meta.get("stages", {}))

    def stage_done(self, stage: str) -> bool:
        """Whether ``stage`` is recorded as done."""
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
        chunk: int = DEFAULT_CHUNK_PX,
        runner: Runner | None = None,
        label: bool = False,
    ) -> None:
        """Write ``image`` as an OME-Zarr multiscale image at ``name`` (e.g. ``labels/particles``),
        replacing any earlier one; see :func:`mosaicflow.io.ome.write_multiscale`."""
        if name in self.root:
            del self.root[name]
        group = self.root.require_group(name)
        ome = write_multiscale(
            group, image, name=name, chunk=chunk, runner=runner or Runner(), label=label
        )
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
        """Whether image ``name`` (e.g. ``"mosaic"``, ``"labels/particles"``) has a level 0."""
        return name in self.root and "0" in self.root[name]

    def image_levels(self, name: str) -> list[int]:
        """Pyramid levels of image ``name`` both declared in its metadata and stored."""
        if name not in self.root:
            return []
        group: Any = self.root[name]
        try:
            declared = group.attrs["ome"]["multiscales"][0]["datasets"]
        except (KeyError, IndexError):
            declared = [{"path": "0"}]
        paths = {str(d.get("path")) for d in declared}
        return sorted(int(p) for p in paths & set(group.array_keys()) if p.isdigit())

    def open_level(self, name: str, level: int = 0) -> zarr.Array:
        """The stored Zarr array of one pyramid level, for windowed reads without Dask."""
        if not self.has_image(name) or str(level) not in self.root[name]:
            raise StoreError(f"run store {self.url!r} has no level {level} of image {name!r}")
        return self.root[name][str(level)]

    def image_transform(self, name: str, level: int = 0) -> tuple[list[float], list[float]]:
        """``(scale, translation)`` in nm of one level, from its OME-Zarr metadata."""
        if not self.has_image(name):
            raise StoreError(f"run store {self.url!r} has no image {name!r}")
        group: Any = self.root[name]
        ds = group.attrs["ome"]["multiscales"][0]["datasets"][level]["coordinateTransformations"]
        return list(ds[0]["scale"]), list(ds[1]["translation"])

    def read_image(self, name: str, level: int = 0) -> xr.DataArray:
        """Return level ``level`` of the stored image ``name`` as a Dask-backed DataArray."""
        if not self.has_image(name):
            raise StoreError(f"run store {self.url!r} has no image {name!r}")
        group: Any = self.root[name]
        arr = da.from_zarr(group[str(level)])
        scale, shift = self.image_transform(name, level)
        coords = {
            "y": shift[0] + np.arange(arr.shape[0]) * scale[0],
            "x": shift[1] + np.arange(arr.shape[1]) * scale[1],
        }
        attrs = dict(group.attrs.get("mosaicflow", {}))
        attrs["pixel_size_nm"] = list(scale)
        return xr.DataArray(
            arr, dims=("y", "x"), coords=coords, name=name.split("/")[-1], attrs=attrs
        )

    # -- scratch --------------------------------------------------------------------------
    def scratch_array(
        self, name: str, *, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any
    ) -> zarr.Array:
        """A fresh array ``scratch/<name>`` for a stage's intermediate data (replaces any old)."""
        group = self.root.require_group("scratch")
        if name in group:
            del group[name]
        return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype)

    def remove_scratch(self) -> None:
        """Delete ``scratch/`` and everything in it."""
        if "scratch" in self.root:
            del self.root["scratch"]

    # -- tables ---------------------------------------------------------------------------
    def table_path(self, name: str) -> str:
        """URL of table ``name`` (a Parquet file, or a folder of parts written by workers)."""
        return f"{self.url}/tables/{name}.parquet"

    def write_table(self, name: str, table: Any, *, runner: Runner | None = None) -> str:
        """Write a pandas DataFrame (one file) or a Dask DataFrame (one part per partition,
        written by the workers through ``runner``), replacing any earlier table ``name``."""
        self.remove_table(name)
        path = self.table_path(name)
        options = self.storage_options or None
        if isinstance(table, pd.DataFrame):
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            table.to_parquet(path, index=False, storage_options=options)
        else:
            written = table.to_parquet(
                path, write_index=False, compute=False, storage_options=options
            )
            (runner or Runner()).compute(written, name)
        return path

    def has_table(self, name: str) -> bool:
        """Whether table ``name`` is stored."""
        return bool(self._fs.exists(self.table_path(name)))

    def remove_table(self, name: str) -> None:
        """Delete table ``name`` if it is stored."""
        path = self.table_path(name)
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)

    def _dataset(self, name: str) -> Any:
        import pyarrow.dataset as ds

        if not self.has_table(name):
            raise StoreError(f"run store {self.url!r} has no table {name!r}")
        fs, path = fsspec.core.url_to_fs(self.table_path(name), **self.storage_options)
        return ds.dataset(path, filesystem=fs, format="parquet")

    def table_columns(self, name: str) -> list[str]:
        """Column names of table ``name``, from its Parquet schema (reads no data)."""
        return list(self._dataset(name).schema.names)

    def count_rows(self, name: str) -> int:
        """Rows of a stored table, from the Parquet footers (reads no data)."""
        return int(self._dataset(name).count_rows())

    def read_table(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Table ``name`` as pandas, sorted by ``label`` where it has one.

        ``columns`` reads only those (each must exist), which keeps a million-row table with a
        hundred columns small in memory.
        """
        if not self.has_table(name):
            raise StoreError(f"run store {self.url!r} has no table {name!r}")
        table = pd.read_parquet(
            self.table_path(name),
            columns=None if columns is None else list(columns),
            storage_options=self.storage_options or None,
        )
        # A table written by the workers comes in chunk order, one part per chunk.
        if "label" in table.columns and not table["label"].is_monotonic_increasing:
            table = table.sort_values("label", ignore_index=True)
        return table

    # -- report files ---------------------------------------------------------------------
    def report_path(self, name: str) -> str:
        """URL of file ``name`` of the run's report."""
        return f"{self.url}/report/{name}"

    def clear_report(self) -> None:
        """Remove the report folder (a rerun must not leave an earlier run's figures behind)."""
        path = f"{self.url}/report"
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)

    def write_report_file(self, name: str, data: bytes | str) -> str:
        """Write ``report/<name>`` (bytes, or text as UTF-8); returns its URL."""
        path = self.report_path(name)
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        payload = data.encode() if isinstance(data, str) else data
        with self._fs.open(path, "wb") as fh:
            fh.write(payload)
        return path

    def read_report_json(self, name: str) -> Any:
        """Parse ``report/<name>`` as JSON."""
        import json

        path = self.report_path(name)
        if not self._fs.exists(path):
            raise StoreError(f"run store {self.url!r} has no report file {name!r}")
        with self._fs.open(path, "rb") as fh:
            return json.loads(fh.read())


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
