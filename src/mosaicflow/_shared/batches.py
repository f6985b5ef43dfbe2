"""Small pieces of work grouped into one Dask task each.

The scheduler spends a few milliseconds of CPU on every task, in the process that runs the
pipeline; on a small machine that is CPU the workers wait for. Work that takes about as long
per piece (a tile checked, a pair of overlaps measured, a window counted) is therefore given
to tasks several pieces at a time. Each caller states its own number of pieces per task, from
the cost of one piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` cut into consecutive runs of ``size`` (the last may be shorter), in order."""
    return [items[k : k + size] for k in range(0, len(items), size)]
