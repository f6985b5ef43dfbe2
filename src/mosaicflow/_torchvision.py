"""Make ``torchvision`` importable when its compiled operators cannot load.

segmentation-models-pytorch imports ``torchvision.models`` (pure Python) for its encoders. A
torchvision wheel built for another torch variant (a CUDA build next to a CPU torch) fails at
import because its ``_meta_registrations`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally, and those operators only exist once the C++ extension
loaded. When, and only when, that happens, this module declares the two operator schemas so the
import completes. The compiled operators stay unavailable: calling ``torchvision.ops.nms`` then
raises torchvision's own "Couldn't load custom C++ ops" error. mosaicflow never calls them.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

# Schemas of the operators torchvision registers fake kernels for even without its extension.
_UNCONDITIONAL_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING_OP_MESSAGE = "torchvision::nms does not exist"

# Keeps the operator library alive for the life of the process (dropping it unregisters).
_fragment: Any = None
#: True once the schemas had to be declared because torchvision's extension did not load.
patched = False


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _declare_schemas() -> None:
    global _fragment
    import torch

    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _UNCONDITIONAL_SCHEMAS.values():
        _fragment.define(schema)


def import_torchvision() -> ModuleType:
    """Import and return ``torchvision``, working around a wheel whose C++ ops cannot load.

    Returns
    -------
    module
        The ``torchvision`` module. ``torchvision.models`` works; ``torchvision.ops`` compiled
        operators work only when the extension itself loaded.

    Raises
    ------
    ImportError
        torchvision is not installed, or fails to import for another reason.
    """
    global patched
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "models"):
        return sys.modules["torchvision"]
    try:
        import torchvision
    except RuntimeError as exc:
        if _MISSING_OP_MESSAGE not in str(exc):
            raise ImportError(f"torchvision failed to import: {exc}") from exc
        _forget_partial_import()
        _declare_schemas()
        patched = True
        import torchvision
    return torchvision


def import_smp() -> ModuleType:
    """Import ``segmentation_models_pytorch`` after making ``torchvision`` importable."""
    import_torchvision()
    import segmentation_models_pytorch

    return segmentation_models_pytorch
