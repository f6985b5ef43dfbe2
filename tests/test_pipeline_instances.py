"""The whole job with the shipped instance model: the labels are bit-identical for three
chunkings, one smaller than the largest particle, and equal to the whole-mosaic reference grown
from the stored probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from mosaicflow.config import Config
from mosaicflow.io.store import RunStore
from mosaicflow.pipeline import Pipeline
from mosaicflow.segmentation.targets import instances_from_probability


def _config(folder, chunk, **segment):
    return (
        Config(input=str(folder))
        .replace("store", chunk=chunk)
        .replace("segment", method="model", model="default", **segment)
    )


@pytest.mark.cluster
def test_instance_labels_do_not_depend_on_the_chunking(small_grid, client, tmp_path):
    runs = []
    for chunk, use_client in ((512, client), (256, None), (64, None)):
        out = tmp_path / f"c{chunk}.zarr"
        # 64-px label chunks with an 8-px halo: every particle widens its window
        cfg = _config(small_grid.folder, chunk, max_particle_px=8, min_seed_px=32)
        stop = None if chunk == 512 else "labels"
        store = Pipeline(cfg, str(out), client=use_client).run(stop_after=stop)
        runs.append(store)
    first = runs[0]
    labels0 = first.read_image("labels/particles").values
    fg = first.read_image("probability").values
    interior = first.read_image("interior").values
    rec = first.stages()["probability"]
    assert rec["segmenter"] == "instances" and rec["model"].endswith("default.safetensors")
    connectivity = Config().label.connectivity
    reference = instances_from_probability(
        fg,
        interior,
        foreground_threshold=rec["threshold"],
        seed_threshold=rec["seed_threshold"],
        connectivity=connectivity,
        min_seed_px=rec["min_seed_px"],
    )
    np.testing.assert_array_equal(labels0, reference)
    assert labels0.max() > 20
    extent = max(
        max(s[0].stop - s[0].start, s[1].stop - s[1].start)
        for s in ndi.find_objects(labels0)
        if s is not None
    )
    assert extent > 64  # a particle spans more than one of the smallest chunks
    assert rec["min_seed_px"] == 32
    for store in runs[1:]:
        np.testing.assert_array_equal(store.read_image("labels/particles").values, labels0)
        np.testing.assert_array_equal(store.read_image("interior").values, interior)
    # the table and report follow the labels (tables per chunking: tests/test_pipeline.py)
    assert len(first.read_table("particles")) > 20
    assert RunStore(str(tmp_path / "c512.zarr"), mode="r").stage_done("report")


def test_instance_thresholds_come_from_the_config(small_grid, tmp_path):
    store = Pipeline(
        _config(small_grid.folder, 512, foreground_threshold=0.3, seed_threshold=0.9),
        str(tmp_path / "t.zarr"),
    ).run(stop_after="labels")
    rec = store.stages()["probability"]
    assert rec["threshold"] == 0.3 and rec["seed_threshold"] == 0.9
    assert rec["label_threshold_u8"] == 76 and rec["seed_threshold_u8"] == 230
    assert "scratch" not in store.root
    # the interior is the probability stage's output too: a lost chunk of it is noticed
    assert store.missing_outputs("probability") is None
    chunk = next(
        p
        for p in (tmp_path / "t.zarr" / "interior" / "0").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.unlink()
    assert "chunk(s) of interior level 0" in RunStore(str(tmp_path / "t.zarr")).missing_outputs(
        "probability"
    )
    # and a model run's store is one a run may replace (--overwrite)
    RunStore(str(tmp_path / "t.zarr"), mode="w")
    assert not (tmp_path / "t.zarr" / "interior").exists()
