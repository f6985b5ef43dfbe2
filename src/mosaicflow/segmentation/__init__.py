"""Particle segmentation: the threshold baseline (and the windowed models to come)."""

from __future__ import annotations

from mosaicflow.segmentation.threshold import histogram, threshold_otsu

__all__ = ["histogram", "threshold_otsu"]
