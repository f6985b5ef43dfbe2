"""Fixtures shared by the segmentation tests: a random resnet18 Unet."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def unet():
    import torch

    from mosaicflow.segmentation import build_model

    torch.manual_seed(0)
    return build_model("unet", "resnet18")
