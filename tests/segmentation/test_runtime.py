"""The CPU runtime of windowed inference: ONNX Runtime against eager torch on the same windows,
through ``predict``; which runtime ``"auto"`` picks; the settings it refuses."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import torch

from mosaicflow.errors import ConfigError, MosaicflowError
from mosaicflow.segmentation import WindowedPredictor, build_model, predict, save_checkpoint
from mosaicflow.segmentation._onnx import OnnxModel, threads_per_call
from mosaicflow.segmentation._plugin import PLUGIN_NAME, get_cache

pytestmark = pytest.mark.usefixtures("local_scheduler")

pytest.importorskip("onnxruntime")

WINDOW = 64
CHUNKINGS = [(1000, 1000), (50, 70)]
#: ONNX Runtime vs eager torch: probabilities (and raw outputs of this size) within this, ...
P_TOL = 1e-4
#: ... and the masks at 0.5 agree on at least this share of the pixels (measured: all of them).
MASK_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def image():
    # standardised structure plus noise: a random model gives masks with many edges
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:200, :300]
    base = np.sin(yy / 9.0) * np.cos(xx / 13.0) + rng.normal(0, 0.3, yy.shape)
    return base.astype(np.float32)


@pytest.fixture(scope="module")
def models():
    out = {}
    # seeds whose random models cut this image at 0.5 into masks covering 46 % and 36 %
    for arch, seed in (("unet", 2), ("fpn", 3)):
        torch.manual_seed(seed)
        out[arch] = build_model(arch)
    return out


def _agree(a, b):
    return float(((a >= 0.5) == (b >= 0.5)).mean())


@pytest.mark.parametrize("arch", ["unet", "fpn"])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_onnx_equals_torch_on_the_same_windows(image, models, arch, chunks):
    model = models[arch]
    x = da.from_array(image, chunks=chunks)
    exports = get_cache().exports
    eager = predict(x, model, window=WINDOW, runtime="torch").compute()
    fast = predict(x, model, window=WINDOW, runtime="onnx").compute()
    auto = predict(x, model, window=WINDOW).compute()  # "auto" on the CPU: the same session
    assert get_cache().exports - exports <= 1  # once per process and window, not per task
    np.testing.assert_array_equal(auto, fast)
    diff = float(np.abs(fast - eager).max())
    assert 0 < diff <= P_TOL, diff  # not the torch path in disguise, and close to it
    assert 0.2 < (eager >= 0.5).mean() < 0.8  # masks with many edges to flip
    assert _agree(fast, eager) >= MASK_AGREEMENT
    raw_eager = predict(x, model, window=WINDOW, activation=None, runtime="torch").compute()
    raw_fast = predict(x, model, window=WINDOW, activation=None, runtime="onnx").compute()
    assert float(np.abs(raw_fast - raw_eager).max()) <= P_TOL


def test_batch_sizes_tta_and_classes_share_the_export(image, models):
    model = models["unet"]
    x = da.from_array(image[:150, :190], chunks=64)
    ref = predict(x, model, window=WINDOW, runtime="torch").compute()
    for kwargs in ({"batch_size": 1}, {"batch_size": 3}, {"channels_last": True}):
        out = predict(x, model, window=WINDOW, runtime="onnx", **kwargs).compute()
        assert float(np.abs(out - ref).max()) <= P_TOL, kwargs
    tta_ref = predict(x, model, window=WINDOW, tta=True, runtime="torch").compute()
    tta = predict(x, model, window=WINDOW, tta=True, runtime="onnx").compute()
    assert float(np.abs(tta - tta_ref).max()) <= P_TOL
    torch.manual_seed(5)
    two = build_model("unet", classes=2)
    ref2 = predict(x, two, window=WINDOW, classes=2, runtime="torch").compute()
    out2 = predict(x, two, window=WINDOW, classes=2, runtime="onnx").compute()
    assert out2.shape == (2, 150, 190)
    assert float(np.abs(out2 - ref2).max()) <= P_TOL


def test_checkpoint_runs_on_onnx_by_default_and_writes_nothing(tmp_path, image, models):
    x = da.from_array(image * 250 + 800, chunks=(64, 100))
    norm = {"mean": 800.0, "std": 250.0}
    path = save_checkpoint(
        tmp_path / "m.safetensors", models["unet"], arch="unet", normalization=norm, window=WINDOW
    )
    exports = get_cache().exports
    fast = predict(x, path).compute()  # runtime="auto"
    assert get_cache().exports == exports + 1
    eager = predict(x, path, runtime="torch").compute()
    assert float(np.abs(fast - eager).max()) <= P_TOL
    assert _agree(fast, eager) >= MASK_AGREEMENT
    # the export lives in memory: nothing next to the checkpoint, nothing in the working folder
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_auto_picks_the_runtime_by_model_and_settings(models):
    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    unet = models["unet"]
    assert WindowedPredictor(unet).options.runtime == "auto"  # ONNX on a CPU worker
    assert WindowedPredictor(unet, device="cpu").options.runtime == "auto"
    assert WindowedPredictor(unet, runtime="torch").options.runtime == "torch"
    # GPUs, autocast, and modules mosaicflow does not build run in torch as written
    assert WindowedPredictor(unet, device="cuda").options.runtime == "torch"
    assert WindowedPredictor(unet, amp_dtype="bfloat16").options.runtime == "torch"
    assert WindowedPredictor(Double()).options.runtime == "torch"
    assert WindowedPredictor(Double(), runtime="onnx").options.runtime == "onnx"


@pytest.mark.parametrize(
    ("model", "kwargs", "match"),
    [
        ("unet", {"runtime": "fast"}, r"runtime must be one of \['auto', 'torch', 'onnx'\]"),
        ("unet", {"runtime": None}, r"runtime must be one of"),
        ("unet", {"runtime": "onnx", "device": "cuda"}, r"runtime='onnx' runs on the CPU"),
        ("unet", {"runtime": "onnx", "amp_dtype": "float16"}, r"float32; amp_dtype='float16'"),
        ("callable", {"runtime": "onnx"}, r"plain function callable cannot be exported"),
    ],
)
def test_bad_runtime_settings_are_refused(models, model, kwargs, match):
    arg = models["unet"] if model == "unet" else (lambda x: x)
    with pytest.raises(ConfigError, match=match):
        predict(da.zeros((64, 64), chunks=32), arg, window=WINDOW, **kwargs)


def test_a_trace_that_froze_a_value_is_caught(image):
    class PeakScaled(torch.nn.Module):
        def forward(self, x):
            return x / float(x.abs().max())  # a Python number: the trace keeps its example's

    x = da.from_array(image[:64, :64], chunks=64)
    expected = predict(x, PeakScaled(), window=WINDOW, activation=None).compute()  # torch
    np.testing.assert_allclose(expected, image[:64, :64] / np.abs(image[:64, :64]).max(), rtol=1e-6)
    with pytest.raises(MosaicflowError, match=r"PeakScaled module exported to ONNX differs"):
        predict(x, PeakScaled(), window=WINDOW, runtime="onnx").compute()


@pytest.mark.cluster
def test_workers_export_once_with_their_own_thread_count(client, tmp_path, image, models):
    from mosaicflow.segmentation import register_model_plugin

    path = save_checkpoint(tmp_path / "c.safetensors", models["fpn"], arch="fpn", window=WINDOW)
    register_model_plugin(client)
    x = da.from_array(image, chunks=(50, 150))
    out = predict(x, path).compute(scheduler=client)
    predict(x, path, batch_size=2).compute(scheduler=client)

    def sessions(dask_worker):
        import torch

        cache = dask_worker.plugins[PLUGIN_NAME].cache
        threads = [m.threads for m in cache._models.values() if isinstance(m, OnnxModel)]
        return cache.exports, threads, torch.get_num_threads() // dask_worker.state.nthreads

    seen = client.run(sessions)
    assert any(exports for exports, _, _ in seen.values())
    for exports, threads, share in seen.values():
        assert exports <= 1 and threads == [max(share, 1)] * exports, seen
    eager = predict(x, path, runtime="torch").compute(scheduler="threads")
    assert float(np.abs(out - eager).max()) <= P_TOL


def test_threads_per_call_share_the_cores_among_concurrent_tasks():
    cores = torch.get_num_threads()
    with dask.config.set(num_workers=1):
        assert threads_per_call() == cores  # one task at a time: torch's threads
    with dask.config.set(num_workers=cores):
        assert threads_per_call() == 1  # one per core: one thread each
    with dask.config.set(num_workers=4 * cores):
        assert threads_per_call() == 1
