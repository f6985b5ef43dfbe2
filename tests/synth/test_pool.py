"""The synthetic writers' thread pool: results in order, bounded work in flight, errors raised,
and a grid written by threads equal, byte for byte, to one written by a single thread."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from mosaicflow.synth import _pool, sem


def test_results_come_in_the_items_order():
    def slow_first(i: int) -> int:
        time.sleep(0.02 if i == 0 else 0.0)  # the first item finishes last
        return i * i

    assert list(_pool.ordered_map(slow_first, range(20), threads=4)) == [i * i for i in range(20)]


def test_at_most_two_items_per_thread_are_in_flight():
    lock = threading.Lock()
    started = []

    def record(i: int) -> int:
        with lock:
            started.append(i)
        return i

    consumed = 0
    for i in _pool.ordered_map(record, range(50), threads=3):
        assert i == consumed
        with lock:
            # items submitted but not yet handed to the consumer never exceed 2 x threads
            assert len(started) - consumed <= 2 * 3
        consumed += 1
        time.sleep(0.001)
    assert consumed == 50


def test_an_error_in_an_item_is_raised_to_the_consumer():
    def fail_on_3(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    with pytest.raises(ValueError, match="item 3"):
        list(_pool.ordered_map(fail_on_3, range(10), threads=2))


def _digests(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_grid_written_by_threads_equals_one_written_by_one_thread(tmp_path, monkeypatch):
    options = dict(rows=2, cols=3, tile_shape=(300, 400), missing_tiles=[(2, 2)], seed=4)
    sem.write_maps_grid(tmp_path / "pool", **options)
    monkeypatch.setattr(_pool, "synth_threads", lambda: 1)
    sem.write_maps_grid(tmp_path / "serial", **options)
    pooled, serial = _digests(tmp_path / "pool"), _digests(tmp_path / "serial")
    assert len(serial) > 10 and pooled == serial
