"""The CPU runtime of windowed inference: a torch model exported to ONNX in memory and run by
ONNX Runtime, about twice as fast as eager torch on the CPU (docs/INFERENCE.md).

Which runtime a :func:`~mosaicflow.segmentation.predict` call uses is settled in two steps:
:func:`plan_runtime` checks the setting when the graph is built, :func:`resolve_runtime` decides
``"auto"`` on the worker, where the device is known. The export happens once per worker process,
in the model cache (:mod:`mosaicflow.segmentation._plugin`), into a bytes buffer: nothing is
written to disk.

torch and onnxruntime are imported only inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import sys
import warnings
from typing import TYPE_CHECKING, Any

from mosaicflow._shared.validate import check_choice
from mosaicflow.errors import ConfigError, MosaicflowError

if TYPE_CHECKING:
    import torch

#: The runtimes ``predict(runtime=...)`` accepts.
RUNTIMES = ("auto", "torch", "onnx")
#: The model classes (segmentation-models-pytorch) that ``"auto"`` exports: those mosaicflow
#: builds and tests the export of. Any other module runs in torch as written, since a trace
#: freezes Python control flow and drops side effects.
EXPORTABLE = {"Unet", "FPN"}
#: The export check: ``max |ORT - torch| <= CHECK_RTOL * max(1, max |torch|)`` on one batch.
CHECK_RTOL = 1e-3
OPSET = 17


def _is_builtin_arch(module: Any) -> bool:
    cls = type(module)
    return cls.__module__.startswith("segmentation_models_pytorch") and cls.__name__ in EXPORTABLE


def plan_runtime(
    runtime: str, *, module: Any, checkpoint: bool, device: str, amp_dtype: str | None
) -> str:
    """The runtime a predict call's tasks carry: ``"torch"``, ``"onnx"`` or ``"auto"``.

    ``"auto"`` stays ``"auto"`` (decided on the worker by :func:`resolve_runtime`) for a
    checkpoint or a segmentation-models-pytorch Unet/FPN, on the CPU or ``device="auto"``,
    without ``amp_dtype``; otherwise it becomes ``"torch"``.

    Raises
    ------
    ConfigError
        An unknown runtime, or ``"onnx"`` with something ONNX Runtime cannot run here: a plain
        callable, a CUDA device, or ``amp_dtype`` (ONNX Runtime runs the model in float32).
    """
    check_choice(runtime, "predict", "runtime", RUNTIMES)
    on_cpu = device in ("auto", "cpu") or device.startswith("cpu:")
    if runtime == "onnx":
        import torch

        if not checkpoint and not isinstance(module, torch.nn.Module):
            raise ConfigError(
                f"predict: runtime='onnx' exports a torch.nn.Module or a checkpoint; a plain "
                f"{type(module).__name__} callable cannot be exported: use runtime='torch'"
            )
        if not on_cpu:
            raise ConfigError(
                f"predict: runtime='onnx' runs on the CPU, not device={device!r}: use "
                "runtime='torch' (or 'auto') on a GPU"
            )
        if amp_dtype is not None:
            raise ConfigError(
                f"predict: runtime='onnx' runs the model in float32; amp_dtype={amp_dtype!r} "
                "needs runtime='torch'"
            )
        return "onnx"
    if runtime == "auto" and on_cpu and amp_dtype is None:
        if checkpoint or _is_builtin_arch(module):
            return "auto"
    return "torch"


@functools.cache
def available() -> bool:
    """Whether onnxruntime and onnx (which torch's exporter needs) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``"auto"`` decided in this process: ONNX Runtime on the CPU where it is installed."""
    if runtime == "auto":
        return "onnx" if device.type == "cpu" and available() else "torch"
    return runtime


def threads_per_call() -> int:
    """ONNX Runtime threads for one model call: the threads torch would use per call in this
    process, shared among the tasks that run at once.

    Those are a Dask worker's ``nthreads`` (distributed also starts workers with
    ``OMP_NUM_THREADS=1``, so torch uses one thread per call there), else the local threaded
    scheduler's pool (``num_workers``, default one per core). With N tasks calling one session
    at once, N threads each would oversubscribe the cores N-fold: measured on 2 cores under the
    threaded scheduler, 1 thread per call ran the Unet 1.2x faster than 2.
    """
    import torch

    slots = None
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            slots = int(get_worker().state.nthreads)
        except ValueError:
            pass
    if slots is None:
        import dask
        import dask.system

        slots = int(dask.config.get("num_workers", None) or dask.system.CPU_COUNT)
    return max(1, torch.get_num_threads() // max(slots, 1))


class OnnxModel:
    """An ONNX Runtime session called like the torch module it came from.

    ``model(x)`` takes a float32 ``(B, C, h, w)`` CPU tensor and returns the first output as a
    tensor (the others, e.g. an auxiliary classification head, are dropped as
    ``predict`` drops them for torch). ``session.run`` is thread-safe, so one instance serves
    every thread of a worker.
    """

    def __init__(self, session: Any, threads: int) -> None:
        self.session = session
        self.threads = threads
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        feed = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        (out,) = self.session.run([self._output], {self._input: feed})
        return torch.from_numpy(out)


def _session(data: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads would otherwise spin for a while after each call, taking cores from
    # the blend tasks and the other threads of the worker.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def export(model: Any, window: int, *, threads: int, name: str) -> OnnxModel:
    """Export ``model`` (eval mode, CPU) for ``window`` x ``window`` inputs and open a session.

    The batch axis stays dynamic (the last batch of a grid row may be shorter); the window is
    fixed, as the trace may fix shapes computed from it. The result is checked against torch on
    a random batch other than the traced one (of another size too), so that a trace which froze
    a value computed from its example input is caught.

    Parameters
    ----------
    model : torch.nn.Module
        The prepared model (eval mode, on the CPU).
    window : int
        The square window side.
    threads : int
        ONNX Runtime's intra-op threads.
    name : str
        The model in a few words, for messages.

    Returns
    -------
    OnnxModel

    Raises
    ------
    MosaicflowError
        The export failed, or its output differs from torch's beyond the check's tolerance.
    """
    import torch

    # window tasks feed (B, 1, w, w); a batch of 2 keeps the exporter from fixing the batch size
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 1, window, window, generator=generator)
    check = torch.randn(1, 1, window, window, generator=generator)
    buffer = io.BytesIO()
    try:
        # The exporter's deprecation notice and tracer warnings about shape arithmetic are
        # expected here (the window is fixed); the check below judges the result.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes a file object
                dynamo=False,
                input_names=["image"],
                output_names=["output"],
                dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}},
                opset_version=OPSET,
            )
    except Exception as exc:
        raise MosaicflowError(
            f"predict: exporting the {name} to ONNX failed ({type(exc).__name__}: {exc}); "
            "use runtime='torch'"
        ) from exc
    onnx_model = OnnxModel(_session(buffer.getvalue(), threads), threads)
    with torch.inference_mode():
        ref = model(check)
        ref = (ref[0] if isinstance(ref, list | tuple) else ref).float()
    got = onnx_model(check)
    diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
    scale = max(1.0, float(ref.abs().max()))
    if not diff <= CHECK_RTOL * scale:
        raise MosaicflowError(
            f"predict: the {name} exported to ONNX differs from torch by up to {diff:.3g} "
            f"(tolerance {CHECK_RTOL * scale:.3g}) on a test batch; a trace cannot follow "
            "Python control flow on the data: use runtime='torch'"
        )
    return onnx_model
