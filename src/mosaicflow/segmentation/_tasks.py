"""The tasks of windowed inference that run on workers, and the plans they carry.

A *window task* evaluates up to ``batch_size`` windows of one grid row: it reads the input chunks
the windows touch, checks and normalises them, runs the model (once, or 8 times with TTA; the
torch module, or on the CPU its ONNX Runtime export, see :mod:`mosaicflow.segmentation._onnx`)
and returns ``output * weights``. A *blend task* makes one output chunk: it adds the weighted
outputs of the windows that touch the chunk, in MONAI's window order, divides by the summed
weights and applies the activation. The plans are small frozen dataclasses: a task never carries
weights, only the model's *source* (see :mod:`mosaicflow.segmentation._plugin`).

torch is imported only inside the task functions, so importing this module is cheap.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mosaicflow.errors import MosaicflowError
from mosaicflow.segmentation.windows import cached_importance_map

if TYPE_CHECKING:
    import torch

    from mosaicflow.segmentation._plugin import CheckpointSource, ModuleSource

#: The 8 symmetries of the square used by ``tta=True``: (flip columns first?, quarter turns).
TTA_TRANSFORMS = tuple((flip, k) for flip in (False, True) for k in range(4))


class _Boxed:
    """Keeps a module opaque to Dask's graph parsing (a Sequential is iterable)."""

    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass(frozen=True)
class _Options:
    """The resolved settings every task reads (part of the graph's token)."""

    window: int
    blend: str
    sigma_scale: float
    activation: str | None
    classes: int
    normalization: tuple[float, float] | None
    tta: bool
    device: str
    amp_dtype: str | None
    channels_last: bool
    runtime: str  # "torch", "onnx", or "auto" (decided on the worker)


@dataclass(frozen=True)
class _BatchPlan:
    """What one window task evaluates and which parts of which input chunks it reads."""

    source: CheckpointSource | ModuleSource
    opts: _Options
    pad: tuple[int, int]
    windows: tuple[tuple[int, int], ...]  # (y, x) starts in padded coordinates
    bbox: tuple[int, int, int, int]  # rows and columns of the image the windows read
    blocks: tuple[tuple[tuple[int, int], int, int, int, int], ...]  # index, y0, y1, x0, x1


@dataclass(frozen=True)
class _BlendPlan:
    """The region of one output chunk and the window outputs that cover it, in MONAI's order."""

    opts: _Options
    region: tuple[int, int, int, int]  # y0, y1, x0, x1 in padded coordinates
    windows: tuple[tuple[int, int, int, int], ...]  # argument, index in batch, y, x
    squeeze: bool


def _as_tensor(block: Any, device: torch.device) -> torch.Tensor:
    import torch

    if type(block).__module__.split(".")[0] == "cupy":  # GPU chunk: zero-copy via DLPack
        return torch.from_dlpack(block).to(device=device, dtype=torch.float32)
    return torch.from_numpy(np.asarray(block).astype(np.float32)).to(device)


def _first_output(out: Any) -> torch.Tensor:
    if isinstance(out, list | tuple):  # smp models with aux heads return (mask, labels)
        out = out[0]
    return out


def _forward(model: Any, x: torch.Tensor, opts: _Options, runtime: str) -> torch.Tensor:
    import torch

    if opts.channels_last and runtime == "torch":
        x = x.contiguous(memory_format=torch.channels_last)
    amp = (
        torch.autocast(x.device.type, dtype=getattr(torch, opts.amp_dtype))
        if opts.amp_dtype
        else nullcontext()
    )
    with torch.inference_mode(), amp:
        if not opts.tta:
            return _first_output(model(x)).float()
        total: torch.Tensor | None = None
        for flip, k in TTA_TRANSFORMS:
            xt = torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
            y = torch.rot90(_first_output(model(xt)).float(), -k, (-2, -1))
            y = y.flip(-1) if flip else y
            total = y if total is None else total + y
        assert total is not None
        return total / len(TTA_TRANSFORMS)


def _run_window_batch(boxed: _Boxed | None, plan: _BatchPlan, blocks: list[Any]) -> np.ndarray:
    """Evaluate one batch of windows; returns ``output * weights``, float32 (B, C, w, w)."""
    import torch

    from mosaicflow.segmentation import _onnx, _plugin

    opts = plan.opts
    device = _plugin.resolve_device(opts.device)
    runtime = _onnx.resolve_runtime(opts.runtime, device)
    if runtime == "onnx":
        device = torch.device("cpu")
    w = opts.window
    top_all, bottom_all, left_all, right_all = plan.bbox
    parts = []  # (tensor, its origin row, its origin column), each block cut to the batch's box
    for (index, y0, y1, x0, x1), block in zip(plan.blocks, blocks, strict=True):
        ry0, ry1 = max(y0, top_all), min(y1, bottom_all)
        rx0, rx1 = max(x0, left_all), min(x1, right_all)
        t = _as_tensor(block[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0], device)
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            py, px = (int(v) for v in torch.nonzero(~finite)[0])
            raise MosaicflowError(
                f"predict: input chunk {index} (rows {y0}:{y1}, columns {x0}:{x1}) contains NaN "
                f"or infinite values (first at y={ry0 + py}, x={rx0 + px}); fill or mask them "
                "before predicting"
            )
        if opts.normalization is not None:
            t = (t - opts.normalization[0]) / opts.normalization[1]
        parts.append((t, ry0, rx0))
    batch = torch.zeros((len(plan.windows), 1, w, w), dtype=torch.float32, device=device)
    pad_y, pad_x = plan.pad
    for k, (wy, wx) in enumerate(plan.windows):
        top, left = wy - pad_y, wx - pad_x  # window origin in image coordinates
        for t, oy, ox in parts:
            a, b = max(oy, top), min(oy + t.shape[0], top + w)
            c, d = max(ox, left), min(ox + t.shape[1], left + w)
            if a < b and c < d:
                batch[k, 0, a - top : b - top, c - left : d - left] = t[
                    a - oy : b - oy, c - ox : d - ox
                ]
    model = _plugin.get_cache().get(
        plan.source,
        None if boxed is None else boxed.value,
        device,
        opts.channels_last,
        runtime=runtime,
        window=w,
    )
    out = _forward(model, batch, opts, runtime)
    expected = (len(plan.windows), opts.classes, w, w)
    if tuple(out.shape) != expected:
        raise MosaicflowError(
            f"predict: the model returned shape {tuple(out.shape)} for a batch of shape "
            f"{tuple(batch.shape)}; expected {expected} (classes={opts.classes})"
        )
    weights = torch.from_numpy(cached_importance_map(w, opts.blend, opts.sigma_scale).copy()).to(
        device
    )
    return (out * weights).cpu().numpy()


def _blend_chunk(plan: _BlendPlan, outputs: list[np.ndarray]) -> np.ndarray:
    """Weighted mean of the window outputs over one output chunk, then the activation."""
    opts = plan.opts
    w = opts.window
    y0, y1, x0, x1 = plan.region
    weights = cached_importance_map(w, opts.blend, opts.sigma_scale)
    acc = np.zeros((opts.classes, y1 - y0, x1 - x0), dtype=np.float32)
    count = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    # windows in MONAI's order, so every pixel sums the same terms in the same order
    for arg, k, wy, wx in plan.windows:
        a, b = max(y0, wy), min(y1, wy + w)
        c, d = max(x0, wx), min(x1, wx + w)
        acc[:, a - y0 : b - y0, c - x0 : d - x0] += outputs[arg][
            k, :, a - wy : b - wy, c - wx : d - wx
        ]
        count[a - y0 : b - y0, c - x0 : d - x0] += weights[a - wy : b - wy, c - wx : d - wx]
    result = acc / count
    if opts.activation in ("sigmoid", "softmax"):
        import torch

        t = torch.from_numpy(result)
        result = (torch.sigmoid(t) if opts.activation == "sigmoid" else torch.softmax(t, 0)).numpy()
    return result[0] if plan.squeeze else result
