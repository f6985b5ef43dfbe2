"""The run store's tables: Parquet files under ``tables/`` (one file, or a folder of parts
written by the workers), with the columns' units in their schema metadata. Mixed into
:class:`mosaicflow.io.store.RunStore`, the only door to a store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fsspec
import pandas as pd

from mosaicflow.errors import StoreError
from mosaicflow.io.layout import TABLE_STAGES
from mosaicflow.runner import Runner


class TableMixin:
    """Table methods of :class:`mosaicflow.io.store.RunStore` (which provides ``url``,
    ``storage_options``, ``_fs`` and ``_folder_group``)."""

    url: str
    storage_options: dict[str, Any]
    _fs: Any

    def _folder_group(self, name: str) -> None:  # provided by RunStore
        raise NotImplementedError

    def stages(self) -> dict[str, dict[str, Any]]:
        """Each stage's record (provided by the run store)."""
        raise NotImplementedError

    def _check_finished(self, name: str) -> None:
        """Refuse a table whose stage is not done: a half-written table is never served."""
        stage = TABLE_STAGES.get(name)
        if stage is None:
            return
        status = self.stages().get(stage, {}).get("status")
        # no record: a table written outside the pipeline (library use), served as it is
        if status not in (None, "done"):
            raise StoreError(
                f"run store {self.url!r}: table {name!r} is not complete (stage {stage!r} is "
                f"{status}); finish the run with --resume"
            )

    def table_parts(self, name: str) -> int:
        """Number of stored Parquet files of table ``name`` (1 for a single file)."""
        path = self.table_path(name)
        if not self._fs.exists(path):
            return 0
        if not self._fs.isdir(path):
            return 1
        return sum(1 for p in self._fs.ls(path, detail=False) if p.endswith(".parquet"))

    @property
    def _pandas_options(self) -> dict[str, Any] | None:
        """``storage_options`` for pandas: a dict for a URL, even an empty one (given None,
        pandas hands an ``s3://`` URL to pyarrow's own S3 client, which ignores fsspec's
        endpoint and credentials), None for a local path (which pandas refuses options for)."""
        return dict(self.storage_options) if "://" in self.url else None

    def table_path(self, name: str) -> str:
        """URL of table ``name`` (a Parquet file, or a folder of parts written by workers)."""
        return f"{self.url}/tables/{name}.parquet"

    def write_table(
        self,
        name: str,
        table: Any,
        *,
        runner: Runner | None = None,
        metadata: dict[bytes, bytes] | None = None,
    ) -> str:
        """Write a pandas DataFrame (one file) or a Dask DataFrame (one part per partition,
        written by the workers through ``runner``), replacing any earlier table ``name``.
        ``metadata`` goes into the Parquet schema of every part (e.g. the columns' units)."""
        self.remove_table(name)
        self._folder_group("tables")
        path = self.table_path(name)
        options = self._pandas_options
        if isinstance(table, pd.DataFrame):
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrow = pa.Table.from_pandas(table, preserve_index=False)
            if metadata:
                arrow = arrow.replace_schema_metadata({**arrow.schema.metadata, **metadata})
            with self._fs.open(path, "wb") as fh:
                pq.write_table(arrow, fh)
        else:
            written = table.to_parquet(
                path,
                write_index=False,
                compute=False,
                storage_options=options,
                custom_metadata=metadata or None,
                # Zero-padded, so that a reader listing the folder takes the parts in order.
                name_function=lambda i: f"part.{i:06d}.parquet",
            )
            (runner or Runner()).compute(written, name)
        return path

    def write_table_parts(
        self, name: str, table: Any, *, runner: Runner | None = None, resume: bool = False
    ) -> int:
        """Write a Dask DataFrame as one Parquet part per partition, each written to a
        temporary name and then moved into place, so a part that exists is whole; returns the
        parts written now.

        With ``resume`` the parts already there are kept and their partitions not computed
        again (an interrupted write continues); without it an earlier table is replaced. Every
        part has the partitions' common schema (from the table's ``_meta``).
        """
        import dask
        import pyarrow as pa

        if not resume:
            self.remove_table(name)
        self._folder_group("tables")
        folder = self.table_path(name)
        self._fs.makedirs(folder, exist_ok=True)
        schema = pa.Schema.from_pandas(table._meta, preserve_index=False)
        have = set(self._fs.ls(folder, detail=False)) if resume else set()
        have = {p.rstrip("/").rsplit("/", 1)[-1] for p in have}
        parts = table.to_delayed()
        todo = [
            dask.delayed(_write_part, pure=False)(
                part, self._fs, f"{folder}/part.{i:06d}.parquet", schema
            )
            for i, part in enumerate(parts)
            if f"part.{i:06d}.parquet" not in have
        ]
        if todo:
            (runner or Runner()).compute(dask.delayed(len)(todo), name)
        return len(todo)

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

    def read_table_lazy(self, name: str, *, unfinished_ok: bool = False) -> Any:
        """Table ``name`` as a Dask DataFrame, one partition per stored part (each read with
        pandas, in the parts' order). A table of an unfinished stage is refused unless
        ``unfinished_ok`` (the stage writing it reads it back)."""
        import dask.dataframe as dd

        if not unfinished_ok:
            self._check_finished(name)
        if not self.has_table(name):
            raise StoreError(f"run store {self.url!r} has no table {name!r}")
        path = self.table_path(name)
        if self._fs.isdir(path):
            protocol = path.split("://", 1)[0] + "://" if "://" in path else ""
            parts = sorted(
                protocol + p for p in self._fs.ls(path, detail=False) if p.endswith(".parquet")
            )
        else:
            parts = [path]
        options = self._pandas_options
        meta = pd.read_parquet(parts[0], storage_options=options).iloc[:0]
        return dd.from_map(_read_part, parts, storage_options=options, meta=meta)

    def table_columns(self, name: str) -> list[str]:
        """Column names of table ``name``, from its Parquet schema (reads no data)."""
        return list(self._dataset(name).schema.names)

    def count_rows(self, name: str) -> int:
        """Rows of a stored table, from the Parquet footers (reads no data)."""
        return int(self._dataset(name).count_rows())

    def read_table(
        self, name: str, columns: Sequence[str] | None = None, *, unfinished_ok: bool = False
    ) -> pd.DataFrame:
        """Table ``name`` as pandas, sorted by ``label`` where it has one.

        ``columns`` reads only those (each must exist), which keeps a million-row table with a
        hundred columns small in memory. A table of a stage that is not done (running, failed,
        interrupted) is refused with :class:`StoreError` unless ``unfinished_ok`` (the stage
        writing it reads it back).
        """
        if not unfinished_ok:
            self._check_finished(name)
        if not self.has_table(name):
            raise StoreError(f"run store {self.url!r} has no table {name!r}")
        table = pd.read_parquet(
            self.table_path(name),
            columns=None if columns is None else list(columns),
            storage_options=self._pandas_options,
        )
        # A table written by the workers comes in chunk order, one part per chunk.
        if "label" in table.columns and not table["label"].is_monotonic_increasing:
            table = table.sort_values("label", ignore_index=True)
        return table


def _read_part(path: str, storage_options: dict[str, Any] | None) -> pd.DataFrame:
    return pd.read_parquet(path, storage_options=storage_options)


def _write_part(frame: pd.DataFrame, fs: Any, path: str, schema: Any) -> str:
    """One Parquet part, written under a temporary name and moved into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.tmp"  # hidden: Parquet readers skip it while it is incomplete
    with fs.open(tmp, "wb") as fh:
        pq.write_table(arrow, fh)
    fs.mv(tmp, path)
    return path
