"""The whole job as stages run against a run store and a Dask client, resumable.

Each stage reads what earlier stages stored, writes its own output chunk by chunk from the
workers, and is marked done in the store only after all of it is written. ``resume`` skips
stages already marked done; a failed or interrupted stage is simply run again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from mosaicflow import __version__
from mosaicflow._shared.dashboard import dashboard_link
from mosaicflow._shared.workers import IMPORT_THREAD
from mosaicflow.config import Config
from mosaicflow.config.values import config_differences, redact_options
from mosaicflow.errors import ConfigError, Interrupted, StoreError, TileSetError
from mosaicflow.io.lock import StoreLock
from mosaicflow.io.remote import RemotePath, is_url, register_options, storage_errors
from mosaicflow.io.store import RunStore
from mosaicflow.io.tiles import TileSet, read_tileset
from mosaicflow.pipeline.stages import StageMixin
from mosaicflow.runner import Runner

STAGES = (
    "tiles",
    "register",
    "mosaic",
    "denoised",
    "probability",
    "labels",
    "particles",
    "report",
)


class Pipeline(StageMixin):
    """Runs the stages of :data:`STAGES` for one configuration into one run store.

    Parameters
    ----------
    config : Config
        What to run.
    out : str
        Run store path or URL.
    client : distributed.Client, optional
        Where to compute; without one, Dask's local threaded scheduler.
    resume : bool
        Reuse a store from an earlier run with the same configuration, skipping finished stages.
    overwrite : bool
        Replace an existing store.
    console : rich.console.Console, optional
        Progress and messages; ``None`` is silent.
    break_lock : bool
        Break a stale lock on the store (its run is gone), never a live one.

    Notes
    -----
    The input and the store may be fsspec URLs (``s3://...``); ``config.storage.options``
    (endpoint, credentials) opens both, for every reader and writer, on the workers too.
    """

    def __init__(
        self,
        config: Config,
        out: str | os.PathLike[str],
        *,
        client: Any = None,
        resume: bool = False,
        overwrite: bool = False,
        console: Console | None = None,
        break_lock: bool = False,
    ) -> None:
        self.config = config
        self.out = str(out)
        self.client = client
        self.resume = resume
        self.overwrite = overwrite
        self.console = console
        self.runner = self._runner(client)
        self.store: RunStore | None = None
        self._tileset: TileSet | None = None
        self._checked = False
        self.break_lock = break_lock
        self._resuming = False  # the stage running now continues an interrupted one
        self._denoised_values: Any = None  # counts per value, from this run's denoised stage
        # the denoised stage's record when the mosaic stage wrote that image too
        self._denoised_with_mosaic: dict[str, Any] | None = None
        # labelling's step 1, done by this run's probability stage as it wrote each chunk
        self._label_summaries: tuple[tuple[int, int], Any] | None = None
        self._stop_after: str | None = None
        # the register stage's first pass, set computing by this run's tiles stage
        self._early_pairs: Any = None
        self.storage_options = dict(config.storage.options)
        # the store's own options: none for a local store (Zarr refuses unused ones)
        self._store_options = self.storage_options if is_url(self.out) else None
        # A tile set rebuilt from the store's metadata (no credentials there) finds them here.
        for url in (config.input, self.out):
            register_options(url or "", self.storage_options)

    def _runner(self, client: Any) -> Runner:
        cfg = self.config.cluster
        return Runner(
            client,
            console=self.console,
            no_worker_s=cfg.no_worker_timeout_s,
            stall_min_s=cfg.stall_timeout_s,
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], out: str, **kwargs: Any) -> Pipeline:
        """A pipeline for the YAML configuration at ``path`` (environment variables applied)."""
        return cls(Config.from_yaml(path).with_env(), out, **kwargs)

    # -- helpers --------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)

    def preflight(self) -> None:
        """Check everything a run needs before any heavy work or cluster start.

        Reads the tile headers once (the ``tiles`` stage reuses them), the whole checkpoint and
        classifier files (every weight and tree checked, nothing unpickled), and checks the
        output: a run store made with ``resume`` or
        ``overwrite`` where one exists, never a folder or store mosaicflow did not make, never
        the input or a folder holding its tiles, nor a path inside one. Raises a
        :class:`MosaicflowError` naming the file or option at fault; writes nothing.
        """
        cfg = self.config
        self._check_output()  # the given path, before reading anything
        if cfg.input is not None and self._tileset is None:
            self._tileset = read_tileset(
                cfg.input, **cfg.tiles.reader_options(), storage_options=self.storage_options
            )
            self._check_output()  # and every folder the tiles are in
        if cfg.segment.method == "model" and cfg.segment.model:
            from mosaicflow.segmentation.default import resolve_model_path
            from mosaicflow.segmentation.models import validate_checkpoint

            # every weight read, none half-valid
            validate_checkpoint(resolve_model_path(cfg.segment.model, what="segment.model"))
        if cfg.classify.model:
            from mosaicflow.classify.fileformat import validate_classifier_file

            validate_classifier_file(cfg.classify.model, trust_pickle=cfg.classify.trust_pickle)
        self._checked = True

    def _check_output(self) -> None:
        if self.config.input is not None:
            out = _location(self.out)
            given = _location(self.config.input)
            # The input folder, and every folder holding tiles (a layout file may name tiles
            # anywhere); a layout file or a single image is itself input, not its folder.
            folders = {given} if self._is_dir(self.config.input) else set()
            if self._tileset is not None:
                folders |= {_location(p, parent=True) for p in self._tileset.tiles["path"]}
            for folder in sorted(folders):
                if out == folder or _inside(out, folder) or _inside(folder, out):
                    raise StoreError(
                        f"--out {self.out!r} overlaps the input folder {folder!r}: "
                        "mosaicflow never writes into its input; choose an output outside it"
                    )
            if out == given:
                raise StoreError(f"--out {self.out!r} is the input {given!r}")
        exists = RunStore.check_target(
            self.out, replace=self.overwrite, storage_options=self._store_options
        )
        if exists and not (self.resume or self.overwrite):
            raise StoreError(
                f"run store {self.out!r} already exists: pass resume=True (--resume) to "
                "continue it or overwrite=True (--overwrite) to replace it"
            )

    def _is_dir(self, path: str) -> bool:
        """Whether the input is a folder (a URL asked with the run's storage options)."""
        if not is_url(path):
            return Path(path).expanduser().resolve().is_dir()
        with storage_errors(path, "input", TileSetError):
            return RemotePath(path, self.storage_options).is_dir()
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_store(self) -> RunStore:
        if not self._checked:
            self._check_output()
        store = RunStore(
            self.out, mode="w" if self.overwrite else "a", storage_options=self._store_options
        )
        current = self.config.to_dict()
        # Credentials never reach the store: the stored configuration has them as "***".
        current["storage"]["options"] = redact_options(current["storage"]["options"])
        # The chunk the run uses, also where the configuration leaves it to the segmenter.
        current["store"]["chunk"] = self.config.chunk_px
        stored = store.meta.get("config")
        if stored is not None:
            diffs = config_differences(stored, current)
            if diffs:
                raise StoreError(
                    f"run store {self.out!r} was made with another configuration; cannot resume "
                    f"({'; '.join(diffs)}); use --overwrite or another --out"
                )
        else:
            store.update_meta(
                version=__version__,
                config=current,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                stages={},
            )
        return store

    def _input_folder(self) -> Any:
        if self.config.input:
            from mosaicflow.io.remote import as_path

            return as_path(self.config.input, self.config.storage.options or None)
        from mosaicflow.synth.default import default_input

        return default_input(self.config, console=self.console)

    @property
    def tileset(self) -> TileSet:
        """The run's tile set (from preflight, the tiles stage, or the store when resuming)."""
        if self._tileset is None:
            assert self.store is not None
            self._tileset = TileSet.from_meta(  # the store holds no credentials: ours
                self.store.meta["tileset"],
                self.store.read_table("tiles"),
                storage_options=self.storage_options or None,
            )
        return self._tileset

    # -- driver ---------------------------------------------------------------------------
    def run(self, *, client: Any = None, stop_after: str | None = None) -> RunStore:
        """Run (or resume) every stage; returns the store. Raises on the first failed stage.

        Parameters
        ----------
        client : distributed.Client, optional
            Where to compute (replaces the one given to the constructor).
        stop_after : str, optional
            Last stage to run, one of :data:`STAGES`.
        """
        if stop_after is not None and stop_after not in STAGES:
            raise ConfigError(f"stop_after must be one of {STAGES}, got {stop_after!r}")
        if client is not None:
            self.client = client
            self.runner = self._runner(client)
        # while the workers run the first stages, in the order the stages need them
        _import_in_background(*BACKGROUND_IMPORTS)
        lock = StoreLock(self.out, storage_options=self._store_options)
        lock.acquire(break_stale=self.break_lock)  # one writer per store, named if refused
        lock.start_renewing()
        try:
            return self._run_stages(stop_after)
        except KeyboardInterrupt:  # between stages: nothing half-written
            raise Interrupted(
                "stopped by the user between stages; run again with --resume to go on"
            ) from None
        finally:
            self._drop_early_pairs()  # a run that stopped before its register stage
            lock.release()

    def _run_stages(self, stop_after: str | None) -> RunStore:
        self._stop_after = stop_after
        store = self.store = self._open_store()
        redo = self._verify_done(store) if self.resume else None
        if self.resume and store.stage_done("register") and redo not in STAGES[:2]:
            self._tileset = None  # the stored registered positions, not the headers' nominal ones
        if self.client is not None:
            link = dashboard_link(self.client)
            self._say(
                f"Dask dashboard: {link}"
                if link
                else "[dim]Dask dashboard: off (--dashboard starts one with a local cluster)[/dim]"
            )
        if not (store.stage_done("tiles") and store.stage_done("mosaic")):
            self._input_folder()  # synthesize the default input outside the timed stages
        for name in STAGES:
            if (
                self.resume
                and store.stage_done(name)
                and (redo is None or STAGES.index(name) < STAGES.index(redo))
            ):
                self._say(f"[dim]{name:<12} already done, skipped[/dim]")
            else:
                self._run_stage(store, name)
            if name == stop_after:
                break
        return store

    def _run_stage(self, store: RunStore, name: str) -> None:
        """Run one stage, recording it running, then done with its figures, or failed (or
        interrupted, resumable) with the reason."""
        partial = store.stages().get(name, {}).get("status") in ("running", "interrupted")
        self._resuming = self.resume and partial
        store.set_stage(name, "running", started_at=round(time.time(), 3))
        start = time.perf_counter()
        try:
            info = getattr(self, f"_stage_{name}")(store)
        except KeyboardInterrupt:
            store.set_stage(name, "interrupted", error="stopped by the user (Ctrl-C)")
            raise Interrupted(
                f"stopped by the user during stage {name!r}; what is written is kept: run "
                "again with --resume to go on"
            ) from None
        except BaseException as exc:
            store.set_stage(name, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        seconds = time.perf_counter() - start
        pixels = info.pop("pixels", 0)
        mpx = pixels / 1e6 / seconds if pixels and seconds > 0 else None
        store.set_stage(
            name,
            "done",
            seconds=round(seconds, 3),
            mpx_per_s=mpx,
            ended_at=round(time.time(), 3),
            **info,
        )

    def _verify_done(self, store: RunStore) -> str | None:
        """The first stage recorded done whose outputs are no longer all there (a deleted chunk
        or table part), or None; it and every stage after it are run again, never read as
        zeros."""
        for name in STAGES:
            if not store.stage_done(name):
                return None
            lost = store.missing_outputs(name)
            if lost:
                self._say(
                    f"[yellow]stage {name!r} was done but {lost}: it is run again, with every "
                    "stage after it[/yellow]"
                )
                return name
        return None


def _xarray_duck_arrays() -> None:
    """Build a DataArray with an index, as the mosaic stage first does: xarray then imports
    the duck-array packages it knows that are installed (pint's units: 0.4 s)."""
    import numpy as np
    import xarray as xr

    xr.DataArray(np.zeros(2), coords={"x": [0.0, 1.0]}, dims="x")


#: What :func:`_import_in_background` loads while the workers run the first stages, in the
#: order the stages need them: without it, each was imported by the driver's main thread when
#: its stage started, with the workers waiting (2026-11-29 on maps-120: xarray's duck arrays
#: 0.4 s, dask.dataframe 0.6 s, the segmentation package 0.1 s, docs/PERFORMANCE.md).
BACKGROUND_IMPORTS: tuple[str | Callable[[], None], ...] = (
    "mosaicflow.stitch",
    _xarray_duck_arrays,
    "mosaicflow.segmentation",
    "mosaicflow.measure",
    "dask.dataframe",
    "pyarrow.parquet",
    "mosaicflow.report.writer",
)


def _import_in_background(*modules: str | Callable[[], None]) -> None:
    """Import ``modules`` (names, or functions that import), in turn, in a daemon thread: the
    stages' imports (registration's SciPy parts, the report's Matplotlib and scikit-learn; over
    a second in all) then cost the driver nothing when their stage starts, since the driver
    mostly waits on the workers before it. Python's import lock makes a later import of the
    same module wait for this one."""
    import importlib
    import threading

    def load() -> None:
        for module in modules:
            try:
                module() if callable(module) else importlib.import_module(module)
            except Exception:
                pass  # the stage's own import reports it

    threading.Thread(target=load, name=IMPORT_THREAD, daemon=True).start()


def _location(path: Any, *, parent: bool = False) -> str:
    """A path or URL as comparable text: a local path resolved, a URL less a trailing slash;
    with ``parent``, its folder."""
    if is_url(path):
        text = str.__str__(str(path)).rstrip("/")
        return text.rsplit("/", 1)[0] if parent and "/" in text.split("://", 1)[1] else text
    resolved = Path(path).expanduser().resolve()
    return (resolved.parent if parent else resolved).as_posix()


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies below ``folder`` (both from :func:`_location`)."""
    return path.startswith(folder.rstrip("/") + "/")
