"""The model a :func:`~mosaicflow.segmentation.predict` call names, resolved once: where the
tasks load it from, a checkpoint's metadata and the encoder's stride.

torch is imported only inside the functions that hash or load models, so importing this module
is cheap.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mosaicflow.errors import ConfigError

if TYPE_CHECKING:
    from mosaicflow.segmentation._plugin import CheckpointSource, ModuleSource
    from mosaicflow.segmentation.models import CheckpointMeta


#: Checkpoint metadata and encoder stride by file version (path, mtime, size): read once.
_CHECKPOINTS: dict[str, tuple[CheckpointMeta, int | None]] = {}


@dataclass(frozen=True, eq=False)
class _Model:
    """A resolved model: the source the tasks load it from, plus what the graph needs to know."""

    source: CheckpointSource | ModuleSource
    module: Any  # the bare module (travels once as a graph key); None for a checkpoint
    meta: CheckpointMeta | None  # a checkpoint's metadata; None for a bare module
    stride: int | None  # the encoder's output stride, where windows must be a multiple of it

    def describe(self) -> str:
        if self.meta is not None:
            return (
                f"{self.meta.arch}/{self.meta.encoder} checkpoint {Path(self.source.path).name!r}"  # type: ignore[union-attr]
            )
        return f"{type(self.module).__name__} module"


def _output_stride(model: Any) -> int | None:
    if getattr(model, "requires_divisible_input_shape", False):
        encoder = getattr(model, "encoder", None)
        return int(getattr(encoder, "output_stride", 32))
    return None


def _module_token(module: Any) -> str:
    import torch

    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"{type(module).__module__}.{type(module).__qualname__}:{id(module)}".encode())
    if isinstance(module, torch.nn.Module):
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resolve_model(model: Any) -> _Model:
    if isinstance(model, _Model):  # resolved already, by a WindowedPredictor
        return model
    from mosaicflow.segmentation import _plugin
    from mosaicflow.segmentation.models import Checkpoint

    if isinstance(model, Checkpoint):  # from load_model: run from its file, not the object
        model = model.path
    if isinstance(model, str) and model == "default":
        from mosaicflow.segmentation.default import resolve_model_path

        model = resolve_model_path("default", what="predict")
    if isinstance(model, str | os.PathLike):
        from mosaicflow.segmentation.models import load_checkpoint

        source = _plugin.checkpoint_source(model)
        if source.token not in _CHECKPOINTS:
            loaded = load_checkpoint(source.path)  # validates weights against the arch
            _CHECKPOINTS[source.token] = (loaded.meta, _output_stride(loaded.model))
        meta, stride = _CHECKPOINTS[source.token]
        return _Model(source, None, meta, stride)
    if not callable(model):
        raise ConfigError(
            "predict: model must be a torch.nn.Module, a callable on (B, 1, w, w) tensors, "
            f"a checkpoint path or 'default'; got {type(model).__name__}"
        )
    module_source = _plugin.ModuleSource(_module_token(model), type(model).__name__)
    return _Model(module_source, model, None, _output_stride(model))
