"""The probability and labels stages for an instance model (``segment.model: default`` or a
checkpoint written by ``mosaicflow train``): two stored probabilities, seeds labelled across
chunks, and seeds grown chunk-exactly into instances.

* probability: the denoised mosaic is scaled by its percentiles over the covered pixels (as
  training scaled each image); one windowed inference gives the foreground probability
  (``1 - p_background``, stored as the run's ``probability`` image) and the interior
  probability (stored as ``interior``). Both are written to scratch in one pass, so the model
  runs once, then copied into their pyramids.
* labels: seeds are ``interior >= seed threshold``, labelled across chunks by
  :func:`mosaicflow.measure.label` into scratch; each label chunk grows its seeds within the
  foreground in a window read from the store, widened until every particle reaching the chunk
  fits (:func:`mosaicflow.segmentation.instances.grow_chunked`), so the labels equal the
  whole-mosaic result for any chunking.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np

from mosaicflow.io.chunk_io import lazy
from mosaicflow.io.chunk_writes import store_array, store_arrays
from mosaicflow.io.layout import INTERIOR_IMAGE
from mosaicflow.io.store import RunStore


def checkpoint_path(model: str) -> str:
    """The resolved file of ``segment.model`` (``default``: the shipped weights)."""
    from mosaicflow.segmentation.default import resolve_model_path

    return str(resolve_model_path(model, what="segment.model").expanduser().resolve())


def is_instance_checkpoint(path: str) -> bool:
    """Whether the checkpoint holds a three-class instance model."""
    from mosaicflow.segmentation import read_checkpoint_metadata

    meta = read_checkpoint_metadata(path)
    return meta.classes == 3 and meta.extra.get("kind") == "instances"


def model_for_workers(stage: Any) -> str:
    """The configured checkpoint's path, its loading registered with the stage's cluster (one
    load per worker, at most)."""
    path = checkpoint_path(str(stage.config.segment.model))
    if stage.client is not None:
        from mosaicflow.segmentation._plugin import register_model_plugin

        register_model_plugin(stage.client, path)
    return path


def write_instance_probability(stage: Any, store: RunStore, den: Any, covered: Any) -> dict:
    """Run the instance model once over the denoised mosaic; store ``probability`` and
    ``interior``. Returns the stage's figures."""
    from mosaicflow.segmentation.scaling import percentiles
    from mosaicflow.segmentation.segmenter import input_scale, load_model, model_probabilities

    cfg = stage.config.segment
    path = model_for_workers(stage)
    model = load_model(path)
    low, high = percentiles(den, input_scale(model.meta), mask=covered, runner=stage.runner)
    fg, interior = model_probabilities(den, model, low=low, high=high, **cfg.predict_options())
    fg = da.where(covered, fg, np.uint8(0))
    interior = da.where(covered, interior, np.uint8(0))
    chunks = tuple(c[0] for c in den.data.chunks)
    store.remove_scratch()
    targets = [
        store.scratch_array(n, shape=den.shape, chunks=chunks, dtype="uint8")
        for n in ("foreground", "interior")
    ]
    routed = bool(cfg.resources)
    with dask.config.set({"optimization.fuse.active": False} if routed else {}):
        store_arrays([fg, interior], targets, stage.runner, "model inference")
    fg_t = model.threshold if cfg.foreground_threshold is None else cfg.foreground_threshold
    seed_t = model.seed_threshold if cfg.seed_threshold is None else cfg.seed_threshold
    from mosaicflow.segmentation.targets import u8_threshold

    info = {
        "segmenter": "instances",
        "model": path,
        "arch": model.meta.arch,
        "encoder": model.meta.encoder,
        "threshold": float(fg_t),
        "seed_threshold": float(seed_t),
        "label_threshold_u8": u8_threshold(fg_t),
        "seed_threshold_u8": u8_threshold(seed_t),
        "min_seed_px": model.min_seed_px if cfg.min_seed_px is None else int(cfg.min_seed_px),
        "input_scale": {"low": low, "high": high, "percentiles": list(input_scale(model.meta))},
    }
    written = 0
    for name, target in zip(("probability", INTERIOR_IMAGE), targets, strict=True):
        image = den.copy(data=lazy(target))
        image.attrs.update(den.attrs, **info)
        written += stage._write_image(store, name, image)
    store.remove_scratch()
    return {"pixels": int(den.size), "chunks_written": written, **info}


def write_instance_labels(stage: Any, store: RunStore, prob: Any) -> int:
    """Seeds labelled across chunks, grown chunk-exactly; writes ``labels/particles``."""
    from mosaicflow.measure import label
    from mosaicflow.segmentation.instances import grow_chunked

    interior = store.read_image(INTERIOR_IMAGE)
    seed_cut = int(prob.attrs["seed_threshold_u8"])
    connectivity = stage.config.label.connectivity
    chunks = tuple(c[0] for c in prob.data.chunks)
    store.remove_scratch()
    local = store.scratch_array("labels_local", shape=prob.shape, chunks=chunks, dtype="uint32")
    seeds_target = store.scratch_array("seeds", shape=prob.shape, chunks=chunks, dtype="uint32")
    seeds = label(interior.data >= seed_cut, connectivity=connectivity, scratch=local)
    store_array(seeds, seeds_target, stage.runner, "seeds")
    grown = grow_chunked(
        lazy(seeds_target),
        interior.data,
        prob.data,
        foreground_threshold=float(prob.attrs["threshold"]),
        connectivity=connectivity,
        max_particle_px=stage.config.segment.max_particle_px,
        min_seed_px=int(prob.attrs.get("min_seed_px", 0)),
    )
    labels = prob.copy(data=grown)
    labels.attrs.update(prob.attrs)
    written = stage._write_image(store, "labels/particles", labels, label=True)
    store.remove_scratch()
    return written


__all__ = [
    "INTERIOR_IMAGE",
    "checkpoint_path",
    "is_instance_checkpoint",
    "model_for_workers",
    "write_instance_labels",
    "write_instance_probability",
]
