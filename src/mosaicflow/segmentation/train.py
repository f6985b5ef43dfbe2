"""Training a three-class instance model (background, interior, contact): the loop, early
stopping, the threshold sweep and K-fold cross-validation.

One training step draws ``batch`` random crops
(:func:`mosaicflow.segmentation.datasets.random_crop`: scale jitter, rot90/flip, gamma,
contrast inversion, blur, noise) and minimises cross-entropy plus soft Dice; the crops are drawn
in the training process or, with ``loaders``, in worker processes
(:mod:`mosaicflow.segmentation.loader`). An epoch is ``steps_per_epoch`` steps, then the model
segments every validation image whole and is scored by instances
(:mod:`mosaicflow.segmentation.metrics`); the best epoch's weights are kept, and training stops
after ``patience`` epochs without improvement. The learning rate follows a cosine from ``lr``
to 0 over ``max_epochs`` (it depends on the step count only, so a seed gives the same model;
``max_minutes`` gives up that guarantee: training stops before an epoch that would end past it,
judged by the slowest epoch so far; so does a GPU, whose kernels round differently from run to
run). At the end the foreground and seed thresholds are swept on the validation images
(:mod:`mosaicflow.segmentation.operating`) and the best pair is stored in the checkpoint.

torch is imported inside the functions.
"""

from __future__ import annotations

import copy
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mosaicflow.errors import CheckpointError, ConfigError
from mosaicflow.segmentation.datasets import PERCENTILES, Sample
from mosaicflow.segmentation.loader import Batches
from mosaicflow.segmentation.operating import (
    EPOCH_POINTS,
    FIXED_POINT,
    best_point,
    or_zero,
    sweep_thresholds,
)
from mosaicflow.segmentation.targets import CLASS_NAMES, probabilities_u8

if TYPE_CHECKING:
    import torch

SELECTIONS = ("points", "fixed")


@dataclass
class TrainSettings:
    """How to train (every field has a default; ``mosaicflow train`` sets them from options)."""

    arch: str = "unet"
    encoder: str = "resnet18"
    decoder_channels: tuple[int, ...] | None = (128, 64, 32, 16, 16)
    crop: int = 256
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_epochs: int = 60
    steps_per_epoch: int = 50
    patience: int = 10
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None
    window: int = 512
    scale: tuple[float, float] = (0.3, 1.5)
    contact_weight: float = 2.0
    invert: float = 0.0
    rim: float = 0.0
    select: str = "points"
    device: str = "auto"
    loaders: int = 0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid setting."""
        for name in ("crop", "batch", "max_epochs", "steps_per_epoch", "patience", "window"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"train: {name} must be a positive integer, got {v!r}")
        if self.crop % 32 or self.window % 32:
            raise ConfigError(
                f"train: crop ({self.crop}) and window ({self.window}) must be multiples of 32"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"train: lr must be a positive number, got {self.lr!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"train: max_minutes must be positive, got {self.max_minutes!r}")
        if self.select not in SELECTIONS:
            raise ConfigError(
                f"train: select must be one of {', '.join(SELECTIONS)}, got {self.select!r}"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"train: device must be auto, cpu or cuda[:N], got {self.device!r}")
        if not isinstance(self.loaders, int) or isinstance(self.loaders, bool) or self.loaders < 0:
            raise ConfigError(f"train: loaders must be 0 or more, got {self.loaders!r}")
        if not 0 <= self.rim < 1:
            raise ConfigError(f"train: rim must be in [0, 1), got {self.rim!r}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ConfigError(
                f"train: scale must be (low, high) with 0 < low <= high, got {self.scale}"
            )


@dataclass
class TrainResult:
    """What a training run produced."""

    path: Path | None
    best_epoch: int
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_seed_px: int = 0
    validation: dict[str, Any] = field(default_factory=dict)
    seconds_per_epoch: float = 0.0
    model: Any = None


def _model_for(settings: TrainSettings, init: str | os.PathLike[str] | None) -> tuple[Any, dict]:
    """The model to train (fresh, or the weights of ``init``) and its architecture fields."""
    from mosaicflow.segmentation.models import build_model, load_checkpoint

    if init is None:
        arch = {
            "arch": settings.arch,
            "encoder": settings.encoder,
            "decoder_channels": list(settings.decoder_channels)
            if settings.decoder_channels
            else None,
        }
        model = build_model(
            settings.arch,
            settings.encoder,
            in_channels=1,
            classes=len(CLASS_NAMES),
            decoder_channels=settings.decoder_channels,
        )
        return model, arch
    from mosaicflow.segmentation.default import resolve_model_path

    path = resolve_model_path(init, what="--init")
    loaded = load_checkpoint(path)
    meta = loaded.meta
    if meta.classes != len(CLASS_NAMES) or meta.extra.get("classes") != list(CLASS_NAMES):
        raise CheckpointError(
            f"--init {path}: a {meta.arch}/{meta.encoder} model with {meta.classes} output "
            f"class(es), not a mosaicflow instance model ({', '.join(CLASS_NAMES)}); fine-tuning "
            "starts from an instance model such as 'default'"
        )
    arch = {"arch": meta.arch, "encoder": meta.encoder, "decoder_channels": meta.decoder_channels}
    return loaded.model, arch


def softmax_whole(model: Any, image: np.ndarray) -> np.ndarray:
    """The model's softmax on a whole normalised image (reflect-padded to a multiple of 32),
    ``(3, y, x)`` float32, computed on the device that holds the model."""
    import torch

    h, w = image.shape
    ph, pw = (-h) % 32, (-w) % 32
    img = np.pad(image, ((0, ph), (0, pw)), mode="reflect") if ph or pw else image
    device = next(model.parameters()).device
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None].to(device)
        prob = torch.softmax(model(x), dim=1)[0, :, :h, :w].cpu().numpy()
    return prob


def training_device(name: str = "auto") -> torch.device:
    """The device to train on (the crops are drawn on the CPU either way): ``auto`` is the first
    CUDA device where torch sees one, else the CPU. A CUDA device that torch does not see is a
    :class:`ConfigError`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(
                f"train: --device {name}: torch sees {count} CUDA device(s) here; use --device "
                "cpu (or auto)"
            )
    return device


def _loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, target, weight=weights)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, prob.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()
    return ce + dice


def train(
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    settings: TrainSettings | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    init: str | os.PathLike[str] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    provenance: dict[str, Any] | None = None,
) -> TrainResult:
    """Train an instance model and write its checkpoint.

    Parameters
    ----------
    train_samples, val_samples : sequence of Sample
        Training images (crops are drawn from them) and validation images (segmented whole for
        early stopping and the threshold sweep); neither may be empty.
    settings : TrainSettings, optional
    out : path, optional
        Checkpoint to write (safetensors); rewritten at each improvement, so a stopped run
        leaves its best model so far.
    init : path or "default", optional
        Start from these weights (fine-tuning); the architecture is the checkpoint's.
    on_epoch, on_step : callable, optional
        Called with each epoch's record, and with ``(step, steps_per_epoch)``.
    provenance : dict, optional
        Stored in the checkpoint (data, command).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Invalid settings or an empty sample set.
    CheckpointError
        ``init`` missing, unreadable or not an instance model.
    """
    import torch

    settings = settings or TrainSettings()
    settings.check()
    if not train_samples:
        raise ConfigError("train: no training images")
    if not val_samples:
        raise ConfigError("train: no validation images")
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    # the workers start before CUDA does, so that a forked worker holds no CUDA state
    truths = [s.labels for s in val_samples]
    with Batches(train_samples, truths, settings) as batches:
        device = training_device(settings.device)
        return _fit(
            batches, val_samples, settings, device, out, init, on_epoch, on_step, provenance
        )


def _fit(
    batches: Batches,
    val_samples: Sequence[Sample],
    settings: TrainSettings,
    device: torch.device,
    out: str | os.PathLike[str] | None,
    init: str | os.PathLike[str] | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    on_step: Callable[[int, int], None] | None,
    provenance: dict[str, Any] | None,
) -> TrainResult:
    import torch

    torch.manual_seed(settings.seed)
    model, arch = _model_for(settings, init)
    model.to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    total = settings.max_epochs * settings.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    weights = torch.tensor([1.0, 1.0, settings.contact_weight], device=device)
    truths = batches.truths
    best_f1, best_epoch, best_state = -1.0, 0, None
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    stale = 0
    points = EPOCH_POINTS if settings.select == "points" else FIXED_POINT
    for epoch in range(1, settings.max_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for step, (x, y) in enumerate(batches.epoch(epoch)):
            opt.zero_grad(set_to_none=True)
            x_t, y_t = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            loss = _loss(model(x_t), y_t, weights)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())  # read once per epoch: no wait for the GPU per step
            if on_step:
                on_step(step + 1, settings.steps_per_epoch)
        model.eval()
        probs = [probabilities_u8(softmax_whole(model, s.image)) for s in val_samples]
        point, scores = best_point(probs, truths, points, batches.tallies)
        record = {
            "epoch": epoch,
            "loss": float(torch.stack(losses).double().mean()),
            "lr": float(sched.get_last_lr()[0]),
            "val_f1": scores["f1"],
            "val_dice": scores["pixel_dice"],
            "val_point": list(point),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        history.append(record)
        f1 = or_zero(scores["f1"])
        improved = f1 > best_f1
        if improved:
            best_f1, best_epoch, stale = f1, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        record["best"] = improved
        if on_epoch:
            on_epoch(record)
        if improved and out is not None:
            _write(out, model, arch, settings, point, history, provenance)
        if stale >= settings.patience:
            break
        # stop before an epoch that would end past the budget (the slowest one so far as guide)
        slowest = max(r["seconds"] for r in history)
        budget = (settings.max_minutes or math.inf) * 60
        if time.perf_counter() - start + slowest > budget:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    probs = [probabilities_u8(softmax_whole(model, s.image)) for s in val_samples]
    fg_t, seed_t, min_seed, sweep = sweep_thresholds(probs, truths, batches.tallies)
    result = TrainResult(
        path=None,
        best_epoch=best_epoch,
        epochs=len(history),
        history=history,
        foreground_threshold=fg_t,
        seed_threshold=seed_t,
        min_seed_px=min_seed,
        validation=sweep,
        seconds_per_epoch=float(np.mean([h["seconds"] for h in history])),
        model=model,
    )
    if out is not None:
        result.path = _write(
            out, model, arch, settings, (fg_t, seed_t, min_seed), history, provenance
        )
    return result


def _write(
    out: str | os.PathLike[str],
    model: Any,
    arch: dict[str, Any],
    settings: TrainSettings,
    thresholds: tuple[float, float, int],
    history: list[dict[str, Any]],
    provenance: dict[str, Any] | None,
) -> Path:
    from mosaicflow.segmentation.models import save_checkpoint

    fg_t, seed_t, min_seed = thresholds
    extra = {
        "kind": "instances",
        "classes": list(CLASS_NAMES),
        "seed_threshold": seed_t,
        "min_seed_px": int(min_seed),
        "input": {"scale": "percentiles", "percentiles": list(PERCENTILES)},
        "training": {
            "settings": {k: v for k, v in asdict(settings).items()},
            "epochs": len(history),
            "history": history[-200:],
            **(provenance or {}),
        },
    }
    return save_checkpoint(
        out,
        model,
        arch=arch["arch"],
        encoder=arch["encoder"],
        in_channels=1,
        classes=len(CLASS_NAMES),
        decoder_channels=arch["decoder_channels"],
        window=settings.window,
        threshold=fg_t,
        activation="softmax",
        extra=extra,
        half=True,
    )


def retune(
    init: str | os.PathLike[str], val_samples: Sequence[Sample], out: str | os.PathLike[str]
) -> TrainResult:
    """Sweep an instance checkpoint's thresholds (foreground, seed, smallest seed) again on
    validation images and write it to ``out`` with the best ones; the weights and the rest of
    its metadata are kept."""
    from mosaicflow.segmentation.models import save_checkpoint

    model, _ = _model_for(TrainSettings(), init)
    from mosaicflow.segmentation.default import resolve_model_path
    from mosaicflow.segmentation.models import read_checkpoint_metadata

    meta = read_checkpoint_metadata(resolve_model_path(init, what="--init"))
    model.eval()
    probs = [probabilities_u8(softmax_whole(model, s.image)) for s in val_samples]
    fg_t, seed_t, min_seed, sweep = sweep_thresholds(probs, [s.labels for s in val_samples])
    extra = {**meta.extra, "seed_threshold": seed_t, "min_seed_px": int(min_seed)}
    extra["retuned_on"] = [s.name for s in val_samples]
    path = save_checkpoint(
        out,
        model,
        arch=meta.arch,
        encoder=meta.encoder,
        in_channels=meta.in_channels,
        classes=meta.classes,
        decoder_channels=meta.decoder_channels,
        window=meta.window,
        threshold=fg_t,
        activation=meta.activation,
        extra=extra,
        half=True,
    )
    return TrainResult(
        path=path,
        best_epoch=0,
        epochs=0,
        foreground_threshold=fg_t,
        seed_threshold=seed_t,
        min_seed_px=int(min_seed),
        validation=sweep,
        model=model,
    )
