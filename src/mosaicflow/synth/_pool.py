"""An ordered map over a thread pool for the synthetic grid writers: every tile and every truth
chunk is a pure function of its position, and their NumPy work (noise draws, ufuncs, bincounts)
runs without the GIL, so threads write a large grid several times faster on a many-core node
while the files stay the same byte for byte."""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map", "synth_threads"]

T = TypeVar("T")
R = TypeVar("R")

#: The most threads a writer uses (the memory in flight is about two results per thread).
MAX_THREADS = 16


def synth_threads() -> int:
    """The cores this process may use, at most :data:`MAX_THREADS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, threads: int | None = None
) -> Iterator[R]:
    """``fn`` over ``items`` on a thread pool, the results yielded in the items' order.

    At most ``2 * threads`` items are in flight, so a slow consumer never holds more results
    than that. With one thread it is the plain ``map``.

    Parameters
    ----------
    fn : callable
        A function of one item, safe to call from several threads at once.
    items : iterable
        The inputs.
    threads : int, optional
        Pool size; default :func:`synth_threads`.
    """
    n = threads or synth_threads()
    if n <= 1:
        yield from map(fn, items)
        return
    source = iter(items)
    with ThreadPoolExecutor(n, thread_name_prefix="mosaicflow-synth") as pool:
        pending: deque[Future[R]] = deque(
            pool.submit(fn, item) for item in itertools.islice(source, 2 * n)
        )
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(source, 1):
                pending.append(pool.submit(fn, item))
            yield result
