"""The run store: one Zarr v3 group per run holding images, tables, status and provenance.

Layout (see docs/ARCHITECTURE.md): the store's root is the mosaic as an OME-Zarr 0.5 image
(levels ``0 .. N``, each next level 2x smaller) with ``labels/particles`` as its NGFF labels;
``denoised/`` and ``probability/`` are further multiscale images on the same grid;
``tables/*.parquet`` are Parquet files; the root ``zarr.json`` attributes hold ``ome`` (the
mosaic's multiscales) and ``mosaicflow`` (version, config, per-stage status and timings). A stage
is marked done only after every chunk it writes is written.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import xarray as xr
import zarr

from mosaicflow.config import DEFAULT_CHUNK_PX
from mosaicflow.errors import StoreError
from mosaicflow.io.chunk_io import lazy
from mosaicflow.io.chunk_writes import ChunkSummaries, missing_chunks
from mosaicflow.io.layout import (
    IMAGE_ATTRS,
    IMAGE_STAGES,
    IMAGES,
    INTERIOR_IMAGE,
    LABELS,
    LOCK_NAME,
    ROOT_IMAGE,
    RUN_FORMAT,
    TABLE_STAGES,
    foreign_message,
    is_run_entry,
    root_attrs,
    run_entries,
    target_state,
)
from mosaicflow.io.ome import OME_VERSION, image_codecs, write_multiscale, write_multiscales
from mosaicflow.io.remote import check_access, is_url
from mosaicflow.io.tables import TableMixin
from mosaicflow.runner import Runner


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RunStore(TableMixin):
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
        fsspec options of a remote store (``endpoint_url``, ``key``, ``secret``, ...): every
        writer and reader of the store uses them (Zarr, Parquet through pandas, pyarrow and
        Dask, report files, the lock).

    Raises
    ------
    StoreError
        ``url`` holds something mosaicflow did not make (a folder of other files, another
        program's Zarr store); it is never written into or deleted. Or, with ``"r"``, there is no
        run store at ``url``. Or the storage refuses access (wrong credentials or endpoint),
        named with the URL.

    Notes
    -----
    A run store is recognised by the ``mosaicflow`` attributes of its root group, written when
    the store is created. Replacing one (``mode="w"``) removes only the entries a run writes
    (:data:`mosaicflow.io.layout.RUN_ENTRIES`) and refuses if anything else lies beside them.
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
        if is_url(self.url):  # a refused request is named here, not deep inside a stage
            check_access(fs, path, self.url, "run store", StoreError)
        state = target_state(self._fs, self._path)
        if state == "foreign":
            raise StoreError(foreign_message(self._fs, self._path, self.url))
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
        elif mode == "a" and self.meta.get("format") != RUN_FORMAT:
            raise StoreError(
                f"run store {self.url!r} was written by an earlier mosaicflow (its mosaic is in "
                "mosaic/, not at the root); it can be read but not continued: use --overwrite "
                "or another --out"
            )

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
        if is_url(probe.url):
            check_access(probe._fs, probe._path, probe.url, "run store", StoreError)
        state = target_state(probe._fs, probe._path)
        if state == "foreign":
            raise StoreError(foreign_message(probe._fs, probe._path, probe.url))
        if state == "run" and replace:
            run_entries(probe._fs, probe._path, probe.url)
        return state == "run"

    @classmethod
    def is_run_store(cls, url: str, *, storage_options: dict[str, Any] | None = None) -> bool:
        """Whether ``url`` holds a run store that mosaicflow made."""
        fs, path = fsspec.core.url_to_fs(str(url).rstrip("/"), **(storage_options or {}))
        return root_attrs(fs, path) is not None

    def _clear(self) -> None:
        entries = run_entries(self._fs, self._path, self.url)
        for name, path in entries.items():
            if is_run_entry(name) and name != LOCK_NAME:  # the lock is its holder's
                self._fs.rm(path, recursive=True)

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

    def missing_outputs(self, stage: str) -> str | None:
        """What a stage recorded as done has lost since (chunk files of its images, parts of
        its tables), in words, or None when all of it is there."""
        lost = []
        record = self.stages().get(stage, {})
        images = [image for image, owner in IMAGE_STAGES.items() if owner == stage]
        if stage == "probability" and record.get("segmenter") == "instances":
            images.append(INTERIOR_IMAGE)
        for image in images:
            missing = self.missing_image_chunks(image)
            lost += [f"{n} chunk(s) of {image} level {level}" for level, n in missing.items()]
        for table, owner in TABLE_STAGES.items():
            if owner != stage or (table == "pairs" and not record.get("registered")):
                continue
            if table == "ground_truth":
                continue  # only synthetic inputs have one
            expected = record.get("table_parts", {}).get(table)
            found = self.table_parts(table)
            if found == 0 or (expected is not None and found != expected):
                lost.append(f"table {table} ({found} of {expected or 'its'} part(s))")
        return "; ".join(lost) or None

    # -- images ---------------------------------------------------------------------------
    def _group(self, name: str) -> Any:
        """The Zarr group of image ``name``, or None; the mosaic is the root (or ``mosaic/`` in a
        store of the earlier layout, which stays readable)."""
        if name == ROOT_IMAGE and "ome" in self.root.attrs:
            return self.root
        return self.root[name] if name in self.root else None

    def write_image(
        self,
        name: str,
        image: xr.DataArray,
        *,
        chunk: int = DEFAULT_CHUNK_PX,
        runner: Runner | None = None,
        label: bool = False,
        resume: bool = False,
        counts: dict[str, Any] | None = None,
        summaries: ChunkSummaries | None = None,
    ) -> int:
        """Write ``image`` as an OME-Zarr multiscale image ``name``; returns the chunks written.
        ``counts``: a dict that receives level 0's pixels per value, counted as they are
        written, for an 8-bit image written whole; ``summaries``: each level-0 chunk
        summarised as it is written (both: :func:`mosaicflow.io.chunk_writes.store_array`).

        ``"mosaic"`` goes to the store's root (the store is that OME-Zarr image), labels to
        ``labels/<name>`` under it as NGFF image labels, the other layers to groups of their own
        (see :func:`mosaicflow.io.ome.write_multiscale`). Each written chunk is flagged in
        ``progress/<name>/<level>``. Without ``resume`` an earlier image is replaced; with it,
        the chunks an interrupted write already flagged are kept and only the others written.
        """
        group, progress = self._image_group(name, resume=resume)
        ome, written = write_multiscale(
            group,
            image,
            name=name,
            chunk=chunk,
            runner=runner or Runner(),
            label=label,
            progress=progress,
            resume=resume,
            counts=counts,
            summaries=summaries,
        )
        if label:
            ome["image-label"] = {"version": OME_VERSION, "source": {"image": "../../"}}
            labels_group = self.root.require_group("labels")
            names = set(labels_group.attrs.get("ome", {}).get("labels", []))
            labels_group.attrs["ome"] = {
                "version": OME_VERSION,
                "labels": sorted(names | {name.split("/")[-1]}),
            }
        group.attrs.update({"ome": ome, IMAGE_ATTRS: dict(image.attrs)})
        return written

    def write_images(
        self,
        images: dict[str, xr.DataArray],
        *,
        chunk: int = DEFAULT_CHUNK_PX,
        runner: Runner | None = None,
        counts: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, int]:
        """Write several images (not labels) whose Dask graphs share work, as
        :meth:`write_image` writes each afresh, with their full-resolution levels in one
        computation so the shared part runs once (e.g. the mosaic and its denoised version
        from one pass over the tiles). ``counts``: per name, as :meth:`write_image`'s.
        Returns the chunks written per name."""
        groups = {name: self._image_group(name, resume=False) for name in images}
        results = write_multiscales(
            [(groups[n][0], image, n, groups[n][1]) for n, image in images.items()],
            chunk=chunk,
            runner=runner or Runner(),
            counts=counts,
        )
        for (name, image), (ome, _) in zip(images.items(), results, strict=True):
            groups[name][0].attrs.update({"ome": ome, IMAGE_ATTRS: dict(image.attrs)})
        return {name: written for name, (_, written) in zip(images, results, strict=True)}

    def _image_group(self, name: str, *, resume: bool) -> tuple[zarr.Group, zarr.Group]:
        """The group image ``name`` is written to (an earlier image there removed unless
        resuming) and its progress flags' group."""
        if name == ROOT_IMAGE:
            group = self.root
            # Probed by name: listing the root would meet the tables' and report's files.
            level = 0
            while not resume and str(level) in group:
                del group[str(level)]
                level += 1
        else:
            if name in self.root and not resume:
                del self.root[name]
            group = self.root.require_group(name)
        return group, self.root.require_group(f"progress/{name}")

    def missing_image_chunks(self, name: str) -> dict[int, int]:
        """Per level of image ``name``, how many chunk files are missing (levels with none
        missing are left out; an image not stored at all counts its level 0 as one)."""
        group = self._group(name)
        if group is None or "0" not in group:
            return {0: 1}
        out = {}
        for level in self.image_levels(name):
            target = group[str(level)]
            base = f"{self._path}/{target.path}".rstrip("/")
            stored = {
                p[len(base) + 1 :] for p in self._fs.find(base) if not p.endswith("zarr.json")
            }
            missing = missing_chunks(target, stored)
            if missing:
                out[level] = len(missing)
        return out

    def set_label_classes(
        self, name: str, labels: Sequence[int], classes: Sequence[str], colors: dict[str, str]
    ) -> None:
        """Record each label's class and its class colour (``#rrggbb``) in the NGFF image-label
        metadata of ``labels/<name>`` (``colors`` and ``properties``), as viewers read them."""
        group = self._group(f"labels/{name}")
        if group is None:
            raise StoreError(f"run store {self.url!r} has no labels {name!r}")

        def rgba(hex_color: str) -> list[int]:
            value = hex_color.lstrip("#")
            return [int(value[i : i + 2], 16) for i in (0, 2, 4)] + [255]

        ome = dict(group.attrs["ome"])
        ome["image-label"] = {
            **ome["image-label"],
            "colors": [
                {"label-value": int(v), "rgba": rgba(colors[c])}
                for v, c in zip(labels, classes, strict=True)
            ],
            "properties": [
                {"label-value": int(v), "class": str(c)}
                for v, c in zip(labels, classes, strict=True)
            ],
        }
        group.attrs["ome"] = ome

    def has_image(self, name: str) -> bool:
        """Whether image ``name`` (e.g. ``"mosaic"``, ``"labels/particles"``) has a level 0."""
        group = self._group(name)
        return group is not None and "0" in group

    def image_levels(self, name: str) -> list[int]:
        """Pyramid levels of image ``name`` both declared in its metadata and stored."""
        group = self._group(name)
        if group is None:
            return []
        try:
            declared = group.attrs["ome"]["multiscales"][0]["datasets"]
        except (KeyError, IndexError):
            declared = [{"path": "0"}]
        # Each declared path probed by name: the root also holds non-Zarr folders (tables).
        paths = {str(d.get("path")) for d in declared}
        return sorted(int(p) for p in paths if p.isdigit() and p in group)

    def open_level(self, name: str, level: int = 0) -> zarr.Array:
        """The stored Zarr array of one pyramid level, for windowed reads without Dask."""
        group = self._group(name)
        if group is None or str(level) not in group:
            raise StoreError(f"run store {self.url!r} has no level {level} of image {name!r}")
        return group[str(level)]

    def image_transform(self, name: str, level: int = 0) -> tuple[list[float], list[float]]:
        """``(scale, translation)`` in nm of one level, from its OME-Zarr metadata."""
        if not self.has_image(name):
            raise StoreError(f"run store {self.url!r} has no image {name!r}")
        group = self._group(name)
        ds = group.attrs["ome"]["multiscales"][0]["datasets"][level]["coordinateTransformations"]
        return list(ds[0]["scale"]), list(ds[1]["translation"])

    def read_image(self, name: str, level: int = 0, *, block: int = 1) -> xr.DataArray:
        """Return level ``level`` of the stored image ``name`` as a Dask-backed DataArray
        (coordinates in nm, with ``units`` attributes), one Dask chunk per ``block`` x
        ``block`` stored chunks."""
        stored = self.open_level(name, level)
        arr = lazy(stored, tuple(int(c) * int(block) for c in stored.chunks))
        scale, shift = self.image_transform(name, level)
        coords = {
            dim: (dim, shift[i] + np.arange(arr.shape[i]) * scale[i], {"units": "nm"})
            for i, dim in enumerate(("y", "x"))
        }
        group = self._group(name)
        attrs = dict(group.attrs.get(IMAGE_ATTRS, {}))
        if not attrs and group is not self.root:
            attrs = dict(group.attrs.get("mosaicflow", {}))  # the earlier layout's key
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
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, compressors=image_codecs()
        )

    def remove_scratch(self) -> None:
        """Delete ``scratch/`` and everything in it."""
        if "scratch" in self.root:
            del self.root["scratch"]

    def _folder_group(self, name: str) -> None:
        """Make ``name`` (a folder of files, not arrays) a Zarr group, so that listing the
        store's root meets only Zarr nodes; its ``mosaicflow`` attribute says what it holds."""
        if name not in self.root:
            self.root.require_group(name).attrs["mosaicflow"] = {"holds": f"{name} files"}

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
        self._folder_group("report")
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
    storage_options : dict, optional
        fsspec options of a remote store (``endpoint_url``, ``key``, ``secret``, ...).

    Returns
    -------
    xarray.Dataset
        Variables ``mosaic``, ``denoised``, ``probability``, ``labels`` (those present), Dask
        backed, dims ``("y", "x")`` with coordinates in nm; ``attrs`` carry the run's metadata.
    """
    store = RunStore(url, mode="r", storage_options=storage_options)
    stages = store.stages()
    variables, unfinished = {}, []
    for path in [*IMAGES, *(f"labels/{n}" for n in LABELS)]:
        if not store.has_image(path):
            continue
        status = stages.get(IMAGE_STAGES.get(path, ""), {}).get("status")
        if status not in (None, "done"):  # half-written: never served
            unfinished.append(f"{path} (stage {IMAGE_STAGES[path]!r} {status})")
            continue
        name = path.split("/")[-1]
        variables["labels" if name == "particles" else name] = store.read_image(path)
    if unfinished:
        warnings.warn(
            f"run store {store.url!r}: left out of the dataset because their stage is not done: "
            f"{', '.join(unfinished)}; finish the run with --resume",
            UserWarning,
            stacklevel=2,
        )
    return xr.Dataset(variables, attrs={**store.meta, "unfinished": unfinished})
