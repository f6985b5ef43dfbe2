"""Batches drawn in worker processes: the same crops whatever the number of workers, the same
counts as the training process computes, and the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mosaicflow.segmentation.loader import Batches, draw_batch
from mosaicflow.segmentation.operating import EPOCH_POINTS, best_point, image_tallies, summed
from mosaicflow.segmentation.targets import INTERIOR, instance_classes
from mosaicflow.segmentation.train import train

from .test_train import _file_state, field_samples, tiny


@pytest.fixture(scope="module")
def samples():
    return field_samples(3, seed=20)


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for (x, y) in zip(a, b, strict=True))


def test_in_process_batches_follow_one_generator(samples):
    s = tiny(steps_per_epoch=3, seed=4)
    rng = np.random.default_rng(4)
    expected = [draw_batch(samples, s, rng) for _ in range(6)]
    with Batches(samples, [], s) as b:
        got = list(b.epoch(1)) + list(b.epoch(2))
    assert len(got) == 6
    assert all(_equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("workers", [1, 3])
def test_worker_batches_depend_on_seed_epoch_and_step_only(samples, workers):
    s = tiny(steps_per_epoch=5, seed=4, loaders=workers)
    with Batches(samples, [], s) as b:
        got = list(b.epoch(2))
    expected = [draw_batch(samples, s, np.random.default_rng([4, 2, k])) for k in range(5)]
    assert len(got) == 5
    assert all(_equal(g, e) for g, e in zip(got, expected, strict=True))
    # another epoch draws other crops
    assert not _equal(
        got[0], expected_epoch3 := draw_batch(samples, s, np.random.default_rng([4, 3, 0]))
    )
    assert expected_epoch3[0].shape == got[0][0].shape


def test_worker_counts_equal_the_training_process_counts(samples):
    """Noisy probabilities around the truth, so that the points score differently."""
    rng = np.random.default_rng(3)
    truths = [s.labels for s in samples]
    probs = []
    for t in truths:
        fg = np.where(t > 0, 170, 60) + rng.integers(0, 80, t.shape)
        interior = np.where(instance_classes(t) == INTERIOR, 200, 40) + rng.integers(0, 50, t.shape)
        probs.append((fg.astype(np.uint8), interior.astype(np.uint8)))
    pairs = zip(probs, truths, strict=True)
    here = summed([image_tallies(p, t, EPOCH_POINTS) for p, t in pairs], len(EPOCH_POINTS))
    assert len({t.tp for t in here}) > 1  # the points differ
    with Batches(samples, truths, tiny(loaders=2)) as b:
        there = b.tallies(probs, EPOCH_POINTS)
        chosen = best_point(probs, truths, EPOCH_POINTS, b.tallies)
    for a, b in zip(there, here, strict=True):
        assert a.scores() == pytest.approx(b.scores(), nan_ok=True)
    assert [(t.tp, t.fp, t.fn, t.tp_px) for t in there] == [
        (t.tp, t.fp, t.fn, t.tp_px) for t in here
    ]
    assert chosen[0] == best_point(probs, truths, EPOCH_POINTS)[0]


def test_the_model_does_not_depend_on_the_number_of_workers(samples, tmp_path):
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"w{n}.safetensors"
        # on the CPU: a GPU's kernels round differently from run to run
        settings = tiny(loaders=n, steps_per_epoch=2, device="cpu")
        result = train(samples[:2], samples[2:], settings, out)
        runs[n] = (_file_state(out), [(r["loss"], r["val_f1"]) for r in result.history])
    (a, ha), (b, hb) = runs[1], runs[2]
    assert ha == hb
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_spawned_workers_draw_the_same_batches(samples, monkeypatch):
    """Where a platform cannot fork (macOS, Windows), the workers are spawned and get the
    samples by pickling: the batches are the same."""
    import multiprocessing

    s = tiny(steps_per_epoch=2, seed=5, loaders=1)
    with Batches(samples, [], s) as b:
        forked = list(b.epoch(1))
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with Batches(samples, [], s) as b:
        assert b._pool._ctx.get_start_method() == "spawn"
        spawned = list(b.epoch(1))
    assert all(_equal(a, c) for a, c in zip(forked, spawned, strict=True))
