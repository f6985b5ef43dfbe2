"""Checkpoint files: round trip in both formats, corrupt or foreign files, weights that misfit."""

from __future__ import annotations

import dask.array as da
import pytest
import torch

from mosaicflow.segmentation import (
    CheckpointError,
    load_checkpoint,
    predict,
    read_checkpoint_metadata,
    save_checkpoint,
)

WINDOW = 64
NORM = {"mean": 800.0, "std": 250.0}


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_checkpoint_round_trip(tmp_path, unet, fmt):
    path = save_checkpoint(
        tmp_path / "m.ckpt",
        unet,
        arch="unet",
        normalization=NORM,
        window=WINDOW,
        threshold=0.6,
        format=fmt,
    )
    meta = read_checkpoint_metadata(path)
    assert (meta.arch, meta.encoder, meta.in_channels, meta.classes) == ("unet", "resnet18", 1, 1)
    assert meta.normalization == NORM and meta.window == WINDOW and meta.threshold == 0.6
    assert meta.activation == "sigmoid" and meta.mosaicflow_version
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    for (k, a), (k2, b) in zip(
        unet.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)


def test_corrupt_checkpoints_name_the_file(tmp_path, unet):
    good = save_checkpoint(tmp_path / "good.safetensors", unet, arch="unet", window=WINDOW)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 10)
    for path in (truncated, garbage, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=path.name):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match=path.name):
            predict(da.zeros((64, 64), chunks=32), path)


def test_weights_that_do_not_fit_the_declared_model_are_refused(tmp_path, unet):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="do not fit arch='fpn'"):
        save_checkpoint(tmp_path / "x.safetensors", unet, arch="fpn")
    with pytest.raises(CheckpointError, match="classes=2"):
        save_checkpoint(tmp_path / "x.safetensors", unet, arch="unet", classes=2)
    # a file whose metadata lies about the channels
    path = save_checkpoint(tmp_path / "m.safetensors", unet, arch="unet", window=WINDOW)
    meta = read_checkpoint_metadata(path)
    lying = tmp_path / "lying.safetensors"
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    save_file(
        state,
        str(lying),
        metadata={"mosaicflow": meta.to_json().replace('"in_channels": 1', '"in_channels": 3')},
    )
    with pytest.raises(CheckpointError, match=r"lying\.safetensors.*in_channels=3.*size mismatch"):
        load_checkpoint(lying)
