"""Losing nothing: a driver killed in the middle of a stage resumes writing only the chunks it
had not written; a chunk lost from a finished stage is found and redone, never read as zeros;
Ctrl-C stops with one line and a resumable store; a second writer is refused; reads of an
unfinished stage are refused. Each resumed store equals a clean run's, bit for bit."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mosaicflow import open_run
from mosaicflow.config import Config
from mosaicflow.errors import StoreError
from mosaicflow.io.layout import IMAGE_STAGES
from mosaicflow.io.lock import StoreLock
from mosaicflow.io.store import RunStore
from mosaicflow.pipeline import STAGES, Pipeline

CHUNK = 128

KILLER = """
import os, signal, sys
from dask.callbacks import Callback
from mosaicflow.config import Config
from mosaicflow.pipeline import Pipeline

import mosaicflow.io.ome

folder, out, after, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if len(sys.argv) > 5:  # pyramid levels written by the level-0 tasks down to this chunk size
    mosaicflow.io.ome.NEAR_LEVEL_MIN_CHUNK = int(sys.argv[5])
written = 0

class KillAfterWrites(Callback):
    def _posttask(self, key, result, dsk, state, worker_id):
        global written
        name = key[0] if isinstance(key, tuple) else key
        if str(name).startswith(prefix):
            written += 1
            if written == after:
                os.kill(os.getpid(), signal.SIGKILL)

config = Config(input=folder).replace("store", chunk=CHUNK_PX)
with KillAfterWrites():
    Pipeline(config, out, resume=True).run()
""".replace("CHUNK_PX", str(CHUNK))


def _config(folder) -> Config:
    return Config(input=str(folder)).replace("store", chunk=CHUNK)


@pytest.fixture(scope="module")
def clean(small_grid, tmp_path_factory):
    """A clean run of the small grid, the reference every resumed store must equal."""
    out = tmp_path_factory.mktemp("clean") / "run.zarr"
    Pipeline(_config(small_grid.folder), str(out)).run()
    return RunStore(str(out), mode="r")


def _resume_and_kill(folder, out: Path, after: int, prefix: str, near_min: int = 0) -> None:
    """Resume the run in a driver process (synchronous scheduler) that SIGKILLs itself right
    after the ``after``-th task whose key starts with ``prefix`` (a chunk write) finishes;
    ``near_min``: the driver's ``NEAR_LEVEL_MIN_CHUNK``, when given."""
    extra = [str(near_min)] if near_min else []
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(folder), str(out), str(after), prefix, *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "DASK_SCHEDULER": "synchronous"},
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _chunks(store: RunStore, image: str) -> int:
    total = 0
    for level in store.image_levels(image):
        arr = store.open_level(image, level)
        total += math.prod(math.ceil(n / c) for n, c in zip(arr.shape, arr.chunks, strict=True))
    return total


def _assert_same(store: RunStore, ref: RunStore) -> None:
    for image in IMAGE_STAGES:
        assert store.image_levels(image) == ref.image_levels(image), image
        for level in ref.image_levels(image):
            np.testing.assert_array_equal(
                store.open_level(image, level)[:], ref.open_level(image, level)[:], err_msg=image
            )
    for table in ("tiles", "particles"):
        pd.testing.assert_frame_equal(store.read_table(table), ref.read_table(table))


def test_driver_killed_while_writing_labels_resumes_the_unwritten_chunks(
    small_grid, clean, tmp_path
):
    out = tmp_path / "run.zarr"
    Pipeline(_config(small_grid.folder), str(out)).run(stop_after="probability")
    killed = 7
    _resume_and_kill(small_grid.folder, out, killed, "_write_block")
    store = RunStore(str(out), mode="r")
    assert store.stages()["labels"]["status"] == "running"
    with pytest.raises(StoreError, match="not running any more"):  # its lock is stale
        Pipeline(_config(small_grid.folder), str(out), resume=True).run()
    Pipeline(_config(small_grid.folder), str(out), resume=True, break_lock=True).run()
    store = RunStore(str(out), mode="r")
    total = _chunks(clean, "labels/particles")
    assert store.stages()["labels"]["chunks_written"] == total - killed
    _assert_same(store, clean)


def test_driver_killed_while_writing_a_pyramid_resumes_its_unwritten_chunks(
    small_grid, clean, tmp_path
):
    """Levels 1..N are written one task per chunk, each flagged: a driver killed among them
    leaves level 0 and the chunks already flagged; the resumed run writes only the rest."""
    out = tmp_path / "run.zarr"
    Pipeline(_config(small_grid.folder), str(out)).run(stop_after="probability")
    killed = 5
    _resume_and_kill(small_grid.folder, out, killed, "pyramid")
    Pipeline(_config(small_grid.folder), str(out), resume=True, break_lock=True).run()
    store = RunStore(str(out), mode="r")
    level0 = store.open_level("labels/particles", 0)
    first = math.prod(math.ceil(n / c) for n, c in zip(level0.shape, level0.chunks, strict=True))
    total = _chunks(clean, "labels/particles")
    assert total - first > killed  # the kill fell inside the pyramid
    assert store.stages()["labels"]["chunks_written"] == total - first - killed
    _assert_same(store, clean)


def test_driver_killed_among_level_0_tasks_that_write_near_levels_resumes_them(
    small_grid, clean, tmp_path, monkeypatch
):
    """Where the level-0 tasks also write pyramid levels 1 and 2, a chunk is flagged only once
    every level of it is written: a driver killed among those tasks resumes into a store equal
    to a clean run's at every level."""
    from mosaicflow.io import ome

    monkeypatch.setattr(ome, "NEAR_LEVEL_MIN_CHUNK", CHUNK // 4)
    out = tmp_path / "run.zarr"
    Pipeline(_config(small_grid.folder), str(out)).run(stop_after="probability")
    _resume_and_kill(small_grid.folder, out, 7, "_write_block", near_min=CHUNK // 4)
    Pipeline(_config(small_grid.folder), str(out), resume=True, break_lock=True).run()
    store = RunStore(str(out), mode="r")
    assert store.open_level("labels/particles", 2).chunks == (CHUNK // 4, CHUNK // 4)
    assert 0 < store.stages()["labels"]["chunks_written"] < _chunks(store, "labels/particles")
    _assert_same(store, clean)


def test_a_chunk_lost_from_a_finished_stage_is_redone_not_read_as_zeros(
    small_grid, clean, tmp_path
):
    out = tmp_path / "run.zarr"
    Pipeline(_config(small_grid.folder), str(out)).run()
    chunk_file = out / "denoised" / "0" / "c" / "1" / "2"
    assert chunk_file.is_file()
    chunk_file.unlink()
    store = RunStore(str(out), mode="r")
    assert "1 chunk(s) of denoised level 0" in store.missing_outputs("denoised")
    assert store.missing_outputs("mosaic") is None
    Pipeline(_config(small_grid.folder), str(out), resume=True).run()
    store = RunStore(str(out), mode="r")
    assert store.missing_outputs("denoised") is None
    _assert_same(store, clean)
    # a lost table (one file here; a part of a table the workers sorted) is found too
    (out / "tables" / "particles.parquet").unlink()
    assert "table particles" in RunStore(str(out), mode="r").missing_outputs("particles")


def test_a_table_sorted_by_the_workers_equals_the_one_sorted_in_one_process(
    small_grid, clean, tmp_path, monkeypatch
):
    """Above SORT_IN_MEMORY_ROWS objects the particles stage sorts by a shuffle between the
    workers and stores one part per partition: the same rows, and a lost part is found."""
    from mosaicflow.pipeline import stages

    monkeypatch.setattr(stages, "SORT_IN_MEMORY_ROWS", 0)
    out = tmp_path / "run.zarr"
    Pipeline(_config(small_grid.folder), str(out)).run()
    store = RunStore(str(out), mode="r")
    assert store.table_parts("particles") > 1
    pd.testing.assert_frame_equal(store.read_table("particles"), clean.read_table("particles"))
    sorted((out / "tables" / "particles.parquet").glob("part.*.parquet"))[0].unlink()
    assert "table particles" in RunStore(str(out), mode="r").missing_outputs("particles")


def test_reads_of_an_unfinished_stage_are_refused(clean, tmp_path):
    import shutil

    out = tmp_path / "copy.zarr"
    shutil.copytree(clean.url, out)
    store = RunStore(str(out))
    store.set_stage("particles", "running")
    with pytest.raises(StoreError, match="table 'particles' is not complete"):
        store.read_table("particles")
    store.set_stage("labels", "failed", error="boom")
    with pytest.warns(UserWarning, match=r"labels/particles \(stage 'labels' failed\)"):
        ds = open_run(str(out))
    assert "labels" not in ds and "mosaic" in ds


def test_a_second_run_on_a_store_is_refused_with_the_owner_named(small_grid, tmp_path):
    out = tmp_path / "run.zarr"
    other = StoreLock(str(out))
    other.acquire()  # another run holding the store
    try:
        with pytest.raises(StoreError, match=rf"being written by another run: .*pid {os.getpid()}"):
            Pipeline(_config(small_grid.folder), str(out)).run()
    finally:
        other.release()


def _status(out: Path, stage: str) -> str | None:
    try:
        meta = json.loads((out / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    # the store's root is created before its mosaicflow attributes are written: not yet a run
    run = meta.get("attributes", {}).get("mosaicflow", {})
    return run.get("stages", {}).get(stage, {}).get("status")


#: The command line, with the user's Ctrl-C (a real SIGINT to the process) arriving while the
#: particles stage runs, whatever the stage's speed.
CTRL_C_DURING_PARTICLES = """
import os, signal, sys, time
# Ctrl-C raises KeyboardInterrupt as at a terminal, even where this test was started from a
# shell that ignores SIGINT in its background jobs (Python then keeps it ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
from mosaicflow.cli import main
from mosaicflow.pipeline.stages import StageMixin

real = StageMixin._stage_particles

def interrupted(self, store):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(60)  # the signal's KeyboardInterrupt ends this
    return real(self, store)

StageMixin._stage_particles = interrupted
sys.exit(main())
"""


@pytest.mark.cluster
def test_ctrl_c_stops_with_one_line_and_a_resumable_store(small_grid, clean, tmp_path):
    out = tmp_path / "run.zarr"
    cmd = [sys.executable, "-c", CTRL_C_DURING_PARTICLES, "run", str(small_grid.folder)]
    cmd += ["--out", str(out), "--chunk", str(CHUNK), "--workers", "1", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted:" in stdout and "--resume" in stdout
    assert "Traceback" not in stdout + stderr
    store = RunStore(str(out), mode="r")
    assert store.stages()["particles"]["status"] == "interrupted"
    assert not any(store.stage_done(s) for s in STAGES[STAGES.index("particles") :])
    Pipeline(_config(small_grid.folder), str(out), resume=True).run()
    _assert_same(RunStore(str(out), mode="r"), clean)


@pytest.mark.cluster
def test_a_worker_killed_in_every_stage_leaves_an_identical_store(
    small_grid, clean, tmp_path, dask_processes
):
    """Through a `dask scheduler` and two `dask worker` processes: as each stage starts one
    worker is SIGKILLed (and a fresh one started); the run finishes with the clean run's store."""
    client, _, workers, address = dask_processes.cluster()
    out = tmp_path / "run.zarr"
    killed: list[str] = []
    stop = threading.Event()

    def kill_one_per_stage() -> None:
        live = list(workers)
        while not stop.is_set():
            for stage in STAGES:
                if stage not in killed and _status(out, stage) == "running":
                    killed.append(stage)
                    dask_processes.kill(live.pop(0))
                    live.append(dask_processes.worker(address))
            time.sleep(0.01)

    chaos = threading.Thread(target=kill_one_per_stage, daemon=True)
    chaos.start()
    try:
        Pipeline(_config(small_grid.folder), str(out), client=client).run()
    finally:
        stop.set()
        chaos.join(timeout=30)
        client.close()
    assert len(killed) >= 6, killed  # most stages lost a worker while running
    _assert_same(RunStore(str(out), mode="r"), clean)


def test_driver_killed_in_the_particles_stage_resumes_the_unmeasured_chunks(
    small_grid, clean, tmp_path
):
    """Each chunk's measurements are one part of the stage's scratch table, moved into place
    whole; a resumed stage measures only the chunks without a part, and ends with the clean
    run's table."""
    out = tmp_path / "run.zarr"
    Pipeline(_config(small_grid.folder), str(out)).run(stop_after="labels")
    killed = 5
    _resume_and_kill(small_grid.folder, out, killed, "_write_part")
    store = RunStore(str(out), mode="r")
    assert store.stages()["particles"]["status"] == "running"
    with pytest.raises(StoreError, match="table 'particles' is not complete"):
        store.read_table("particles")
    Pipeline(_config(small_grid.folder), str(out), resume=True, break_lock=True).run()
    store = RunStore(str(out), mode="r")
    total = clean.stages()["particles"]["chunks_measured"]  # every part, in a clean run
    assert total > killed
    assert store.stages()["particles"]["chunks_measured"] == total - killed
    _assert_same(store, clean)
