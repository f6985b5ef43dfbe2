"""The whole job on real Dask clusters and real Zarr stores, against synth ground truth."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from mosaicflow import cluster, open_run
from mosaicflow.config import Config
from mosaicflow.errors import ClusterError, ConfigError, StoreError, TileReadError
from mosaicflow.io.store import RunStore
from mosaicflow.io.tiles import read_tileset
from mosaicflow.pipeline import STAGES, Pipeline
from mosaicflow.stitch import register_tileset


def _run(folder, out, chunk, client=None, block=None, **kwargs):
    config = Config(input=str(folder)).replace("store", chunk=chunk)
    if block is not None:
        config = config.replace("measure", block=block)
    return Pipeline(config, str(out), client=client, **kwargs).run()


@pytest.mark.cluster
def test_default_grid_matches_ground_truth(client, tmp_path):
    """Acceptance: the built-in default grid (4x5 Maps tiles, SNR 20) on a LocalCluster."""
    store = Pipeline(Config(), str(tmp_path / "run.zarr"), client=client).run()
    summary = json.loads((tmp_path / "run.zarr" / "report" / "summary.json").read_text())
    truth = pd.read_parquet(store.table_path("ground_truth"))
    table = pd.read_parquet(tmp_path / "run.zarr" / "tables" / "particles.parquet")
    assert len(truth) > 500
    assert abs(len(table) - len(truth)) <= 0.03 * len(truth)
    true_median = np.median(truth["ecd_nm"])
    assert abs(np.median(table["equivalent_diameter_area"]) - true_median) <= 0.05 * true_median
    assert summary["ground_truth"]["true_count"] == len(truth)
    # matched one to one on the cluster while the report's figures were drawn
    assert summary["ground_truth"]["matching"]["f1_percent"] > 95
    assert all(store.stage_done(s) for s in STAGES)
    assert (tmp_path / "run.zarr" / "report" / "size_histogram.png").stat().st_size > 1000


@pytest.mark.cluster
def test_chunk_invariance(small_grid, client, tmp_path):
    """Labels and table identical for three chunkings, one smaller than a particle, and for
    measuring blocks of 1, 2 and 3 stored chunks per side."""
    results = []
    for chunk, use_client, block in ((512, client, 1), (100, client, 3), (56, None, 2)):
        # 56-px chunks: many tiny tasks, where the threaded scheduler's lower per-task cost helps
        _run(small_grid.folder, tmp_path / f"c{chunk}.zarr", chunk, client=use_client, block=block)
        ds = open_run(str(tmp_path / f"c{chunk}.zarr"))
        table = RunStore(str(tmp_path / f"c{chunk}.zarr"), mode="r").read_table("particles")
        # touches_chunk is a diagnostic of the chunking itself; everything else must agree.
        table = table.drop(columns="touches_chunk")
        results.append((ds["labels"].values, table, ds["denoised"].values))
    labels0, table0, den0 = results[0]
    assert table0["label"].max() > 10
    b = [table0[f"bbox_px-{i}"] for i in range(4)]
    extent = np.maximum(b[2] - b[0], b[3] - b[1])
    assert extent.max() > 56  # a particle spans more than one 56-px chunk
    for labels, table, den in results[1:]:
        np.testing.assert_array_equal(labels, labels0)
        np.testing.assert_allclose(den, den0, atol=1e-6, rtol=0)
        pd.testing.assert_frame_equal(table, table0, check_exact=False, rtol=1e-9)


def test_resume_skips_done_stages_and_matches_clean_run(small_grid, tmp_path):
    out = tmp_path / "r.zarr"
    config = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    Pipeline(config, str(out)).run(stop_after="labels")
    partial = json.loads((out / "zarr.json").read_text())["attributes"]["mosaicflow"]["stages"]
    assert "particles" not in partial
    # labelling's step 1 was done by the tasks that wrote the probability
    assert partial["labels"]["step_1_stage"] == "probability"
    with pytest.raises(StoreError, match="already exists"):
        Pipeline(config, str(out)).run()
    store = Pipeline(config, str(out), resume=True).run()
    after = store.stages()
    for name in ("tiles", "mosaic", "denoised", "probability", "labels"):
        assert after[name]["updated"] == partial[name]["updated"], name
    clean = _run(small_grid.folder, tmp_path / "clean.zarr", 256)
    pd.testing.assert_frame_equal(store.read_table("particles"), clean.read_table("particles"))


def test_resume_refuses_other_config(small_grid, tmp_path):
    out = tmp_path / "r.zarr"
    _run(small_grid.folder, out, 256)
    config = (
        Config(input=str(small_grid.folder))
        .replace("store", chunk=256)
        .replace("denoise", sigma=2.0)
    )
    with pytest.raises(StoreError, match=r"denoise.sigma: 1.0 -> 2.0"):
        Pipeline(config, str(out), resume=True).run()


def test_the_store_records_the_chunk_the_run_used(small_grid, tmp_path):
    """With ``store.chunk`` left to the segmenter, the stored configuration holds the chunk
    chosen: a resume naming that chunk is the same run, another chunk is refused."""
    out = tmp_path / "r.zarr"
    config = Config(input=str(small_grid.folder))
    assert config.store.chunk is None
    store = Pipeline(config, str(out)).run(stop_after="tiles")
    assert store.meta["config"]["store"]["chunk"] == config.chunk_px == 2048
    Pipeline(config.replace("store", chunk=2048), str(out), resume=True).run(stop_after="tiles")
    with pytest.raises(StoreError, match=r"store.chunk: 2048 -> 1024"):
        Pipeline(config.replace("store", chunk=1024), str(out), resume=True).run()


def test_truncated_tile_fails_before_anything_is_done(grid_copy, tmp_path):
    tile = grid_copy / "Tile_002-001-000000_0-000.tif"
    tile.write_bytes(tile.read_bytes()[:5000])
    out = tmp_path / "bad.zarr"
    with pytest.raises(TileReadError, match=r"Tile_002-001-000000_0-000\.tif.*truncated"):
        _run(grid_copy, out, 256)
    stages = json.loads((out / "zarr.json").read_text())["attributes"]["mosaicflow"]["stages"]
    assert stages["tiles"]["status"] == "failed"
    assert "truncated" in stages["tiles"]["error"]
    assert not any(s["status"] == "done" for s in stages.values())


def _register_tasks(client) -> list[str]:
    """The registration tasks the scheduler still knows."""
    return client.run_on_scheduler(
        lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks if "_register_some" in str(k)]
    )


@pytest.mark.cluster
def test_the_registration_starts_while_the_tiles_stage_ends(
    small_grid, tmp_path, client, monkeypatch
):
    """The register stage's pairs are set computing once the tiles are checked (the workers
    measure them while the driver writes the tiles stage's tables); the register stage waits
    for those and gives the positions of a registration computed from scratch. A run that
    stops after the tiles stage leaves none behind."""
    from distributed import futures_of

    from mosaicflow.pipeline.stages import StageMixin

    config = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    Pipeline(config, str(tmp_path / "a.zarr"), client=client).run(stop_after="tiles")
    assert _register_tasks(client) == []
    found = []
    real = StageMixin._stage_register

    def register(self, store):
        found.extend(futures_of(self._early_pairs))  # running since the tiles stage
        return real(self, store)

    monkeypatch.setattr(StageMixin, "_stage_register", register)
    store = Pipeline(config, str(tmp_path / "b.zarr"), client=client).run(stop_after="register")
    assert found and all(f.key for f in found)
    alone = register_tileset(read_tileset(small_grid.folder))[0]
    stored = store.read_table("tiles")
    np.testing.assert_allclose(stored[["y_px", "x_px"]], alone[["y_px", "x_px"]], atol=1e-9)


@pytest.mark.cluster
def test_a_tiles_stage_that_fails_after_its_check_drops_the_registration_it_started(
    small_grid, tmp_path, client, monkeypatch
):
    """The registration set computing once the tiles are checked is dropped when the stage
    fails afterwards (here its tiles table cannot be written): no task of it stays on the
    cluster, while the pipeline is still held."""
    real = RunStore.write_table

    def write_table(self, name, *args, **kwargs):
        if name == "tiles":
            raise OSError("disk full")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(RunStore, "write_table", write_table)
    config = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    pipeline = Pipeline(config, str(tmp_path / "bad.zarr"), client=client)
    with pytest.raises(OSError, match="disk full"):
        pipeline.run()
    deadline = time.monotonic() + 10
    while _register_tasks(client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _register_tasks(client) == []
    assert pipeline._early_pairs is None


def test_tile_damaged_after_reading_fails_its_stage(grid_copy, tmp_path):
    """A tile replaced between header check and the first stage reading pixels (registration):
    that stage fails, and nothing after the tiles stage is done."""
    config = Config(input=str(grid_copy)).replace("store", chunk=256)
    out = tmp_path / "bad.zarr"
    Pipeline(config, str(out)).run(stop_after="tiles")
    tile = grid_copy / "Tile_001-003-000000_0-000.tif"
    data = bytearray(tile.read_bytes())
    tile.write_bytes(bytes(data[:-2000]))
    with pytest.raises(TileReadError, match="Tile_001-003"):
        Pipeline(config, str(out), resume=True).run()
    stages = json.loads((out / "zarr.json").read_text())["attributes"]["mosaicflow"]["stages"]
    assert stages["tiles"]["status"] == "done"
    assert stages["register"]["status"] == "failed"
    assert not any(stages.get(s, {}).get("status") == "done" for s in STAGES[1:])


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ClusterError, match=r"tcp://127.0.0.1:9.*within 2 s"):
        cluster.connect("tcp://127.0.0.1:9", timeout=2)
    with pytest.raises(ClusterError, match="not understood"):
        cluster.connect("my-cluster")


def test_open_run_coordinates_in_nm(small_grid, tmp_path):
    _run(small_grid.folder, tmp_path / "o.zarr", 256)
    ds = open_run(str(tmp_path / "o.zarr"))
    assert set(ds.data_vars) == {"mosaic", "denoised", "probability", "labels"}
    assert float(ds["x"][1] - ds["x"][0]) == pytest.approx(2.0)
    assert ds["labels"].dtype == np.uint32 and ds["probability"].dtype == np.uint8
    assert ds.attrs["stages"]["report"]["status"] == "done"
    assert Path(tmp_path / "o.zarr" / "tables" / "tiles.parquet").exists()


@pytest.mark.parametrize(
    ("denoise", "store_dtype"),
    [({"method": "median", "size": 3}, "input"), ({"method": "nl_means"}, "float32")],
)
def test_denoise_stage_methods_and_storage_policy(small_grid, tmp_path, denoise, store_dtype):
    """The stage equals the restoration call on the stored mosaic; the store keeps the mosaic's
    integer type (rounded, clipped) by default, or float32 on request."""
    from mosaicflow import restoration

    config = Config(input=str(small_grid.folder)).replace(
        "denoise", store_dtype=store_dtype, **denoise
    )
    store = Pipeline(config, str(tmp_path / "r.zarr")).run(stop_after="denoised")
    mosaic = store.read_image("mosaic")
    stored = store.read_image("denoised")
    meta = store.meta["stages"]["denoised"]
    if denoise["method"] == "nl_means":
        # h and the noise level were derived from the whole mosaic and recorded.
        noise = restoration.estimate_sigma(mosaic)
        assert meta["noise_sigma"] == pytest.approx(noise)
        assert meta["h"] == pytest.approx(0.8 * noise)
        expected = restoration.denoise_nl_means(mosaic, h=meta["h"], sigma=noise).values
    else:
        expected = restoration.median_filter(mosaic, size=3).values
    if store_dtype == "input":
        assert stored.dtype == mosaic.dtype == np.uint8
        info = np.iinfo(np.uint8)
        np.testing.assert_array_equal(
            stored.values, np.clip(np.rint(expected), info.min, info.max).astype(np.uint8)
        )
    else:
        assert stored.dtype == np.float32
        np.testing.assert_allclose(stored.values, expected, atol=1e-4, rtol=0)
    assert not np.array_equal(stored.values, mosaic.values)


def test_denoise_config_rejects_bad_values():
    from mosaicflow.errors import ConfigError

    for section, values, match in [
        ("denoise", {"method": "wiener"}, "denoise.method"),
        ("denoise", {"size": 4}, "denoise.size"),
        ("denoise", {"patch_size": 6}, "denoise.patch_size"),
        ("denoise", {"h": -1.0}, "denoise.h"),
        ("denoise", {"store_dtype": "float16"}, "store_dtype"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Config().replace(section, **values)


@pytest.mark.cluster
def test_model_segmenter_stage(small_grid, client, tmp_path):
    """segment.method=model: the stage stores round(predict * 255) as uint8, one model load per
    worker, and labels cut at the checkpoint's threshold. The weights are random: this checks
    the plumbing, not segmentation quality (no trained model is shipped yet)."""
    import scipy.ndimage as ndi
    import torch

    from mosaicflow.segmentation import build_model, predict, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "unet.safetensors",
        build_model("unet"),
        arch="unet",
        normalization={"mean": 100.0, "std": 40.0},
        window=128,
        threshold=0.5,
    )
    config = Config(input=str(small_grid.folder)).replace(
        "segment", method="model", model=str(ckpt), batch_size=2
    )
    store = Pipeline(config, str(tmp_path / "m.zarr"), client=client).run(stop_after="labels")
    meta = store.meta["stages"]["probability"]
    assert meta["segmenter"] == "model" and meta["label_threshold_u8"] == 128
    den = store.read_image("denoised")
    expected = np.round(predict(den, str(ckpt)).values * 255).astype(np.int16)
    stored = store.read_image("probability").values
    assert stored.dtype == np.uint8
    from mosaicflow.io import TileSet
    from mosaicflow.stitch import coverage

    tiles = TileSet.from_meta(store.meta["tileset"], store.read_table("tiles"))  # as registered
    covered = coverage(tiles, chunks=512).values
    assert (stored[~covered] == 0).all()  # where no tile is, no particle, whatever the model says
    diff = stored.astype(np.int16)[covered] - expected[covered]
    assert np.abs(diff).max() <= 1
    assert (diff == 0).mean() > 0.999
    loads = client.run(
        lambda dask_worker: dask_worker.plugins["mosaicflow-models"].cache.loads
    ).values()
    assert max(loads) == 1
    labels = store.read_image("labels/particles").values
    np.testing.assert_array_equal(labels, ndi.label(stored >= 128)[0])


def test_dark_polarity_keeps_the_other_side_of_the_otsu_threshold(small_grid, tmp_path):
    """Bright-field TEM particles are darker than the substrate: ``segment.polarity: dark``."""
    base = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    bright = Pipeline(base, str(tmp_path / "b.zarr")).run(stop_after="probability")
    dark_cfg = base.replace("segment", polarity="dark")
    dark = Pipeline(dark_cfg, str(tmp_path / "d.zarr")).run(stop_after="probability")
    pb = bright.read_image("probability").values
    pd_ = dark.read_image("probability").values
    den = dark.read_image("denoised").values
    threshold = dark.stages()["probability"]["threshold"]
    from mosaicflow.io import TileSet
    from mosaicflow.stitch import coverage

    tiles = TileSet.from_meta(dark.meta["tileset"], dark.read_table("tiles"))  # as registered
    covered = coverage(tiles, chunks=256).values
    off_threshold = (den != threshold) & covered
    np.testing.assert_array_equal(pd_[off_threshold], 255 - pb[off_threshold])
    assert (pd_[~covered] == 0).all() and (pb[~covered] == 0).all()  # no tile, no particle
    assert dark.stages()["probability"]["polarity"] == "dark"
    with pytest.raises(ConfigError, match="polarity"):
        base.replace("segment", polarity="grey")


def test_the_otsu_histogram_is_counted_while_the_denoised_mosaic_is_written(
    small_grid, tmp_path, monkeypatch
):
    """The denoised stage counts its values as it writes them, so the threshold takes no pass
    of its own; a run that resumes at the threshold counts the stored mosaic instead. Both
    thresholds are scikit-image's Otsu threshold of the stored denoised mosaic."""
    import skimage.filters

    from mosaicflow.runner import Runner

    seen = []
    compute = Runner.compute

    def recording(self, collection, description):
        seen.append(description)
        return compute(self, collection, description)

    monkeypatch.setattr(Runner, "compute", recording)
    config = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    store = Pipeline(config, str(tmp_path / "a.zarr")).run(stop_after="probability")
    assert "histogram" not in seen
    den = store.read_image("denoised").values
    # as floats: scikit-image bins integer images one value per bin, whatever nbins says
    expected = float(skimage.filters.threshold_otsu(den.astype(float), nbins=config.segment.nbins))
    assert store.stages()["probability"]["threshold"] == expected

    seen.clear()
    Pipeline(config, str(tmp_path / "b.zarr")).run(stop_after="denoised")
    resumed = Pipeline(config, str(tmp_path / "b.zarr"), resume=True).run(stop_after="probability")
    assert "histogram" in seen
    assert resumed.stages()["probability"]["threshold"] == expected
    # a run that resumes at the labels has no summaries from the probability's writing tasks
    labelled = Pipeline(config, str(tmp_path / "b.zarr"), resume=True).run(stop_after="labels")
    assert labelled.stages()["labels"]["step_1_stage"] == "labels"
    fresh = Pipeline(config, str(tmp_path / "c.zarr")).run(stop_after="labels")
    assert fresh.stages()["labels"]["step_1_stage"] == "probability"
    np.testing.assert_array_equal(
        labelled.read_image("labels/particles").values,
        fresh.read_image("labels/particles").values,
    )


def test_the_mosaic_stage_writes_the_denoised_mosaic_in_the_same_pass(small_grid, tmp_path):
    """With the Gaussian filter, the mosaic stage fuses each chunk with the filter's halo and
    writes both images; the denoised stage only records it. The result equals, at every level
    and in its attributes, a run whose denoised stage filters the stored mosaic (stopped after
    the mosaic, then resumed), and SciPy's filter of the whole stored mosaic."""
    from scipy import ndimage

    config = Config(input=str(small_grid.folder)).replace("store", chunk=128)
    one = Pipeline(config, str(tmp_path / "one.zarr")).run(stop_after="probability")
    Pipeline(config, str(tmp_path / "two.zarr")).run(stop_after="mosaic")
    two = Pipeline(config, str(tmp_path / "two.zarr"), resume=True).run(stop_after="probability")
    assert one.stages()["denoised"]["written_by"] == "mosaic"
    assert "written_by" not in two.stages()["denoised"]
    assert one.stages()["denoised"]["chunks_written"] == two.stages()["denoised"]["chunks_written"]
    for name in ("mosaic", "denoised"):
        levels = one.image_levels(name)
        assert levels == two.image_levels(name) and len(levels) > 1
        for level in levels:
            a, b = one.open_level(name, level), two.open_level(name, level)
            assert a.chunks == b.chunks
            np.testing.assert_array_equal(a[...], b[...], err_msg=f"{name} level {level}")
        assert one.read_image(name).attrs == two.read_image(name).attrs
    assert one.stages()["probability"]["threshold"] == two.stages()["probability"]["threshold"]
    mosaic = one.read_image("mosaic").values.astype(np.float32)
    expected = np.rint(ndimage.gaussian_filter(mosaic, sigma=config.denoise.sigma)).clip(0, 255)
    np.testing.assert_array_equal(one.read_image("denoised").values, expected.astype(np.uint8))


@pytest.mark.cluster
def test_run_applies_a_saved_classifier_on_the_cluster(small_grid, client, tmp_path):
    """classify-train's file, given as classify.model, classifies every particle of a run; the
    stage records the classifier and the report shows its class fractions."""
    from mosaicflow.classify import load, predict, train

    first = _run(small_grid.folder, tmp_path / "a.zarr", 256)
    table = first.read_table("particles")
    big = table["equivalent_diameter_area"] > table["equivalent_diameter_area"].median()
    labels = np.where(big, "large", "small")  # one class per row
    model = tmp_path / "forest.joblib"
    train(table, labels, n_estimators=50, cv=3, n_jobs=1).save(model)

    config = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    config = config.replace("classify", model=str(model))
    store = Pipeline(config, str(tmp_path / "b.zarr"), client=client).run()
    classified = store.read_table("particles")
    assert {"class", "class_probability", "proba_large", "proba_small"} <= set(classified)
    expected = predict(table, load(model))  # the same forest on the in-memory table
    np.testing.assert_array_equal(classified["class"], expected["class"])
    info = store.stages()["particles"]["classifier"]
    assert info["classes"] == ["large", "small"] and len(info["confusion"]) == 2
    summary = json.loads((tmp_path / "b.zarr" / "report" / "summary.json").read_text())
    fractions = {row["class"]: row["count"] for row in summary["classes"]["fractions"]}
    assert fractions == classified["class"].value_counts().to_dict()
    # the labels' NGFF metadata colours each particle by its class, one colour per class
    label_meta = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["labels/particles"]
    image_label = label_meta.attrs["ome"]["image-label"]
    by_label = {p["label-value"]: p["class"] for p in image_label["properties"]}
    assert by_label == dict(zip(classified["label"], classified["class"], strict=True))
    colors = {tuple(c["rgba"]) for c in image_label["colors"]}
    assert len(colors) == 2


# -- particles a user would count ------------------------------------------------------------
def test_auto_polarity_takes_the_minority_side(small_grid, tmp_path):
    """Bright particles on a dark support give ``bright``; the same grid inverted (as a
    bright-field image) gives ``dark`` and the same particles."""
    import shutil

    import tifffile

    base = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    bright = Pipeline(base, str(tmp_path / "b.zarr")).run(stop_after="labels")
    inverted = tmp_path / "inverted"
    shutil.copytree(small_grid.folder, inverted)
    for tile in inverted.glob("Tile_*.tif"):
        with tifffile.TiffFile(tile) as tif:
            page = tif.pages[0]
            data = page.asarray()
            tag = page.tags[34682]  # the FEI metadata, copied as written
            tif.filehandle.seek(tag.valueoffset)
            ini = tif.filehandle.read(tag.count).rstrip(b"\0").decode()
            extratags = [(34682, "s", 0, ini, True)]
        tifffile.imwrite(tile, np.iinfo(data.dtype).max - data, extratags=extratags)
    dark = Pipeline(base.replace("input", value=str(inverted)), str(tmp_path / "d.zarr")).run(
        stop_after="labels"
    )
    assert bright.stages()["probability"]["polarity"] == "bright"
    assert dark.stages()["probability"]["polarity"] == "dark"
    assert dark.stages()["probability"]["polarity_source"] == "auto"
    # The same particles: the threshold differs a little (the histograms differ where no tile
    # is, and so does smoothing next to it), the segmentation hardly.
    lab_dark = dark.read_image("labels/particles").values
    lab_bright = bright.read_image("labels/particles").values
    assert np.mean((lab_dark > 0) != (lab_bright > 0)) < 0.005
    # instances: each bright particle has a dark one at IoU >= 0.5, but for a few at the edge
    pairs = np.stack([lab_bright.ravel(), lab_dark.ravel()])
    both, inter = np.unique(pairs[:, (pairs > 0).all(axis=0)], axis=1, return_counts=True)
    area_b = np.bincount(lab_bright.ravel())
    area_d = np.bincount(lab_dark.ravel())
    iou = inter / (area_b[both[0]] + area_d[both[1]] - inter)
    matched = np.unique(both[0][iou >= 0.5])
    assert len(matched) >= 0.9 * lab_bright.max()


def test_minimum_size_and_edge_policy_select_rows_of_the_whole_table(tmp_path):
    from mosaicflow import synth

    holey = tmp_path / "holey"  # a missing tile: particles cut by the uncovered area
    synth.write_maps_grid(
        holey, rows=2, cols=3, tile_shape=(300, 400), snr=30.0, seed=3, missing_tiles=[(1, 2)]
    )
    base = Config(input=str(holey)).replace("store", chunk=256)
    every = Pipeline(base.replace("measure", min_size="0", edge_policy="keep"), tmp_path / "a")
    every = every.run(stop_after="particles")
    objects = every.read_table("particles")
    assert every.stages()["particles"]["n_below_min_size"] == 0
    edge = objects["touches_edge"] | objects["touches_uncovered"]
    assert edge.any()

    min_nm = float(np.percentile(objects["equivalent_diameter_area"], 30))
    cfg = base.replace("measure", min_size=f"{min_nm} nm", edge_policy="drop")
    some = Pipeline(cfg, tmp_path / "b").run(stop_after="particles")
    listed = some.read_table("particles")
    expected = objects[(objects["equivalent_diameter_area"] >= min_nm) & ~edge]
    pd.testing.assert_frame_equal(listed, expected.reset_index(drop=True))
    stage = some.stages()["particles"]
    assert stage["n_objects"] == len(objects)
    assert stage["n_below_min_size"] == int((objects["equivalent_diameter_area"] < min_nm).sum())
    assert stage["n_at_edge"] == int((edge & (objects["equivalent_diameter_area"] >= min_nm)).sum())
    assert stage["n_particles"] == len(listed)

    auto = Pipeline(base, tmp_path / "c").run(stop_after="particles")
    pixel = min(auto.meta["tileset"]["pixel_size_nm"])
    assert auto.stages()["particles"]["min_diameter_nm"] == pytest.approx(3 * pixel)
    with pytest.raises(ConfigError, match="min_size"):
        base.replace("measure", min_size="3")


def test_one_object_covering_the_mosaic_is_a_warning(small_grid, tmp_path):
    """The wrong polarity makes the support one object: the stage says so."""
    cfg = Config(input=str(small_grid.folder)).replace("store", chunk=256)
    store = Pipeline(cfg.replace("segment", polarity="dark"), tmp_path / "w").run(
        stop_after="particles"
    )
    warnings = store.stages()["particles"].get("warnings", [])
    assert len(warnings) == 1 and "check --polarity" in warnings[0]


# -- bad input named before the heavy stages -------------------------------------------------
def test_a_blank_tile_is_named_by_the_tiles_stage(grid_copy, tmp_path):
    tile = grid_copy / "Tile_001-002-000000_0-000.tif"
    with tifffile.TiffFile(tile) as tif:
        page = tif.pages.first
        shape, dtype = page.shape, page.dtype
        fei = page.tags[34682]
        tif.filehandle.seek(fei.valueoffset)
        raw = tif.filehandle.read(fei.count)
    tifffile.imwrite(tile, np.zeros(shape, dtype), extratags=[(34682, "s", 0, raw, True)])
    out = tmp_path / "blank.zarr"
    with pytest.raises(TileReadError, match=r"Tile_001-002-000000_0-000\.tif.*blank"):
        _run(grid_copy, out, 256)
    stages = json.loads((out / "zarr.json").read_text())["attributes"]["mosaicflow"]["stages"]
    assert stages["tiles"]["status"] == "failed"
    assert not any(s["status"] == "done" for s in stages.values())


def test_a_truncated_classifier_is_refused_before_anything_is_written(small_grid, model, tmp_path):
    from mosaicflow.errors import ClassifierError

    path = model.save(tmp_path / "forest.clf")
    path.write_bytes(path.read_bytes()[:-500])
    config = Config(input=str(small_grid.folder)).replace("classify", model=str(path))
    out = tmp_path / "never.zarr"
    with pytest.raises(ClassifierError, match=r"forest\.clf"):
        Pipeline(config, str(out)).preflight()
    assert not out.exists()
