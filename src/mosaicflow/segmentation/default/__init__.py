"""The shipped default instance model: its weights (``default.safetensors``, float16) and
model card (``MODEL_CARD.md``) live in this folder, inside the installed package."""

from __future__ import annotations

import os
from pathlib import Path

from mosaicflow.errors import CheckpointError

#: The default model's checkpoint, inside the installed package.
DEFAULT_WEIGHTS = Path(__file__).with_name("default.safetensors")
MODEL_CARD = Path(__file__).with_name("MODEL_CARD.md")


def resolve_model_path(model: str | os.PathLike[str], *, what: str = "model") -> Path:
    """The checkpoint file ``model`` names: ``"default"`` is the shipped model, anything else a
    path that must be a file.

    Raises
    ------
    CheckpointError
        No such file (naming ``what`` and the path), or the shipped weights missing from this
        installation.
    """
    if isinstance(model, str) and model == "default":
        if not DEFAULT_WEIGHTS.is_file():
            raise CheckpointError(
                f"{what}: the default model's weights are missing from this installation "
                f"({DEFAULT_WEIGHTS}); reinstall mosaicflow"
            )
        return DEFAULT_WEIGHTS
    path = Path(model).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what}: {path} is not a file (a checkpoint path or 'default')")
    return path
