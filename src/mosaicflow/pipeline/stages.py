"""The pipeline's stages: each reads what earlier stages stored and writes its own output
into the run store, chunk by chunk from the workers, returning the figures its stage record
keeps. Mixed into :class:`mosaicflow.pipeline.Pipeline`, which runs them in order."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from mosaicflow.io.chunk_writes import ChunkSummaries
from mosaicflow.io.store import RunStore
from mosaicflow.io.tiles import read_tileset
from mosaicflow.pipeline.instances import (
    checkpoint_path,
    is_instance_checkpoint,
    model_for_workers,
    write_instance_labels,
    write_instance_probability,
)
from mosaicflow.selection import (
    ECD,
    EDGE_FLAGS,
    MAX_LABEL_COLORS,
    SORT_IN_MEMORY_ROWS,
    UNFILTERED,
    listed,
    min_diameter_nm,
    probability_mean,
    selection_counts,
    sorted_by_label,
)


class StageMixin:
    """``_stage_<name>(store) -> dict`` for every stage of
    :data:`mosaicflow.pipeline.STAGES`; the figures' ``pixels`` entry gives the stage's Mpx/s.
    Uses the pipeline's ``config``, ``runner``, ``tileset``, ``client``, ``_say``,
    ``_input_folder``, ``_resuming`` (the stage continues an interrupted one),
    ``_stop_after``, ``_early_pairs`` (the register stage's first pass, started by the tiles
    stage) and ``_denoised_values`` (the denoised mosaic's value counts, when this run's
    denoised stage counted them)."""

    def _stage_tiles(self, store: RunStore) -> dict[str, Any]:
        folder = self._input_folder()
        # Headers read by preflight() are not read again.
        tileset = (
            self._tileset
            if self._tileset is not None
            else read_tileset(folder, **self.config.tiles.reader_options())
        )
        from mosaicflow.io.tile_checks import check_tile_pixels, raise_for_tile_problems

        # Every tile read once: a blank, NaN or unreadable tile is named before the heavy work.
        problems = self.runner.compute(check_tile_pixels(tileset, compute=False), "check tiles")
        raise_for_tile_problems(problems, source=f"input {str(folder)!r}")
        # The register stage's pairs only read the tiles: they start now, and the workers
        # measure them while this stage writes its tables (a run that stops first drops them).
        self._early_pairs = self._start_registration(tileset)
        store.write_table("tiles", tileset.tiles)
        truth = folder / "ground_truth" / "particles.csv"
        if truth.exists():  # a local path or a URL (io.remote.RemotePath)
            with truth.open("rb") as fh:
                store.write_table("ground_truth", pd.read_csv(fh))
        store.update_meta(tileset=tileset.to_meta())
        self._tileset = tileset
        self._say(
            f"Read {len(tileset.tiles)} tiles ({tileset.rows}x{tileset.cols}, "
            f"{tileset.tile_shape[1]}x{tileset.tile_shape[0]} px, "
            f"{tileset.pixel_size_nm[1]:g} nm/px) from {folder}"
        )
        return {"pixels": tileset.n_pixels, "n_tiles": len(tileset.tiles)}

    def _start_registration(self, tileset: Any) -> Any:
        """The register stage's first pass set computing, when that stage runs next in this
        run and registers; else None."""
        cfg = self.config.stitch
        if not cfg.register or len(tileset.tiles) < 2 or self._stop_after == "tiles":
            return None
        from mosaicflow.stitch import first_pass

        lazy = first_pass(tileset, max_shift_px=cfg.max_shift_px, device=cfg.device)
        return self.runner.start(lazy)

    def _drop_early_pairs(self) -> None:
        early, self._early_pairs = self._early_pairs, None
        if early is not None:
            self.runner.cancel(early)

    def _stage_register(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.stitch import register_tileset

        cfg = self.config.stitch
        first, self._early_pairs = self._early_pairs, None
        tiles, pairs, info = register_tileset(
            self.tileset,
            register=cfg.register,
            max_shift_px=cfg.max_shift_px,
            device=cfg.device,
            runner=self.runner,
            first=first,
        )
        if pairs is not None:
            store.write_table("pairs", pairs)
        store.write_table("tiles", tiles)
        self._tileset = dataclasses.replace(self.tileset, tiles=tiles)
        return {"pixels": self.tileset.n_pixels if pairs is not None else 0, **info}

    def _stage_mosaic(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.stitch import equalize_tileset, estimate_flatfield, fuse

        cfg = self.config.stitch
        gains, flat, info = None, None, {}
        several = len(self.tileset.tiles) > 1
        if cfg.flatfield and several:
            flat = self.runner.compute(
                estimate_flatfield(self.tileset, compute=False), "flat-field"
            )
            info["flatfield_range"] = [float(flat.min()), float(flat.max())]
        if cfg.equalize and several:
            gains, found = equalize_tileset(self.tileset, flatfield=flat, runner=self.runner)
            info.update(found)
            tiles = self.tileset.tiles.assign(
                gain=gains["gain"].to_numpy(), offset=gains["offset"].to_numpy()
            )
            store.write_table("tiles", tiles)
            self._tileset = dataclasses.replace(self.tileset, tiles=tiles)
        if self._denoise_with_mosaic():
            # One pass: each chunk is fused with the filter's halo, then written and filtered
            # (no second read of the stored mosaic); the denoised stage then only records it.
            mosaic, written = self._mosaic_and_denoised(store, gains, flat)
        else:
            mosaic = fuse(
                self.tileset,
                chunks=self.config.chunk_px,
                blend=cfg.blend,
                gains=gains,
                flatfield=flat,
            )
            written = self._write_image(store, "mosaic", mosaic)
        return {
            "pixels": int(mosaic.size),
            "shape": list(mosaic.shape),
            "blend": cfg.blend,
            "chunks_written": written,
            **info,
        }

    def _denoise_with_mosaic(self) -> bool:
        """Whether the mosaic stage writes the denoised image too: a Gaussian filter (its halo
        comes with each fused chunk), a mosaic stage run afresh, and the denoised stage to
        follow in this run."""
        return (
            self.config.denoise.method == "gaussian"
            and not self._resuming
            and self._stop_after != "mosaic"
        )

    def _mosaic_and_denoised(
        self, store: RunStore, gains: Any, flat: Any
    ) -> tuple[xr.DataArray, int]:
        """Fuse, write and filter the mosaic in one computation (:meth:`_stage_denoised`'s
        result kept for it); returns the mosaic and its chunks written."""
        from mosaicflow import restoration
        from mosaicflow.stitch import fuse_overlapped

        cfg = self.config.denoise
        mosaic, blocks = fuse_overlapped(
            self.tileset,
            depth=restoration.gaussian_halo(cfg.sigma),
            chunks=self.config.chunk_px,
            blend=self.config.stitch.blend,
            gains=gains,
            flatfield=flat,
        )
        filtered, info = restoration.denoise(blocks, method="gaussian", sigma=cfg.sigma)
        den = xr.DataArray(
            filtered,
            dims=mosaic.dims,
            coords=mosaic.coords,
            name="denoised",
            # as the filter records it on the stored mosaic's attributes in the denoised stage
            attrs={**mosaic.attrs, "denoise": restoration.gaussian_record(cfg.sigma)},
        )
        if cfg.store_dtype == "input":
            den = restoration.to_storage_dtype(den, mosaic.dtype)
        counts: dict[str, Any] | None = {} if self.config.segment.method != "model" else None
        written = store.write_images(
            {"mosaic": mosaic, "denoised": den},
            chunk=self.config.chunk_px,
            runner=self.runner,
            counts=None if counts is None else {"denoised": counts},
        )
        self._denoised_values = (counts or {}).get("per_value")
        self._denoised_with_mosaic = {
            "pixels": 0,  # its time is the mosaic stage's
            "dtype": str(den.dtype),
            "chunks_written": written["denoised"],
            "written_by": "mosaic",
            **info,
        }
        return mosaic, written["mosaic"]

    def _write_image(self, store: RunStore, name: str, image: Any, **kwargs: Any) -> int:
        """Write one of the run's images at the store's chunk size; an interrupted stage being
        resumed keeps the chunks it had written. Returns the chunks written now."""
        return store.write_image(
            name,
            image,
            chunk=self.config.chunk_px,
            runner=self.runner,
            resume=self._resuming,
            **kwargs,
        )

    def _stage_denoised(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow import restoration

        done, self._denoised_with_mosaic = self._denoised_with_mosaic, None
        if done is not None:  # the mosaic stage wrote it, in the same pass
            return done
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
        # The threshold's histogram counted as the chunks are written (8-bit, written whole).
        counts: dict[str, Any] | None = {} if self.config.segment.method != "model" else None
        written = self._write_image(store, "denoised", den, counts=counts)
        self._denoised_values = (counts or {}).get("per_value")
        return {
            "pixels": int(mosaic.size),
            "dtype": str(den.dtype),
            "chunks_written": written,
            **info,
        }

    def _stage_probability(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.stitch import coverage

        den = store.read_image("denoised")
        # Pixels no tile covers are never particles, whatever the polarity.
        covered = coverage(self.tileset, chunks=den.data.chunks[0][0]).data
        if self.config.segment.method == "model" and is_instance_checkpoint(
            checkpoint_path(str(self.config.segment.model))
        ):
            return write_instance_probability(self, store, den, covered)
        if self.config.segment.method == "model":
            prob, info = self._model_probability(den)
        else:
            from mosaicflow.segmentation import histogram, minority_polarity, threshold_otsu

            cfg = self.config.segment
            if self._denoised_values is not None:  # counted by this run's denoised stage
                from mosaicflow.segmentation.threshold import histogram_of_values

                hist = histogram_of_values(self._denoised_values, den.dtype, nbins=cfg.nbins)
            else:
                hist = histogram(den, nbins=cfg.nbins, runner=self.runner)
            threshold = threshold_otsu(nbins=cfg.nbins, hist=hist)
            polarity = cfg.polarity
            if polarity == "auto":
                polarity = minority_polarity(*hist, threshold)
                self._say(f"Polarity: {polarity} particles (the smaller side of the threshold)")
            particles = (den < threshold) if polarity == "dark" else (den > threshold)
            prob = particles.astype(np.uint8) * np.uint8(255)  # no int64 array in between
            info = {
                "segmenter": "otsu",
                "threshold": threshold,
                "threshold_units": "grey level of the denoised mosaic",
                "polarity": polarity,
                "polarity_source": "auto" if cfg.polarity == "auto" else "configured",
                "label_threshold_u8": 128,
            }
        prob = prob.copy(data=da.where(covered, prob.data, np.uint8(0)))
        prob.attrs.update(den.attrs, **info)
        from mosaicflow.measure.label import threshold_summary

        # Labelling's step 1 (each chunk's components) by the tasks that write the chunks,
        # from the same pixels: the labels stage then reads the probability once, not twice.
        stamp = (int(info["label_threshold_u8"]), int(self.config.label.connectivity))
        summaries = ChunkSummaries(
            functools.partial(
                threshold_summary, cut=stamp[0], connectivity=stamp[1], width=prob.shape[1]
            )
        )
        # Resource annotations live on graph layers, which low-level fusion would merge away.
        routed = self.config.segment.method == "model" and bool(self.config.segment.resources)
        with dask.config.set({"optimization.fuse.active": False} if routed else {}):
            written = self._write_image(store, "probability", prob, summaries=summaries)
        if summaries.results is not None:  # None when a resumed write kept some chunks
            self._label_summaries = (stamp, summaries.results)
        return {"pixels": int(den.size), "chunks_written": written, **info}

    def _model_probability(self, den: Any) -> tuple[Any, dict[str, Any]]:
        """Windowed model inference, stored as uint8 ``round(p * 255)``."""
        from mosaicflow.segmentation import predict, read_checkpoint_metadata

        path = model_for_workers(self)
        meta = read_checkpoint_metadata(path)
        prob = predict(den, path, **self.config.segment.predict_options())
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
        if prob.attrs.get("segmenter") == "instances":
            written = write_instance_labels(self, store, prob)
            return {"pixels": int(prob.size), "chunks_written": written}
        cut = int(prob.attrs.get("label_threshold_u8", 128))
        connectivity = self.config.label.connectivity
        store.remove_scratch()  # what an interrupted earlier version of this stage left
        # Step 1's local labels are not kept: step 3 reads and thresholds each probability
        # chunk again and labels it again (cheaper than writing and reading them back). Step
        # 1's summaries come from this run's probability stage when it wrote every chunk.
        found, self._label_summaries = self._label_summaries, None
        summaries = found[1] if found is not None and found[0] == (cut, connectivity) else None
        labels = label(prob >= cut, connectivity=connectivity, recompute=True, summaries=summaries)
        labels.attrs.update(prob.attrs)
        written = self._write_image(store, "labels/particles", labels, label=True)
        step_1 = "probability" if summaries is not None else "labels"
        return {"pixels": int(prob.size), "chunks_written": written, "step_1_stage": step_1}

    def _stage_particles(self, store: RunStore) -> dict[str, Any]:
        from mosaicflow.measure import regionprops_table, table_schema_metadata
        from mosaicflow.stitch import coverage

        block = self.config.measure.block  # stored chunks per measuring task, per axis
        labels = store.read_image("labels/particles", block=block)
        model = self.config.segment.method == "model"
        extra = {"raw": store.read_image("mosaic", block=block)}
        if model:  # with the threshold baseline the probability is 1 on every particle
            extra["probability"] = store.read_image("probability", block=block)
        table = regionprops_table(
            labels,
            store.read_image("denoised", block=block),
            extra_intensity=extra,
            coverage=coverage(self.tileset, chunks=labels.data.chunks[0][0]),
            halo=self.config.measure.halo,
        )
        if model:
            table = table.map_partitions(probability_mean, meta=probability_mean(table._meta))
        # Every object is measured once into a scratch table, one part per chunk (a resumed
        # stage keeps the parts already written); the listed ones are read back.
        measured = store.write_table_parts(
            UNFILTERED, table, runner=self.runner, resume=self._resuming
        )
        info = self._select_particles(store, n_pixels=int(labels.size))
        policy = self.config.measure.edge_policy
        if info["n_objects"] <= SORT_IN_MEMORY_ROWS:  # read, filtered and sorted here at once
            table = store.read_table(UNFILTERED, unfinished_ok=True)
            table = table[listed(table, info["min_diameter_nm"], policy)].reset_index(drop=True)
        else:  # sorted by the workers, part by part
            table = store.read_table_lazy(UNFILTERED)
            table = sorted_by_label(
                table[listed(table, info["min_diameter_nm"], policy)], info["n_objects"]
            )
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
        info["table_parts"] = {"particles": store.table_parts("particles")}
        info["chunks_measured"] = measured
        if cfg.model:
            info.update(self._label_classes(store, info["n_particles"]))
        return {"pixels": int(labels.size), **info}

    def _label_classes(self, store: RunStore, n_particles: int) -> dict[str, Any]:
        """Each listed particle's class and class colour in the labels' NGFF metadata, so that
        a viewer colours the label image by class (up to :data:`MAX_LABEL_COLORS` particles)."""
        if n_particles > MAX_LABEL_COLORS:
            return {"label_colors": f"not written: {n_particles} particles > {MAX_LABEL_COLORS}"}
        from mosaicflow.report.plots import class_colors

        table = store.read_table("particles", columns=["label", "class"], unfinished_ok=True)
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

        summary = write_report(store, runner=self.runner)
        return {"pixels": 0, "n_particles": summary["particles"]["count"]}
