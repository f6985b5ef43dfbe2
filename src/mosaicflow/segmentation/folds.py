"""Splitting labelled images for training and validation, and K-fold cross-validation of the
training recipe (each fold held out once, scored by instances)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mosaicflow.errors import ConfigError
from mosaicflow.segmentation.datasets import Sample
from mosaicflow.segmentation.operating import score
from mosaicflow.segmentation.targets import probabilities_u8
from mosaicflow.segmentation.train import TrainSettings, softmax_whole, train


def split(
    samples: Sequence[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """A seeded random split: ``(train, validation)``, at least one image in each.

    Raises
    ------
    ConfigError
        Fewer than two images, or a fraction outside (0, 1).
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"train: the validation fraction must be in (0, 1), got {val_fraction}")
    if len(samples) < 2:
        raise ConfigError(
            f"train: {len(samples)} labelled image(s); at least 2 are needed (one to train on, "
            "one to validate)"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(len(samples) - 1, max(1, round(val_fraction * len(samples))))
    val = [samples[i] for i in order[:n_val]]
    rest = [samples[i] for i in order[n_val:]]
    return rest, val


def cross_validate(
    samples: Sequence[Sample],
    folds: int,
    settings: TrainSettings,
    *,
    val_fraction: float = 0.1,
    extra_train: Sequence[Sample] = (),
    init: str | os.PathLike[str] | None = None,
    only: Sequence[int] | None = None,
    on_fold: Callable[[int, dict[str, Any]], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """K-fold cross-validation of the recipe: each fold is held out once, a model is trained on
    the rest (with its own validation split for early stopping and thresholds) and scored on the
    held-out fold. Returns the per-fold scores and their mean and standard deviation.

    ``only`` (fold numbers from 1) runs just those folds of the same split, so that the folds
    can run in separate processes or on separate machines; :func:`summarise` joins their rows.
    """
    if not isinstance(folds, int) or folds < 2 or folds > len(samples):
        raise ConfigError(f"--folds must be an integer from 2 to {len(samples)}, got {folds!r}")
    wanted = set(range(1, folds + 1)) if only is None else set(only)
    if not wanted or not wanted <= set(range(1, folds + 1)):
        raise ConfigError(
            f"--fold: fold numbers go from 1 to {folds} (--folds), got {sorted(only or [])}"
        )
    order = np.random.default_rng(settings.seed).permutation(len(samples))
    parts = np.array_split(order, folds)
    rows = []
    for k, held in enumerate(parts):
        if k + 1 not in wanted:
            continue
        held_set = set(held.tolist())
        test = [samples[i] for i in held]
        rest = [samples[i] for i in order if i not in held_set]
        tr, va = split(rest, val_fraction, settings.seed + k)
        result = train(
            list(tr) + list(extra_train), va, settings, None, init=init, on_epoch=on_epoch
        )
        probs = [probabilities_u8(softmax_whole(result.model, s.image)) for s in test]
        s = score(
            probs,
            [t.labels for t in test],
            result.foreground_threshold,
            result.seed_threshold,
            result.min_seed_px,
        ).scores()
        row = {
            "fold": k + 1,
            "images": len(test),
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "seconds_per_epoch": round(result.seconds_per_epoch, 2),
            **s,
        }
        rows.append(row)
        if on_fold:
            on_fold(k + 1, row)
    return {"folds": rows, "summary": summarise(rows)}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over folds of each score (the ``folds`` rows of one or more
    :func:`cross_validate` results)."""
    keys = ("f1", "precision", "recall", "pixel_dice", "median_ecd_ratio")
    return {key: _mean_std([r[key] for r in rows]) for key in keys}


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and standard deviation over the defined values (NaN when none is)."""
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(np.mean(v)), "std": float(np.std(v))}
