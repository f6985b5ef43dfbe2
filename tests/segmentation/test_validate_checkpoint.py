"""The pre-flight validation of a checkpoint: the whole file read, the weights loaded into the
model the metadata describes; damage that the metadata-only check misses is named."""

from __future__ import annotations

import pytest
import torch

from mosaicflow.segmentation import CheckpointError, read_checkpoint_metadata, save_checkpoint
from mosaicflow.segmentation.models import validate_checkpoint

WINDOW = 64


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_a_sound_checkpoint_passes(tmp_path, unet, fmt):
    path = save_checkpoint(tmp_path / "m.ckpt", unet, arch="unet", window=WINDOW, format=fmt)
    assert validate_checkpoint(path) == read_checkpoint_metadata(path)


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_truncated_or_missing_files_are_named(tmp_path, unet, fmt):
    good = save_checkpoint(tmp_path / "good.ckpt", unet, arch="unet", window=WINDOW, format=fmt)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        truncated = tmp_path / f"cut{cut}.ckpt"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"'.*cut{cut}\.ckpt': unreadable"):
            validate_checkpoint(truncated)
    with pytest.raises(CheckpointError, match=r"missing\.ckpt'?: no such file"):
        validate_checkpoint(tmp_path / "missing.ckpt")


def test_metadata_that_misdescribes_the_weights(tmp_path, unet):
    """Metadata-only reading passes these; the full validation refuses them."""
    from safetensors.torch import save_file

    meta = read_checkpoint_metadata(
        save_checkpoint(tmp_path / "m.safetensors", unet, arch="unet", window=WINDOW)
    )
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    cases = {
        "channels.safetensors": (
            meta.to_json().replace('"in_channels": 1', '"in_channels": 3'),
            r"channels\.safetensors.*in_channels=3.*size mismatch",
        ),
        "arch.safetensors": (
            meta.to_json().replace('"arch": "unet"', '"arch": "fpn"'),
            r"arch\.safetensors.*do not fit arch='fpn'",
        ),
        "encoder.safetensors": (
            meta.to_json().replace('"encoder": "resnet18"', '"encoder": "resnet-nine"'),
            r"encoder\.safetensors.*unknown encoder 'resnet-nine'",
        ),
    }
    for name, (text, message) in cases.items():
        save_file(state, str(tmp_path / name), metadata={"mosaicflow": text})
        read_checkpoint_metadata(tmp_path / name)  # the header alone looks fine
        with pytest.raises(CheckpointError, match=message):
            validate_checkpoint(tmp_path / name)


def test_weights_must_be_finite_tensors(tmp_path, unet):
    meta = read_checkpoint_metadata(
        save_checkpoint(tmp_path / "m.pt", unet, arch="unet", window=WINDOW, format="torch")
    )
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    torch.save({"mosaicflow": meta.to_json(), "state_dict": state}, tmp_path / "nan.pt")
    read_checkpoint_metadata(tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=rf"nan\.pt'.*NaN or infinite.*{first}"):
        validate_checkpoint(tmp_path / "nan.pt")
    state[first] = 3  # weights_only allows plain numbers; they are no weights
    torch.save({"mosaicflow": meta.to_json(), "state_dict": state}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=rf"odd\.pt'.*\['{first}'\] are not tensors"):
        validate_checkpoint(tmp_path / "odd.pt")
