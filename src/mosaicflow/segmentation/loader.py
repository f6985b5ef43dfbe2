"""Training batches, drawn in the training process or in worker processes.

With ``loaders=0`` the training process draws every crop from one generator seeded once, so the
order of draws fixes the model (the shipped model's recorded commands use this). With
``loaders=N`` (N >= 1) worker processes draw them: batch ``step`` of epoch ``epoch`` comes from
its own generator seeded by ``(seed, epoch, step)``, so the model depends on the seed and not on
N. A GPU trains faster than one core draws crops; the workers also score the validation images
at operating points (:func:`mosaicflow.segmentation.operating.image_tallies`).

The workers are forked where the platform can (they inherit the images), else spawned.
"""

from __future__ import annotations

import collections
import multiprocessing
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mosaicflow.segmentation.datasets import Sample, random_crop
from mosaicflow.segmentation.metrics import Tally
from mosaicflow.segmentation.operating import Point, image_tallies, summed

#: What each worker process holds: the training samples, the validation truths, the settings.
_STATE: dict[str, Any] = {}


def draw_batch(
    samples: Sequence[Sample], settings: Any, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``settings.batch`` random crops and their class maps, ``(b, 1, y, x)`` float32 and
    ``(b, y, x)`` int64."""
    picks = rng.integers(0, len(samples), settings.batch)
    crops = [
        random_crop(
            samples[int(i)], settings.crop, rng, settings.scale, settings.invert, settings.rim
        )
        for i in picks
    ]
    x = np.stack([c[0] for c in crops])[:, None]
    y = np.stack([c[1] for c in crops]).astype(np.int64)
    return x, y


def _start(samples: Sequence[Sample], truths: Sequence[np.ndarray], settings: Any) -> None:
    _STATE.update(samples=samples, truths=truths, settings=settings)


def _draw(key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return draw_batch(_STATE["samples"], _STATE["settings"], np.random.default_rng(list(key)))


def _tally(job: tuple[int, tuple[np.ndarray, np.ndarray], Sequence[Point]]) -> list[Tally]:
    index, prob, points = job
    return image_tallies(prob, _STATE["truths"][index], points)


class Batches:
    """Batches for :func:`mosaicflow.segmentation.train.train`; a context manager that stops
    its workers on exit."""

    def __init__(
        self, samples: Sequence[Sample], truths: Sequence[np.ndarray], settings: Any
    ) -> None:
        self.samples, self.truths, self.settings = samples, truths, settings
        self.workers = int(settings.loaders)
        self._rng = np.random.default_rng(settings.seed)
        self._pool: Any = None
        if self.workers:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ctx.Pool(self.workers, _start, (samples, truths, settings))

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The epoch's ``steps_per_epoch`` batches, in order (workers keep two batches each in
        flight, so memory stays bounded however long the epoch)."""
        steps = self.settings.steps_per_epoch
        if self._pool is None:
            for _ in range(steps):
                yield draw_batch(self.samples, self.settings, self._rng)
            return
        keys = iter([(int(self.settings.seed), epoch, step) for step in range(steps)])
        pending: collections.deque = collections.deque()
        for key in keys:
            pending.append(self._pool.apply_async(_draw, (key,)))
            if len(pending) >= 2 * self.workers:
                break
        while pending:
            batch = pending.popleft().get()
            nxt = next(keys, None)
            if nxt is not None:
                pending.append(self._pool.apply_async(_draw, (nxt,)))
            yield batch

    def tallies(
        self, probs: Sequence[tuple[np.ndarray, np.ndarray]], points: Sequence[Point]
    ) -> list[Tally]:
        """Per-point counts over the validation images (``probs`` in their order)."""
        if self._pool is None:
            pairs = zip(probs, self.truths, strict=True)
            per_image = [image_tallies(p, t, points) for p, t in pairs]
        else:
            jobs = [(i, p, list(points)) for i, p in enumerate(probs)]
            per_image = self._pool.map(_tally, jobs, chunksize=1)
        return summed(per_image, len(points))

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
