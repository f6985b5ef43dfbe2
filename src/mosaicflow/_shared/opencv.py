"""OpenCV, where it computes SciPy's or NumPy's numbers faster: imported on first use (not at
``import mosaicflow``), ``None`` where it is not installed, so every caller keeps its own
NumPy / SciPy path."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def module() -> Any:
    """The ``cv2`` module, or None without OpenCV (a dependency of the package)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - exercised only where OpenCV is missing
        return None
    return cv2
