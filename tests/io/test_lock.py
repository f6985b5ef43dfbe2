"""One writer per run store: a second writer is refused with the holder named; a lock whose
process is gone (or whose lease expired) is reported as stale and broken only when asked; a
live lock is never broken."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mosaicflow.errors import StoreError
from mosaicflow.io.layout import LOCK_NAME, target_state
from mosaicflow.io.lock import StoreLock, stale_reason


def _write_lock(folder, **info):
    folder.mkdir(parents=True, exist_ok=True)
    base = {
        "owner": "someone",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": "2026-01-01T00:00:00+00:00",
        "expires": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
        "token": "theirs",
    }
    (folder / LOCK_NAME).write_text(json.dumps({**base, **info}))


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    url = str(tmp_path / "run.zarr")
    first = StoreLock(url)
    first.acquire()
    holder = first.holder()
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(StoreError, match=rf"being written by another run: .*pid {os.getpid()}"):
        StoreLock(url).acquire()
    with pytest.raises(StoreError, match="being written by another run"):
        StoreLock(url).acquire(break_stale=True)  # a live lock is never broken
    first.release()
    assert first.holder() is None
    second = StoreLock(url)
    second.acquire()  # free again
    second.release()


def test_a_folder_holding_only_a_lock_is_not_foreign(tmp_path):
    import fsspec

    lock = StoreLock(str(tmp_path / "new.zarr"))
    lock.acquire()
    fs = fsspec.filesystem("file")
    assert target_state(fs, str(tmp_path / "new.zarr")) == "empty"
    lock.release()


def test_the_lock_of_a_killed_process_is_stale_and_broken_only_when_asked(tmp_path):
    url = str(tmp_path / "run.zarr")
    code = (
        "import sys, time; from mosaicflow.io.lock import StoreLock; "
        f"StoreLock({url!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="being written by another run"):
            StoreLock(url).acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(StoreError, match=rf"not running any more .*{proc.pid}.*--break-lock"):
        StoreLock(url).acquire()
    lock = StoreLock(url)
    lock.acquire(break_stale=True)
    assert lock.holder()["pid"] == os.getpid()
    lock.release()


def test_an_expired_lease_from_another_host_is_stale(tmp_path):
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    _write_lock(tmp_path / "run.zarr", host="elsewhere.example", pid=1, expires=past)
    info = json.loads((tmp_path / "run.zarr" / LOCK_NAME).read_text())
    assert "lease expired" in stale_reason(info)
    with pytest.raises(StoreError, match="lease expired"):
        StoreLock(str(tmp_path / "run.zarr")).check()
    lock = StoreLock(str(tmp_path / "run.zarr"))
    lock.acquire(break_stale=True)
    lock.release()


def test_a_fresh_lease_from_another_host_is_live(tmp_path):
    _write_lock(tmp_path / "run.zarr", host="elsewhere.example", pid=1)
    with pytest.raises(StoreError, match=r"someone@elsewhere\.example"):
        StoreLock(str(tmp_path / "run.zarr")).acquire(break_stale=True)


def test_the_holder_renews_its_lease(tmp_path):
    lock = StoreLock(str(tmp_path / "run.zarr"), lease_s=0.6)
    lock.acquire()
    first = lock.holder()["expires"]
    lock.start_renewing()
    time.sleep(1.0)
    assert lock.holder()["expires"] > first
    assert stale_reason(lock.holder()) is None
    lock.release()
    assert lock.holder() is None


def test_release_never_removes_someone_elses_lock(tmp_path):
    mine = StoreLock(str(tmp_path / "run.zarr"))
    mine.acquire()
    _write_lock(tmp_path / "run.zarr")  # replaced behind our back (e.g. broken by a user)
    mine.release()
    assert json.loads((tmp_path / "run.zarr" / LOCK_NAME).read_text())["token"] == "theirs"
