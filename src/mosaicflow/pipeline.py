"""The whole job as stages run against a run store and a Dask client, resumable.

Each stage reads what earlier stages stored, writes its own output chunk by chunk from the
workers, and is marked done in the store only after all of it is written. ``resume`` skips
stages already marked done; a failed or interrupted stage is simply run again.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
from rich.console import Console

from mosaicflow import __version__
from mosaicflow.config import Config
from mosaicflow.config.values import config_differences
from mosaicflow.errors import ConfigError, StoreError
from mosaicflow.io.store import RunStore
from mosaicflow.io.tiles import TileSet, read_tileset
from mosaicflow.runner import Runner
from mosaicflow.selection import (
    ECD,
    EDGE_FLAGS,
    MAX_LABEL_COLORS,
    UNFILTERED,
    listed,
    min_diameter_nm,
    probability_mean,
    selection_counts,
    sorted_by_label,
)

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


class Pipeline:
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
    ) -> None:
        self.config = config
        self.out = str(out)
        self.client = client
        self.resume = resume
        self.overwrite = overwrite
        self.console = console
        self.runner = Runner(client, console=console)
        self.store: RunStore | None = None
        self._tileset: TileSet | None = None
        self._checked = False

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

        Reads the tile headers once (the ``tiles`` stage reuses them), the checkpoint's and the
        classifier's headers, and checks the output: a run store made with ``resume`` or
        ``overwrite`` where one exists, never a folder or store mosaicflow did not make, never
        the input or a folder holding its tiles, nor a path inside one. Raises a
        :class:`MosaicflowError` naming the file or option at fault; writes nothing.
        """
        cfg = self.config
        self._check_output()  # the given path, before reading anything
        if cfg.input is not None and self._tileset is None:
            self._tileset = read_tileset(cfg.input, **cfg.tiles.reader_options())
            self._check_output()  # and every folder the tiles are in
        if cfg.segment.method == "model" and cfg.segment.model:
            from mosaicflow.segmentation import read_checkpoint_metadata

            read_checkpoint_metadata(cfg.segment.model)
        if cfg.classify.model:
            from mosaicflow.classify import check_loadable

            check_loadable(cfg.classify.model, trust_pickle=cfg.classify.trust_pickle)
        self._checked = True

    def _check_output(self) -> None:
        if self.config.input is not None and "://" not in self.out:
            out = Path(self.out).expanduser().resolve()
            given = Path(self.config.input).expanduser().resolve()
            # The input folder, and every folder holding tiles (a layout file may name tiles
            # anywhere); a layout file or a single image is itself input, not its folder.
            folders = {given} if given.is_dir() else set()
            if self._tileset is not None:
                folders |= {Path(p).resolve().parent for p in self._tileset.tiles["path"]}
            for folder in sorted(folders):
                if out == folder or folder in out.parents or out in folder.parents:
                    raise StoreError(
                        f"--out {self.out!r} overlaps the input folder {str(folder)!r}: "
                        "mosaicflow never writes into its input; choose an output outside it"
                    )
            if out == given:
                raise StoreError(f"--out {self.out!r} is the input {str(given)!r}")
        exists = RunStore.check_target(self.out, replace=self.overwrite)
        if exists and not (self.resume or self.overwrite):
            raise StoreError(
                f"run store {self.out!r} already exists: pass resume=True (--resume) to "
                "continue it or overwrite=True (--overwrite) to replace it"
            )

    def _open_store(self) -> RunStore:
        if not self._checked:
            self._check_output()
        store = RunStore(self.out, mode="w" if self.overwrite else "a")
        current = self.config.to_dict()
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

    def _input_folder(self) -> Path:
        if self.config.input:
            return Path(self.config.input)
        from mosaicflow.synth.default import default_input

        return default_input(self.config, console=self.console)

    @property
    def tileset(self) -> TileSet:
        """The run's tile set (from preflight, the tiles stage, or the store when resuming)."""
        if self._tileset is None:
            assert self.store is not None
            self._tileset = TileSet.from_meta(
                self.store.meta["tileset"], self.store.read_table("tiles")
            )
        return self._tileset

    # -- stages ---------------------------------------------------------------------------
    def _stage_tiles(self, store: RunStore) -> dict[str, Any]:
        folder = self._input_folder()
        # Headers read by preflight() are not read again.
        tileset = (
            self._tileset
            if self._tileset is not None
            else read_tileset(folder, **self.config.tiles.reader_options())
        )
        store.write_table("tiles", tileset.tiles)
        truth = folder / "ground_truth" / "particles.csv"
        if truth.exists():
            store.write_table("ground_truth", pd.read_csv(truth))
        store.update_meta(tileset=tileset.to_meta())
        self._tileset = tileset
        self._say(
            f"Read {len(tileset.tiles)} tiles ({tileset.rows}x{tileset.cols}, "
            f"{tileset.tile_shape[1]}x{tileset.tile_shape[0]} px, "
            f"{tileset.pixel_size_nm[1]:g} nm/px) from {folder}"
        )
        return {"pixels": tileset.n_pixels, "n_tiles": len(tileset.tiles)}

    def _stage_register(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.stitch import register_tileset

        cfg = self.config.stitch
        tiles, pairs, info = register_tileset(
            self.tileset, register=cfg.register, max_shift_px=cfg.max_shift_px, runner=self.runner
        )
        if pairs is not None:
            store.write_table("pairs", pairs)
        store.write_table("tiles", tiles)
        self._tileset = dataclasses.replace(self.tileset, tiles=tiles)
        return {"pixels": self.tileset.n_pixels if pairs is not None else 0, **info}

    def _stage_mosaic(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.stitch import equalize_tileset, fuse

        cfg = self.config.stitch
        gains, flat, info = None, None, {}
        if (cfg.equalize or cfg.flatfield) and len(self.tileset.tiles) > 1:
            gains, flat, info = equalize_tileset(
                self.tileset, flatfield=cfg.flatfield, runner=self.runner
            )
            if not cfg.equalize:
                gains = None
            else:
                tiles = self.tileset.tiles.assign(
                    gain=gains["gain"].to_numpy(), offset=gains["offset"].to_numpy()
                )
                store.write_table("tiles", tiles)
                self._tileset = dataclasses.replace(self.tileset, tiles=tiles)
        mosaic = fuse(
            self.tileset,
            chunks=self.config.store.chunk,
            blend=cfg.blend,
            gains=gains,
            flatfield=flat,
        )
        store.write_image("mosaic", mosaic, chunk=self.config.store.chunk, runner=self.runner)
        return {"pixels": int(mosaic.size), "shape": list(mosaic.shape), "blend": cfg.blend, **info}

    def _stage_denoised(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow import restoration

        cfg = self.config.denoise
        mosaic = store.read_image("mosaic")
        by_method: dict[str, dict[str, Any]] = {
            "gaussian": {"sigma": cfg.sigma},
            "median": {"size": cfg.size},
            "nl_means": {
                "patch_size": cfg.patch_size,
                "patch_distance": cfg.patch_distance,
                "h": cfg.h,
                "sigma": cfg.noise_sigma,
            },
            "none": {},
        }
        den, info = restoration.denoise(mosaic, method=cfg.method, **by_method[cfg.method])
        den.attrs.update(mosaic.attrs)
        if cfg.store_dtype == "input":
            den = restoration.to_storage_dtype(den, mosaic.dtype)
        store.write_image("denoised", den, chunk=self.config.store.chunk, runner=self.runner)
        return {"pixels": int(mosaic.size), "dtype": str(den.dtype), **info}

    def _stage_probability(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.stitch import coverage

        den = store.read_image("denoised")
        if self.config.segment.method == "model":
            prob, info = self._model_probability(den)
        else:
            from mosaicflow.segmentation import histogram, minority_polarity, threshold_otsu

            cfg = self.config.segment
            hist = histogram(den, nbins=cfg.nbins, runner=self.runner)
            threshold = threshold_otsu(nbins=cfg.nbins, hist=hist)
            polarity = cfg.polarity
            if polarity == "auto":
                polarity = minority_polarity(*hist, threshold)
                self._say(f"Polarity: {polarity} particles (the smaller side of the threshold)")
            particles = (den < threshold) if polarity == "dark" else (den > threshold)
            prob = (particles * 255).astype("uint8")
            info = {
                "segmenter": "otsu",
                "threshold": threshold,
                "threshold_units": "grey level of the denoised mosaic",
                "polarity": polarity,
                "polarity_source": "auto" if cfg.polarity == "auto" else "configured",
                "label_threshold_u8": 128,
            }
        # Pixels no tile covers are never particles, whatever the polarity.
        covered = coverage(self.tileset, chunks=den.data.chunks[0][0]).data
        prob = prob.copy(data=da.where(covered, prob.data, np.uint8(0)))
        prob.attrs.update(den.attrs, **info)
        # Resource annotations live on graph layers, which low-level fusion would merge away.
        routed = self.config.segment.method == "model" and bool(self.config.segment.resources)
        with dask.config.set({"optimization.fuse.active": False} if routed else {}):
            store.write_image(
                "probability", prob, chunk=self.config.store.chunk, runner=self.runner
            )
        return {"pixels": int(den.size), **info}

    def _model_probability(self, den: Any) -> tuple[Any, dict[str, Any]]:
        """Windowed model inference, stored as uint8 ``round(p * 255)``."""
        from mosaicflow.segmentation import predict, read_checkpoint_metadata

        cfg = self.config.segment
        path = str(Path(str(cfg.model)).expanduser().resolve())
        meta = read_checkpoint_metadata(path)
        if self.client is not None:
            from mosaicflow.segmentation._plugin import register_model_plugin

            register_model_plugin(self.client, path)  # one load per worker, at most
        prob = predict(
            den,
            path,
            window=cfg.window,
            overlap=cfg.overlap,
            batch_size=cfg.batch_size,
            tta=cfg.tta,
            device=cfg.device,
            resources=cfg.resources,
        )
        u8 = (prob * 255).round().astype("uint8")
        info = {
            "segmenter": "model",
            "model": path,
            "arch": meta.arch,
            "threshold": meta.threshold,
            "label_threshold_u8": max(1, round(meta.threshold * 255)),
        }
        return u8, info

    def _stage_labels(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.measure import label

        prob = store.read_image("probability")
        cut = int(prob.attrs.get("label_threshold_u8", 128))
        # Step 1's local labels wait in the store, not in worker memory, until step 3.
        chunk = self.config.store.chunk
        store.remove_scratch()
        scratch = store.scratch_array(
            "labels_local",
            shape=prob.shape,
            chunks=tuple(c[0] for c in prob.data.chunks),
            dtype="uint32",
        )
        labels = label(prob >= cut, connectivity=self.config.label.connectivity, scratch=scratch)
        labels.attrs.update(prob.attrs)
        store.write_image("labels/particles", labels, chunk=chunk, runner=self.runner, label=True)
        store.remove_scratch()
        return {"pixels": int(prob.size)}

    def _stage_particles(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.measure import regionprops_table, table_schema_metadata
        from mosaicflow.stitch import coverage

        labels = store.read_image("labels/particles")
        model = self.config.segment.method == "model"
        extra = {"raw": store.read_image("mosaic")}
        if model:  # with the threshold baseline the probability is 1 on every particle
            extra["probability"] = store.read_image("probability")
        table = regionprops_table(
            labels,
            store.read_image("denoised"),
            extra_intensity=extra,
            coverage=coverage(self.tileset, chunks=labels.data.chunks[0][0]),
            halo=self.config.measure.halo,
        )
        if model:
            table = table.map_partitions(probability_mean, meta=probability_mean(table._meta))
        # Every object is measured once into a scratch table; the listed ones are read back.
        store.write_table(UNFILTERED, table, runner=self.runner)
        info = self._select_particles(store, n_pixels=int(labels.size))
        table = store.read_table_lazy(UNFILTERED)
        table = table[listed(table, info["min_diameter_nm"], self.config.measure.edge_policy)]
        table = sorted_by_label(table, info["n_objects"])
        cfg = self.config.classify
        if cfg.model:
            from mosaicflow.classify import load, predict

            classifier = load(cfg.model, trust_pickle=cfg.trust_pickle)
            table = predict(table, classifier)
            info["classifier"] = classifier.summary()
        units = table_schema_metadata(table.columns, pixel_size_nm=labels.attrs["pixel_size_nm"])
        store.write_table("particles", table, runner=self.runner, metadata=units)
        store.remove_table(UNFILTERED)
        info["n_particles"] = store.count_rows("particles")
        if cfg.model:
            info.update(self._label_classes(store, info["n_particles"]))
        return {"pixels": int(labels.size), **info}

    def _label_classes(self, store: RunStore, n_particles: int) -> dict[str, Any]:
        """Each listed particle's class and class colour in the labels' NGFF metadata, so that
        a viewer colours the label image by class (up to :data:`MAX_LABEL_COLORS` particles)."""
        if n_particles > MAX_LABEL_COLORS:
            return {"label_colors": f"not written: {n_particles} particles > {MAX_LABEL_COLORS}"}
        from mosaicflow.report.plots import class_colors

        table = store.read_table("particles", columns=["label", "class"])
        names = sorted(table["class"].astype(str).unique())
        palette = dict(zip(names, class_colors(names), strict=True))
        store.set_label_classes(
            "particles", table["label"].tolist(), table["class"].astype(str).tolist(), palette
        )
        return {"label_colors": palette}

    def _select_particles(self, store: RunStore, *, n_pixels: int) -> dict[str, Any]:
        """Counts of the objects found, those too small, those at an edge; a warning when one
        object covers much of the mosaic."""
        cfg = self.config.measure
        objects = store.read_table(UNFILTERED, columns=[ECD, "num_pixels", *EDGE_FLAGS])
        info = selection_counts(
            objects,
            min_diameter_nm(cfg.min_size, self.tileset.pixel_size_nm),
            n_pixels=n_pixels,
            max_object_fraction=cfg.max_object_fraction,
            polarity=store.stages().get("probability", {}).get("polarity"),
        )
        info["edge_policy"] = cfg.edge_policy
        for warning in info.get("warnings", []):
            self._say(f"[yellow]warning:[/yellow] {warning}")
        return info

    def _stage_report(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.report import write_report

        summary = write_report(store)
        return {"pixels": 0, "n_particles": summary["particles"]["count"]}

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
            self.runner = Runner(client, console=self.console)
        store = self.store = self._open_store()
        if self.resume and store.stage_done("register"):
            self._tileset = None  # the stored registered positions, not the headers' nominal ones
        if self.client is not None:
            self._say(f"Dask dashboard: {self.client.dashboard_link}")
        if not (store.stage_done("tiles") and store.stage_done("mosaic")):
            self._input_folder()  # synthesize the default input outside the timed stages
        stages: dict[str, Callable[[RunStore], dict[str, Any]]] = {
            name: getattr(self, f"_stage_{name}") for name in STAGES
        }
        for name, fn in stages.items():
            if self.resume and store.stage_done(name):
                self._say(f"[dim]{name:<12} already done, skipped[/dim]")
            else:
                store.set_stage(name, "running")
                start = time.perf_counter()
                try:
                    info = fn(store)
                except BaseException as exc:
                    store.set_stage(name, "failed", error=f"{type(exc).__name__}: {exc}")
                    raise
                seconds = time.perf_counter() - start
                pixels = info.pop("pixels", 0)
                mpx = pixels / 1e6 / seconds if pixels and seconds > 0 else None
                store.set_stage(name, "done", seconds=round(seconds, 3), mpx_per_s=mpx, **info)
            if name == stop_after:
                break
        return store
