"""The replacement rule of ``benchmarks/bench_select.py``: a candidate passes only when it is
strictly better on all four validation measures, and never when it was not held out."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def select():
    sys.path.insert(0, str(BENCH))  # the script imports its neighbour _util
    try:
        spec = importlib.util.spec_from_file_location("bench_select", BENCH / "bench_select.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def _row(values, held_out=True):
    return {"held_out": held_out, **dict(zip(MEASURES, values, strict=True))}


MEASURES = ("pooled F1", "per-image mean F1", "F1 without the fullest image", "Dice")


def test_the_rule(select):
    assert select.MEASURES == MEASURES
    incumbent = _row((0.76, 0.73, 0.80, 0.94))
    assert select.verdict(_row((0.80, 0.75, 0.81, 0.95)), incumbent) == "passes"
    # held-out status unknown (no recorded split): judged on the measures alone
    assert select.verdict(_row((0.80, 0.75, 0.81, 0.95), None), incumbent) == "passes"
    assert select.verdict(_row((0.83, 0.77, 0.81, 0.92)), incumbent) == "no (Dice)"
    # a tie is not better
    assert select.verdict(_row((0.76, 0.75, 0.81, 0.95)), incumbent) == "no (pooled F1)"
    assert select.verdict(_row((0.9, 0.9, 0.9, 0.99), False), incumbent) == "not held out"
    nan = float("nan")
    assert select.verdict(_row((nan, 0.75, 0.81, 0.95)), incumbent) == "no (pooled F1)"
