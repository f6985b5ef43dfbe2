"""The benchmark's ceilings and work models: a stage whose wall time equals its modelled time at
the bounding ceiling is at fraction 1; the strips are registration's own windows; the stage
models count the documented bytes; the real measurements are positive, scaled by the cores and
leave no probe file behind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mosaicflow.bench import ceilings, work
from mosaicflow.config import SegmentConfig
from mosaicflow.stitch.register import _strips, default_max_shift

#: A machine's ceilings as ``machine.ceilings["machine"]`` holds them (round numbers, so that
#: the expected seconds are exact).
MACHINE = {
    "memory_gbps": {"copy": 10.0, "add": 8.0, "used": 10.0},
    "codec": {
        "codec": "ZstdCodec(level 0)",
        "chunk_px": 1024,
        "kinds": {
            kind: {"dtype": "uint8", "encode_mbps": 100.0, "decode_mbps": 400.0, "ratio": 2.0}
            for kind in ceilings.CODEC_KINDS
        },
    },
    "disk": {"write_mbps": 200.0, "read_mbps": 500.0, "file_mib": 64, "read_cold": True},
    "gflops": {"matmul_f32": 50.0, "matmul_f64": 25.0, "conv2d_f32": None, "conv2d_note": "x"},
}


def _rates():
    return ceilings.Rates(MACHINE)


def test_fraction_is_one_when_the_wall_equals_the_modelled_time():
    rates = _rates()
    # 1 GB through memory (0.1 s), 40 MB decoded + 10 MB encoded (0.1 + 0.1 s), 50 MB from
    # disk (0.1 s): the codec bounds the stage at 0.2 s.
    w = work.Work(memory=1e9, decode={"image": 40e6}, encode={"smooth": 10e6}, disk_read=50e6)
    by = work.seconds_by_bound(w, rates)
    assert by == pytest.approx({"memory": 0.1, "codec": 0.2, "disk": 0.1})
    at_ceiling = work.ceiling(w, rates, wall=0.2)
    assert at_ceiling["bound"] == "codec"
    assert at_ceiling["seconds_at_ceiling"] == pytest.approx(0.2)
    assert at_ceiling["fraction"] == pytest.approx(1.0)
    assert work.ceiling(w, rates, wall=2.0)["fraction"] == pytest.approx(0.1)
    assert work.ceiling(w, rates, wall=None)["fraction"] is None
    assert set(at_ceiling) >= {"bound", "seconds_at_ceiling", "fraction", "model"}


def test_model_flops_use_the_conv_rate_where_measured():
    w = work.Work(conv_flops=100e9, flops_f64=25e9)
    assert work.seconds_by_bound(w, _rates())["flops"] == pytest.approx(2.0 + 1.0)
    measured = {**MACHINE, "gflops": {**MACHINE["gflops"], "conv2d_f32": 20.0}}
    assert work.seconds_by_bound(w, ceilings.Rates(measured))["flops"] == pytest.approx(6.0)


@pytest.mark.parametrize(
    "nominal", [(0.0, 1260.0), (810.0, 0.0), (813.4, -3.2), (806.0, 1262.7), (1620.0, 0.0)]
)
def test_strips_are_the_windows_registration_reads(nominal):
    tile_shape, max_shift = (900, 1400), default_max_shift((900, 1400))
    win_i, win_j = _strips(np.rint(nominal).astype(int), tile_shape, math.ceil(max_shift))

    def size(win):
        return max(win[0].stop - win[0].start, 0) * max(win[1].stop - win[1].start, 0)

    pixels, flops = work.pair_work(nominal, tile_shape, max_shift)
    assert pixels == size(win_i) + size(win_j)
    if nominal == (1620.0, 0.0):  # two rows apart: no common pixel, nothing transformed
        assert flops == 0
    else:
        assert flops > 0


def test_stage_work_counts_the_documented_bytes():
    rates = _rates()
    levels = (4096 * 4096, 2048 * 2048, 1024 * 1024)
    P = levels[0]
    w = work.Workload(
        tile_px=20 * 900 * 1400,
        tile_itemsize=1,
        tile_shape=(900, 1400),
        levels=dict.fromkeys(work.KINDS, levels),
        itemsize={"mosaic": 1, "denoised": 1, "probability": 1, "labels": 4},
        pairs=((0.0, 1260.0), (810.0, 0.0)),
        max_shift=90.0,
    )
    stages = work.stage_work(w, rates)
    assert stages["report"] is None
    assert stages["tiles"].disk_read == w.tile_px
    den = stages["denoised"]
    assert den.decode == {"image": P, "smooth": sum(levels[:-1])}
    assert den.encode == {"smooth": sum(levels)}
    assert den.memory == P * (1 + 4 + 16 + 4 + 1) + sum(levels[:-1]) + sum(levels[1:])
    assert stages["probability"].decode["smooth"] == P  # the threshold (histogram counted)
    labels = stages["labels"]
    assert labels.decode["mask"] == 2 * P  # each chunk labelled twice
    assert labels.encode["labels"] == 4 * sum(levels)  # the pyramid
    assert stages["particles"].decode == {"labels": 4 * P, "smooth": P, "image": P}
    register = stages["register"]
    assert register.disk_read == w.strip_px() > 0 and register.flops_f64 > 0
    no_pairs = work.stage_work(work.Workload(**{**w.__dict__, "pairs": ()}), rates)
    assert no_pairs["register"] is None
    found = work.stage_ceilings(
        {"denoised": {"seconds": 1.0}, "report": {"seconds": 1.0}}, w, MACHINE
    )
    assert found["denoised"]["bound"] == "codec" and found["report"]["fraction"] is None
    assert found["report"]["model"].startswith("not modelled")
    # the mosaic stage wrote the denoised image too: its work counts there, without the read
    one = work.stage_work(work.Workload(**{**w.__dict__, "denoised_with_mosaic": True}), rates)
    assert one["denoised"] is None
    mosaic = stages["mosaic"]
    assert one["mosaic"].encode == {**mosaic.encode, **den.encode}
    assert one["mosaic"].decode == {**mosaic.decode, "smooth": den.decode["smooth"]}
    assert one["mosaic"].memory == mosaic.memory + den.memory
    assert one["mosaic"].decode["image"] == mosaic.decode["image"]  # no read of level 0
    assert one["mosaic"].disk_read == mosaic.disk_read + den.disk_read - P / rates.ratio["image"]
    found = work.stage_ceilings(
        {"denoised": {"seconds": 0.0}},
        work.Workload(**{**w.__dict__, "denoised_with_mosaic": True}),
        MACHINE,
    )
    assert found["denoised"]["fraction"] is None
    assert "mosaic stage" in found["denoised"]["model"]


def test_measured_ceilings_are_positive_scaled_and_leave_no_file(tmp_path):
    found = ceilings.machine_ceilings(tmp_path, workers=2, chunk=256)
    assert found["status"] == "measured" and found["seconds"] > 0
    cores = found["cores"]
    assert 1 <= cores <= 2
    one, machine = found["per_core"], found["machine"]
    assert one["memory_gbps"]["used"] > 0
    assert machine["memory_gbps"]["used"] == pytest.approx(
        one["memory_gbps"]["used"] * cores, rel=1e-3
    )
    assert set(one["codec"]["kinds"]) == set(ceilings.CODEC_KINDS)
    for kind in one["codec"]["kinds"].values():
        assert kind["encode_mbps"] > 0 and kind["decode_mbps"] > 0 and kind["ratio"] > 0
    assert one["codec"]["codec"].startswith("ZstdCodec")  # Zarr v3's default for the store
    assert machine["disk"] == one["disk"]  # one device: not scaled
    assert one["disk"]["write_mbps"] > 0 and one["disk"]["read_mbps"] > 0
    assert one["gflops"]["matmul_f32"] > 0 and one["gflops"]["conv2d_f32"] is None
    assert list(tmp_path.iterdir()) == []  # the disk probe is removed


def test_sample_chunks_are_realistic():
    chunks = ceilings.sample_chunks(256)
    assert chunks["image"].dtype == np.uint8 and chunks["labels"].dtype == np.uint32
    covered = (chunks["mask"] > 0).mean()
    assert 0.02 < covered < 0.4 and chunks["labels"].max() > 5


def test_model_flops_are_the_windows_times_one_window(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from mosaicflow.segmentation.models import build_model, save_checkpoint

    model = build_model("unet", "resnet18")
    path = save_checkpoint(tmp_path / "unet.safetensors", model, arch="unet", window=64)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, 64, 64))  # a real forward pass on the CPU
    one = counter.get_total_flops()
    segment = SegmentConfig(method="model", model=str(path), overlap=0.25)
    assert work.model_flops(segment, (64, 64)) == one
    assert work.model_flops(segment, (64, 112)) == 2 * one  # window starts 0 and 48
    tta = SegmentConfig(method="model", model=str(path), overlap=0.25, tta=True)
    assert work.model_flops(tta, (64, 64)) == 8 * one
