"""Particle segmentation: the threshold baseline, windowed model inference, and particles as
instances (a shipped default model, training, evaluation)."""

from __future__ import annotations

from typing import Any

from mosaicflow.errors import CheckpointError
from mosaicflow.segmentation.baselines import fourier_instances
from mosaicflow.segmentation.evaluation import evaluate
from mosaicflow.segmentation.instances import ParticleTooLarge, grow_chunked
from mosaicflow.segmentation.models import (
    CheckpointMeta,
    build_model,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from mosaicflow.segmentation.predict import WindowedPredictor, predict
from mosaicflow.segmentation.segmenter import load_model, segment
from mosaicflow.segmentation.threshold import histogram, minority_polarity, threshold_otsu
from mosaicflow.segmentation.windows import importance_map, window_grid

# importing these pulls in distributed, so they load on first use
_LAZY = {"ModelPlugin", "register_model_plugin"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mosaicflow.segmentation import _plugin

        return getattr(_plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "ModelPlugin",
    "ParticleTooLarge",
    "WindowedPredictor",
    "build_model",
    "evaluate",
    "fourier_instances",
    "grow_chunked",
    "histogram",
    "importance_map",
    "load_checkpoint",
    "load_model",
    "minority_polarity",
    "predict",
    "read_checkpoint_metadata",
    "register_model_plugin",
    "save_checkpoint",
    "segment",
    "threshold_otsu",
    "window_grid",
]
