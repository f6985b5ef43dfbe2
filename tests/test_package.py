"""Import hygiene, dispatch and the torchvision shim."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage

from mosaicflow import dispatch


def test_import_needs_no_gpu_torch_or_cluster():
    # cupy/cucim made unimportable: the import must not even try them.
    code = (
        "import sys\n"
        "for m in ('cupy', 'cucim', 'cupyx', 'dask_cuda'):\n"
        "    sys.modules[m] = None\n"
        "import mosaicflow, mosaicflow.pipeline, mosaicflow.measure, mosaicflow.restoration\n"
        "import mosaicflow.stitch, mosaicflow.segmentation, mosaicflow.cli\n"
        "bad = [m for m in ('torch', 'cupy', 'cucim', 'distributed') if sys.modules.get(m)]\n"
        "assert not bad, bad\n"
        "print(mosaicflow.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_dispatch_numpy_gets_scipy():
    image = np.zeros((4, 4))
    assert dispatch.get("gaussian_filter", image) is scipy.ndimage.gaussian_filter
    assert dispatch.array_module(image) is np
    with pytest.raises(KeyError, match="known"):
        dispatch.get("no_such_function", image)


def test_dispatch_uses_dask_meta():
    import dask.array as da

    assert dispatch.get("label", da.zeros((4, 4), chunks=2)) is scipy.ndimage.label


def test_torchvision_shim_builds_smp_models():
    import torch

    from mosaicflow import _torchvision

    smp = _torchvision.import_smp()
    for arch in (smp.Unet, smp.FPN):
        model = arch("resnet18", encoder_weights=None, in_channels=1, classes=1).eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 1, 64, 64))
        assert out.shape == (1, 1, 64, 64)


def test_torchvision_shim_only_patches_a_broken_wheel():
    # In a fresh interpreter: does plain torchvision import? The shim must agree with that.
    probe = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True, check=False
    )
    code = (
        "from mosaicflow import _torchvision as t\n"
        "tv = t.import_torchvision()\n"
        "import torch\n"
        "print('patched' if t.patched else 'native')\n"
        "try:\n"
        "    tv.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)\n"
        "    print('nms-ok')\n"
        "except RuntimeError as e:\n"
        "    print('nms-error', 'custom C++ ops' in str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    if probe.returncode == 0:
        assert lines[0] == "native"
    else:
        assert "torchvision::nms does not exist" in probe.stderr
        assert lines[:3] == ["patched", "nms-error", "True"]
