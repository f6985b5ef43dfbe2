"""The torchvision shim: smp models build, and only a broken torchvision wheel is patched."""

from __future__ import annotations

import subprocess
import sys


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
