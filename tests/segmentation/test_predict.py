"""Windowed inference against MONAI's whole-image sliding_window_inference; checkpoints as
models; one model per worker; routing window tasks by worker resources."""

from __future__ import annotations

import os
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from monai.inferers import sliding_window_inference

from mosaicflow.errors import CheckpointError, ConfigError, MosaicflowError
from mosaicflow.segmentation import (
    WindowedPredictor,
    build_model,
    importance_map,
    predict,
    save_checkpoint,
    window_grid,
)

pytestmark = pytest.mark.usefixtures("local_scheduler")

# whole image, chunks smaller than the window and off its grid, thin strips
CHUNKINGS = [(1000, 1000), (50, 70), (37, 128), (200, 23)]
WINDOW = 64
SHAPE = (200, 300)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


class Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    # smooth structure plus noise, like a denoised mosaic, in detector units
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    base = 800 + 300 * np.sin(yy / 11.0) * np.cos(xx / 17.0)
    return (base + rng.normal(0, 40, SHAPE)).astype(np.float32)


def monai(image, predictor, *, window=WINDOW, overlap=0.25, blend="gaussian", batch=4):
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        out = sliding_window_inference(x, window, batch, predictor, overlap=overlap, mode=blend)
    return out[0].numpy()


def standardise(image):
    return (image - np.float32(800.0)) / np.float32(250.0)


# --- oracle equality ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_trivial_predictors_reproduce_input(image, chunks, blend, factor):
    model = Identity() if factor == 1.0 else Scale(factor)
    out = predict(
        da.from_array(image, chunks=chunks), model, window=WINDOW, blend=blend, activation=None
    ).compute()
    assert out.dtype == np.float32 and out.shape == image.shape
    # a weighted mean of equal values: exact up to float32 rounding of the weights' sum
    np.testing.assert_allclose(out, factor * image, rtol=1e-6, atol=0)
    # and the same arithmetic, in the same order, as MONAI: bit-identical
    np.testing.assert_array_equal(out, monai(image, model, blend=blend)[0])


@pytest.fixture(scope="module")
def unet_reference(image, unet):
    x = standardise(image)
    return {blend: monai(x, unet, blend=blend)[0] for blend in ("gaussian", "constant")}


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_unet_equals_monai_whatever_the_chunking(image, unet, unet_reference, chunks, blend):
    x = da.from_array(standardise(image), chunks=chunks)
    out = predict(x, unet, window=WINDOW, blend=blend, activation=None).compute()
    diff = float(np.abs(out - unet_reference[blend]).max())
    assert diff <= 1e-5, diff


def test_activation_auto_is_sigmoid_of_blend(image, unet, unet_reference):
    x = da.from_array(standardise(image), chunks=(64, 100))
    out = predict(x, unet, window=WINDOW).compute()
    expected = torch.sigmoid(torch.from_numpy(unet_reference["gaussian"])).numpy()
    # The blend equals MONAI's to 1e-5 (above; float32 convolutions round differently on
    # different CPUs) and the sigmoid's slope is at most 1/4.
    np.testing.assert_allclose(out, expected, atol=0.25e-5, rtol=0)
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("shape", [(40, 50), (40, 300), (200, 30)])
def test_image_smaller_than_window_is_padded_like_monai(image, unet, shape):
    small = standardise(image[: shape[0], : shape[1]])
    arr = da.from_array(small, chunks=(17, 30))
    # Refused by default, with the remedy in the message; padded as MONAI pads on request.
    with pytest.raises(ConfigError, match=r"smaller than the 64-px window.*pad_small=True"):
        predict(arr, unet, window=WINDOW)
    out = predict(arr, unet, window=WINDOW, activation=None, pad_small=True).compute()
    assert out.shape == shape
    np.testing.assert_allclose(out, monai(small, unet)[0], atol=1e-5, rtol=0)


def test_several_classes_give_a_class_axis(image):
    torch.manual_seed(1)
    model = build_model("unet", classes=2)
    x = standardise(image[:120, :150])
    arr = xr.DataArray(da.from_array(x, chunks=50), dims=("y", "x"))
    raw = predict(arr, model, window=WINDOW, classes=2, activation=None)
    assert raw.dims == ("class", "y", "x") and raw.shape == (2, 120, 150)
    ref = monai(x, model)
    np.testing.assert_allclose(raw.values, ref, atol=1e-5, rtol=0)
    prob = predict(arr, model, window=WINDOW, classes=2).values
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-6)


def test_batch_size_and_channels_last_do_not_change_the_result(image, unet, unet_reference):
    x = da.from_array(standardise(image), chunks=(100, 100))
    for kwargs in ({"batch_size": 1}, {"batch_size": 7}, {"channels_last": True}):
        out = predict(x, unet, window=WINDOW, activation=None, **kwargs).compute()
        assert float(np.abs(out - unet_reference["gaussian"]).max()) <= 1e-5, kwargs


def test_dataarray_in_dataarray_out_and_lazy(no_compute, image):
    arr = xr.DataArray(
        da.from_array(image, chunks=64),
        dims=("y", "x"),
        coords={"y": np.arange(SHAPE[0]) * 2.0, "x": np.arange(SHAPE[1]) * 2.0},
        attrs={"pixel_size_nm": [2.0, 2.0]},
    )
    with no_compute():
        out = predict(arr, Identity(), window=WINDOW)
    assert isinstance(out, xr.DataArray) and isinstance(out.data, da.Array)
    assert out.dtype == np.float32 and out.data.chunks == arr.data.chunks
    assert out.attrs["pixel_size_nm"] == [2.0, 2.0] and out.attrs["predict"]["window"] == WINDOW
    np.testing.assert_array_equal(out["x"], arr["x"])
    np.testing.assert_allclose(
        out.values, torch.sigmoid(torch.from_numpy(image)).numpy(), rtol=1e-6
    )


def test_each_window_is_evaluated_once(image):
    class Counting(torch.nn.Module):
        seen = 0

        def forward(self, x):
            Counting.seen += x.shape[0]
            return x

    grid = window_grid(SHAPE, WINDOW, 0.25)
    predict(da.from_array(image, chunks=(37, 41)), Counting(), window=WINDOW).compute(
        scheduler="sync"
    )
    assert Counting.seen == grid.n_windows == 4 * 6


# --- test-time augmentation --------------------------------------------------------------------

DIHEDRAL = [(flip, k) for flip in (False, True) for k in range(4)]


def _tta_predictor(model):
    def run(x):
        outs = []
        for flip, k in DIHEDRAL:
            t = torch.rot90(torch.flip(x, (-1,)) if flip else x, k, (-2, -1))
            y = torch.rot90(model(t), -k, (-2, -1))
            outs.append(torch.flip(y, (-1,)) if flip else y)
        return torch.stack(outs).mean(0)

    return run


def test_tta_of_an_equivariant_predictor_is_the_input(image):
    out = predict(
        da.from_array(image, chunks=(70, 90)), Identity(), window=WINDOW, tta=True, activation=None
    ).compute()
    np.testing.assert_allclose(out, image, rtol=1e-6, atol=0)


def test_tta_equals_monai_with_averaged_transforms(image, unet):
    # (208 - 64) and (256 - 64) are multiples of the step 48: the grid is symmetric under every
    # flip and quarter turn, so per-window TTA equals averaging 8 whole-image MONAI runs
    x = standardise(image)
    y = np.pad(x[:, :256], ((0, 8), (0, 0)), mode="reflect")
    assert y.shape == (208, 256)
    out = predict(
        da.from_array(y, chunks=(50, 70)), unet, window=WINDOW, tta=True, activation=None
    ).compute()
    runs = []
    for flip, k in DIHEDRAL:
        t = np.rot90(y[:, ::-1] if flip else y, k)
        r = np.rot90(monai(t, unet)[0], -k)
        runs.append(r[:, ::-1] if flip else r)
    expected = np.mean(runs, axis=0)
    assert float(np.abs(out - expected).max()) <= 1e-5
    # and, on any grid, equal to MONAI with a TTA-averaging predictor
    z = x[:150, :190]
    out = predict(da.from_array(z, chunks=64), unet, window=WINDOW, tta=True, activation=None)
    ref = monai(z, _tta_predictor(unet))[0]
    assert float(np.abs(out.compute() - ref).max()) <= 1e-5


# --- rejections --------------------------------------------------------------------------------


def test_default_model_missing_from_an_installation_is_named(image, monkeypatch, tmp_path):
    from mosaicflow.segmentation import default

    monkeypatch.setattr(default, "DEFAULT_WEIGHTS", tmp_path / "default.safetensors")
    with pytest.raises(MosaicflowError, match="missing from this installation"):
        predict(da.from_array(image, chunks=64), "default")


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_overlap_outside_unit_interval_is_refused(image, overlap):
    with pytest.raises(ConfigError, match="overlap"):
        predict(da.from_array(image, chunks=64), Identity(), window=WINDOW, overlap=overlap)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"blend": "linear"}, "blend"),
        ({"window": 0}, "window"),
        ({"batch_size": 0}, "batch_size"),
        ({"activation": "relu"}, "activation"),
        ({"amp_dtype": "float64"}, "amp_dtype"),
        ({"sigma_scale": 0}, "sigma_scale"),
    ],
)
def test_bad_options_are_refused(image, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        predict(da.from_array(image, chunks=64), Identity(), **{"window": WINDOW, **kwargs})


def test_fpn_window_not_multiple_of_encoder_stride_is_refused(image, tmp_path):
    model = build_model("fpn")
    with pytest.raises(ConfigError, match=r"window 80 is not a multiple of 32.*window=96"):
        predict(da.from_array(image, chunks=64), model, window=80)
    path = save_checkpoint(tmp_path / "fpn.safetensors", model, arch="fpn", window=WINDOW)
    with pytest.raises(ConfigError, match=r"fpn/resnet18 checkpoint 'fpn.safetensors' needs"):
        predict(da.from_array(image, chunks=64), path, window=80)
    # smp's Unet pads internally to its stride, so it takes any window
    assert WindowedPredictor(build_model("unet"), window=80).window == 80


def test_nan_input_fails_at_compute_naming_the_chunk(no_compute, image):
    bad = image.copy()
    bad[130, 250] = np.nan
    with no_compute():
        out = predict(da.from_array(bad, chunks=(50, 70)), Identity(), window=WINDOW)
    with pytest.raises(
        MosaicflowError, match=r"chunk \(2, 3\) \(rows 100:150, columns 210:280\).*y=130, x=250"
    ):
        out.compute()


def test_model_with_wrong_output_is_a_clear_error(image):
    class Halves(torch.nn.Module):
        def forward(self, x):
            return x[..., ::2, ::2]

    with pytest.raises(MosaicflowError, match="returned shape"):
        predict(da.from_array(image, chunks=100), Halves(), window=WINDOW).compute()


# --- checkpoints -------------------------------------------------------------------------------

NORM = {"mean": 800.0, "std": 250.0}


def test_predict_from_checkpoint_normalises_and_takes_its_settings(
    tmp_path, image, unet, unet_reference
):
    path = save_checkpoint(
        tmp_path / "m.safetensors", unet, arch="unet", normalization=NORM, window=WINDOW
    )
    out = predict(da.from_array(image, chunks=(45, 80)), path)  # window and activation from it
    expected = torch.sigmoid(torch.from_numpy(unet_reference["gaussian"])).numpy()
    np.testing.assert_allclose(out.compute(), expected, atol=1e-5, rtol=0)
    assert WindowedPredictor(str(path)).window == WINDOW


def test_windowed_predictor_forwards_its_settings_to_predict(tmp_path, image, unet):
    x = da.from_array(image, chunks=(64, 100))
    module = Identity()
    predictor = WindowedPredictor(module, window=WINDOW, activation="none", batch_size=3)
    out = predictor(x)
    # the same graph as the function builds, keys included
    assert out.name == predict(x, module, window=WINDOW, activation=None, batch_size=3).name
    np.testing.assert_allclose(out.compute(), image, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(predictor.weights, importance_map(WINDOW))
    path = save_checkpoint(
        tmp_path / "m.safetensors", unet, arch="unet", normalization=NORM, window=WINDOW
    )
    from_file = WindowedPredictor(path)
    assert from_file(x).name == predict(x, path).name
    assert from_file.describe_model() == "unet/resnet18 checkpoint 'm.safetensors'"


def test_checkpoint_replaced_after_building_the_graph_is_detected(tmp_path, unet):
    path = save_checkpoint(tmp_path / "m.safetensors", unet, arch="unet", window=WINDOW)
    out = predict(da.zeros((64, 64), chunks=64), path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(CheckpointError, match="changed after the graph was built"):
        out.compute()


# --- one model per worker ----------------------------------------------------------------------


def _layer_bytes(arr) -> int:
    """Pickled size of predict's own layers (window tasks and blend tasks), not the input's."""
    graph = arr.__dask_graph__()
    mine = [dict(layer) for name, layer in graph.layers.items() if name.startswith("predict")]
    assert len(mine) == 2
    return len(pickle.dumps(mine))


@pytest.mark.cluster
def test_checkpoint_loaded_once_per_worker_and_graph_carries_no_weights(
    client, tmp_path, image, unet
):
    from mosaicflow.segmentation import register_model_plugin
    from mosaicflow.segmentation._plugin import PLUGIN_NAME

    path = save_checkpoint(
        tmp_path / "m.safetensors", unet, arch="unet", normalization=NORM, window=WINDOW
    )
    register_model_plugin(client)
    x = da.from_array(image, chunks=(50, 60))
    out = predict(x, path)
    weights_bytes = sum(t.numel() * 4 for t in unet.state_dict().values())
    assert _layer_bytes(out) < 200_000 < weights_bytes
    first = out.compute(scheduler=client)
    second = predict(x, path, batch_size=2).compute(scheduler=client)
    loads = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].cache.loads)
    assert len(loads) == 2 and max(loads.values()) == 1, loads
    local = out.compute(scheduler="sync")
    np.testing.assert_allclose(first, local, atol=1e-6, rtol=0)
    np.testing.assert_allclose(second, local, atol=1e-5, rtol=0)


@pytest.mark.cluster
def test_preloading_plugin_and_bare_module_on_cluster(client, tmp_path, image, unet):
    from mosaicflow.segmentation import register_model_plugin
    from mosaicflow.segmentation._plugin import PLUGIN_NAME

    path = save_checkpoint(tmp_path / "p.safetensors", unet, arch="unet", window=WINDOW)
    register_model_plugin(client, path)
    loads = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].cache.loads)
    assert set(loads.values()) == {1}  # loaded at worker start-up
    predict(da.from_array(image, chunks=100), path).compute(scheduler=client)
    loads = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].cache.loads)
    assert set(loads.values()) == {1}  # ... and not again by the tasks
    # a bare module travels once, as one graph key, and is prepared once per worker
    x = da.from_array(standardise(image), chunks=(40, 150))
    out = predict(x, unet, window=WINDOW, activation=None)
    graph = dict(out.__dask_graph__())
    boxed = [k for k, v in graph.items() if type(v).__name__ == "_Boxed"]
    assert len(boxed) == 1
    with pytest.warns(UserWarning, match="large graph"):  # the weights, once: documented
        result = out.compute(scheduler=client)
    loads = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].cache.loads)
    assert max(loads.values()) <= 2  # the preloaded checkpoint + this module
    np.testing.assert_allclose(result, monai(standardise(image), unet)[0], atol=1e-5, rtol=0)


# --- GPU (run on an NVIDIA H200 on 2026-11-26 with benchmarks/gpu/device_session.sh) -----------

#: GPU float32 against the CPU: PyTorch runs float32 convolutions on CUDA as TF32 by default
#: (a 10-bit mantissa); the largest difference measured on an H200 was 9.3e-4.
TF32_ATOL = 2e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("options", [{}, {"amp_dtype": "bfloat16", "channels_last": True}])
def test_gpu_matches_cpu(image, unet, options):
    x = da.from_array(standardise(image), chunks=(64, 100))
    cpu = predict(x, unet, window=WINDOW, device="cpu").compute()
    gpu = predict(x, unet, window=WINDOW, device="cuda", **options).compute()
    tol = TF32_ATOL if not options else 2e-2
    np.testing.assert_allclose(gpu, cpu, atol=tol, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cupy_chunks_go_through_dlpack(image, unet):
    cupy = pytest.importorskip("cupy")
    x = da.from_array(standardise(image), chunks=(64, 100))
    cpu = predict(x, unet, window=WINDOW, device="cpu").compute()
    gpu = predict(x.map_blocks(cupy.asarray), unet, window=WINDOW, device="cuda").compute()
    np.testing.assert_allclose(gpu, cpu, atol=TF32_ATOL, rtol=0)


def test_callers_module_is_left_alone(image):
    torch.manual_seed(2)
    model = build_model("unet").train()
    x = da.from_array(standardise(image[:96, :128]), chunks=48)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = predict(x, model, window=WINDOW, activation=None).compute()
    assert model.training  # not switched to eval mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    np.testing.assert_allclose(
        out, monai(standardise(image[:96, :128]), model.eval())[0], atol=1e-5
    )


@pytest.mark.cluster
def test_window_tasks_land_on_workers_with_the_resource(image, unet, tmp_path):
    """``resources={"GPU": 1}``: every window task runs on the one worker that advertises the
    resource (a real ``dask worker`` process started with ``--resources GPU=1``; the label is
    what Dask routes on, so this runs without a GPU); blend tasks may run anywhere."""
    import subprocess
    import sys

    from distributed import Client, LocalCluster, get_task_stream

    from mosaicflow.segmentation import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "u.safetensors", unet, arch="unet", window=WINDOW)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                cluster.scheduler_address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--resources",
                "GPU=1",
                "--name",
                "gpu",
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client.wait_for_workers(2, timeout=60)
            gpu_worker = next(
                addr
                for addr, w in client.scheduler_info()["workers"].items()
                if w.get("resources", {}).get("GPU")
            )
            arr = da.from_array(image, chunks=(64, 100))
            prob = predict(arr, str(ckpt), resources={"GPU": 1})
            # Low-level fusion would merge the layers and drop their annotations.
            with (
                dask.config.set({"optimization.fuse.active": False}),
                get_task_stream(client) as stream,
            ):
                out = client.compute(prob).result()
            window_workers = {
                t["worker"] for t in stream.data if str(t["key"]).find("predict-windows") >= 0
            }
            assert window_workers == {gpu_worker}
            expected = predict(arr, str(ckpt)).compute(scheduler="threads")
            np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_resources_must_be_positive_amounts(unet):
    with pytest.raises(ConfigError, match="resources"):
        predict(da.zeros((128, 128), chunks=64), unet, window=WINDOW, resources={"GPU": 0})
