"""Denoising of mosaics, blockwise and equal to the whole-image SciPy/scikit-image call."""

from __future__ import annotations

from mosaicflow.restoration.gaussian import gaussian

__all__ = ["gaussian"]
