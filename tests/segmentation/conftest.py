"""Fixtures shared by the segmentation tests: a random resnet18 Unet, and the local scheduler
the inference tests compute with (``pytestmark = pytest.mark.usefixtures("local_scheduler")``)."""

from __future__ import annotations

import dask
import pytest


@pytest.fixture(scope="module")
def unet():
    import torch

    from mosaicflow.segmentation import build_model

    torch.manual_seed(0)
    return build_model("unet", "resnet18")


@pytest.fixture
def local_scheduler(request):
    """Compute in this process unless a test asks for the cluster: the session's Client, once
    started by another test, would otherwise become the default scheduler."""
    if request.node.get_closest_marker("cluster"):
        yield
    else:
        with dask.config.set(scheduler="threads"):
            yield
