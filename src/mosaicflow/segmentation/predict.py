"""Windowed segmentation inference on a chunked mosaic, on one global window grid.

The windows sit where MONAI's ``sliding_window_inference`` puts them on the whole image: steps of
``int(window * (1 - overlap))`` from the top-left corner, the last window of each row and column
moved back to end at the image edge, and (with ``pad_small``) an image smaller than the window
padded with zeros (after normalisation) on both sides, as MONAI pads. Each window is evaluated
exactly once, in a *window task* holding up to ``batch_size`` windows of one grid row; each output
chunk is a *blend task* that depends on the window tasks whose windows touch it and adds their
weighted outputs in MONAI's window order. The result is therefore independent of the chunking and
equal to MONAI's whole-image result (up to the model's own batch-size-dependent rounding).

torch is imported only inside the functions that run models, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from mosaicflow._arrays import as_dask, check_2d, like_input
from mosaicflow.errors import ConfigError, MosaicflowError

if TYPE_CHECKING:
    import torch

    from mosaicflow.segmentation._plugin import CheckpointSource, ModuleSource
    from mosaicflow.segmentation.models import CheckpointMeta

BLENDS = ("gaussian", "constant")
ACTIVATIONS = ("auto", "sigmoid", "softmax", "none", None)
AMP_DTYPES = (None, "bfloat16", "float16")
#: The 8 symmetries of the square used by ``tta=True``: (flip columns first?, quarter turns).
TTA_TRANSFORMS = tuple((flip, k) for flip in (False, True) for k in range(4))


# ---------------------------------------------------------------------------------------------
# The window grid and the blending weights (pure functions)


@dataclass(frozen=True)
class WindowGrid:
    """Window positions on a whole image, in the coordinates of the (possibly) padded image.

    ``pad`` is the zero padding before the image on each axis (non-zero only on an axis
    shorter than the window); image pixel ``(y, x)`` is padded pixel ``(y + pad[0], x + pad[1])``.
    """

    shape: tuple[int, int]
    window: int
    overlap: float
    padded: tuple[int, int]
    pad: tuple[int, int]
    starts_y: np.ndarray
    starts_x: np.ndarray

    @property
    def n_windows(self) -> int:
        return len(self.starts_y) * len(self.starts_x)

    @property
    def overhead(self) -> float:
        """Pixels evaluated by the model over image pixels (1.0 would be no overlap at all)."""
        return self.n_windows * self.window**2 / (self.shape[0] * self.shape[1])


def _axis_starts(size: int, window: int, overlap: float) -> np.ndarray:
    # size >= window here. Same rule as MONAI: a full-size window steps by itself; otherwise
    # step int(window * (1 - overlap)) (at least 1) until a window reaches the edge.
    step = window if size == window else max(int(window * (1 - overlap)), 1)
    n = 1
    while (n - 1) * step + window < size:
        n += 1
    return np.minimum(np.arange(n, dtype=np.int64) * step, size - window)


def window_grid(shape: tuple[int, int], window: int, overlap: float) -> WindowGrid:
    """The global window grid of a ``shape`` image (MONAI's ``sliding_window_inference`` grid)."""
    padded = tuple(max(s, window) for s in shape)
    pad = tuple((p - s) // 2 for p, s in zip(padded, shape, strict=True))
    return WindowGrid(
        shape=(int(shape[0]), int(shape[1])),
        window=window,
        overlap=overlap,
        padded=(int(padded[0]), int(padded[1])),
        pad=(int(pad[0]), int(pad[1])),
        starts_y=_axis_starts(padded[0], window, overlap),
        starts_x=_axis_starts(padded[1], window, overlap),
    )


@functools.lru_cache(maxsize=8)
def _importance_map_cached(window: int, blend: str, sigma_scale: float) -> np.ndarray:
    import torch

    if blend == "constant":
        weights = torch.ones((window, window), dtype=torch.float32)
    else:
        # separable Gaussian centred on the window, sigma = sigma_scale * window, evaluated in
        # float32 with torch so the weights are bit-identical to MONAI's importance map
        sigma = sigma_scale * window
        half = (window - 1) / 2.0
        t = torch.arange(-half, half + 1, dtype=torch.float32)
        g = torch.exp(t**2 / (-2 * sigma**2))
        weights = g.unsqueeze(-1) * g[None]
    # no weight may be zero: the blend divides by the sum of weights (MONAI's clamp)
    floor = max(float(weights.min()), 1e-3)
    out = weights.clamp(min=floor).numpy()
    out.setflags(write=False)
    return out


def importance_map(window: int, blend: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights of one window, float32 ``(window, window)``, as MONAI computes them.

    ``gaussian``: ``exp(-d^2 / (2 sigma^2))`` per axis with ``sigma = sigma_scale * window`` and
    ``d`` the distance to the window centre, multiplied across the axes (peak 1 for an odd
    window, not renormalised); ``constant``: ones. Values are then clamped from below to
    ``max(min, 1e-3)`` so that every pixel of a window keeps a non-zero weight.
    """
    return np.array(_importance_map_cached(int(window), blend, float(sigma_scale)))


# ---------------------------------------------------------------------------------------------
# Task functions (run on workers)


class _Boxed:
    """Keeps a module opaque to Dask's graph parsing (a Sequential is iterable)."""

    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass(frozen=True)
class _Options:
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


@dataclass(frozen=True)
class _BatchPlan:
    source: CheckpointSource | ModuleSource
    opts: _Options
    pad: tuple[int, int]
    windows: tuple[tuple[int, int], ...]  # (y, x) starts in padded coordinates
    bbox: tuple[int, int, int, int]  # rows and columns of the image the windows read
    blocks: tuple[tuple[tuple[int, int], int, int, int, int], ...]  # index, y0, y1, x0, x1


@dataclass(frozen=True)
class _BlendPlan:
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


def _forward(model: Any, x: torch.Tensor, opts: _Options) -> torch.Tensor:
    import torch

    if opts.channels_last:
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

    from mosaicflow.segmentation import _plugin

    opts = plan.opts
    device = _plugin.resolve_device(opts.device)
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
        plan.source, None if boxed is None else boxed.value, device, opts.channels_last
    )
    out = _forward(model, batch, opts)
    expected = (len(plan.windows), opts.classes, w, w)
    if tuple(out.shape) != expected:
        raise MosaicflowError(
            f"predict: the model returned shape {tuple(out.shape)} for a batch of shape "
            f"{tuple(batch.shape)}; expected {expected} (classes={opts.classes})"
        )
    weights = torch.from_numpy(_importance_map_cached(w, opts.blend, opts.sigma_scale).copy()).to(
        device
    )
    return (out * weights).cpu().numpy()


def _blend_chunk(plan: _BlendPlan, outputs: list[np.ndarray]) -> np.ndarray:
    """Weighted mean of the window outputs over one output chunk, then the activation."""
    opts = plan.opts
    w = opts.window
    y0, y1, x0, x1 = plan.region
    weights = _importance_map_cached(w, opts.blend, opts.sigma_scale)
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


# ---------------------------------------------------------------------------------------------
# Model sources


_CHECKPOINTS: dict[str, tuple[CheckpointMeta, int | None]] = {}


def _output_stride(model: Any) -> int | None:
    if getattr(model, "requires_divisible_input_shape", False):
        encoder = getattr(model, "encoder", None)
        return int(getattr(encoder, "output_stride", 32))
    return None


def _module_token(module: Any) -> str:
    import torch

    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"{type(module).__module__}.{type(module).__qualname__}:{id(module)}".encode())
    if isinstance(module, torch.nn.Module):
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The public class and function


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"predict: {name} must be one of {list(choices)}, got {value!r}")


class WindowedPredictor:
    """Settings, model source and blending weights for windowed inference; call it on images.

    Parameters are those of :func:`predict`. Building the predictor resolves the model (a
    checkpoint is read and its weights checked against its architecture once, here) and
    precomputes the blending weights (``weights``); calling it builds a lazy graph.
    """

    def __init__(
        self,
        model: Any,
        *,
        window: int | None = None,
        overlap: float = 0.25,
        blend: str = "gaussian",
        sigma_scale: float = 0.125,
        batch_size: int = 4,
        activation: str | None = "auto",
        tta: bool = False,
        device: str = "auto",
        amp_dtype: str | None = None,
        channels_last: bool = False,
        classes: int | None = None,
        pad_small: bool = False,
        resources: dict[str, float] | None = None,
    ) -> None:
        self.pad_small = bool(pad_small)
        if resources is not None and not (
            isinstance(resources, dict)
            and all(isinstance(k, str) and float(v) > 0 for k, v in resources.items())
        ):
            raise ConfigError(
                f"predict: resources must map resource names to positive amounts, "
                f"e.g. {{'GPU': 1}}; got {resources!r}"
            )
        self.resources = dict(resources) if resources else None
        _check_choice("blend", blend, BLENDS)
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("amp_dtype", amp_dtype, AMP_DTYPES)
        if not (isinstance(overlap, int | float) and 0 <= overlap < 1):
            raise ConfigError(f"predict: overlap must be in [0, 1), got {overlap!r}")
        if not (
            isinstance(sigma_scale, int | float) and math.isfinite(sigma_scale) and sigma_scale > 0
        ):
            raise ConfigError(
                f"predict: sigma_scale must be a positive number, got {sigma_scale!r}"
            )
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(tta, bool):
            raise ConfigError(f"predict: tta must be True or False, got {tta!r}")
        if not (device == "auto" or isinstance(device, str)):
            raise ConfigError(
                f"predict: device must be 'auto' or a torch device string, got {device!r}"
            )

        self.module: Any = None
        self.meta: CheckpointMeta | None = None
        self.source: CheckpointSource | ModuleSource
        stride = self._resolve_model(model)

        if window is None:
            window = self.meta.window if self.meta is not None else 512
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 1):
            raise ConfigError(f"predict: window must be a positive integer, got {window!r}")
        if stride is not None and window % stride:
            fit = -(-window // stride) * stride
            raise ConfigError(
                f"predict: window {window} is not a multiple of {stride}, which this "
                f"{self.describe_model()} needs (its encoder downsamples {stride}x); "
                f"use window={fit}"
            )
        if classes is None:
            classes = self.meta.classes if self.meta is not None else 1
        if activation == "auto":
            if self.meta is not None:
                activation = None if self.meta.activation == "none" else self.meta.activation
            else:
                activation = "sigmoid" if classes == 1 else "softmax"
        elif activation == "none":
            activation = None
        norm = None
        if self.meta is not None and self.meta.normalization is not None:
            norm = (float(self.meta.normalization["mean"]), float(self.meta.normalization["std"]))
        self.overlap = float(overlap)
        self.batch_size = batch_size
        self.options = _Options(
            window=window,
            blend=blend,
            sigma_scale=float(sigma_scale),
            activation=activation,
            classes=classes,
            normalization=norm,
            tta=tta,
            device=device,
            amp_dtype=amp_dtype,
            channels_last=bool(channels_last),
        )
        #: The blending weights of one window (float32, window x window), precomputed once.
        self.weights = importance_map(window, blend, sigma_scale)

    @property
    def window(self) -> int:
        return self.options.window

    def _resolve_model(self, model: Any) -> int | None:
        from mosaicflow.segmentation import _plugin

        if isinstance(model, str) and model == "default":
            raise MosaicflowError(
                "predict: no trained default model is shipped with mosaicflow yet; pass a "
                "checkpoint path (see mosaicflow.segmentation.save_checkpoint) or a torch module"
            )
        if isinstance(model, str | os.PathLike):
            from mosaicflow.segmentation.models import load_checkpoint

            source = _plugin.checkpoint_source(model)
            if source.token not in _CHECKPOINTS:
                loaded = load_checkpoint(source.path)  # validates weights against the arch
                _CHECKPOINTS[source.token] = (loaded.meta, _output_stride(loaded.model))
            self.meta, stride = _CHECKPOINTS[source.token]
            self.source = source
            return stride
        if not callable(model):
            raise ConfigError(
                "predict: model must be a torch.nn.Module, a callable on (B, 1, w, w) tensors, "
                f"a checkpoint path or 'default'; got {type(model).__name__}"
            )
        self.module = model
        self.source = _plugin.ModuleSource(_module_token(model), type(model).__name__)
        return _output_stride(model)

    def describe_model(self) -> str:
        if self.meta is not None:
            return (
                f"{self.meta.arch}/{self.meta.encoder} checkpoint {Path(self.source.path).name!r}"  # type: ignore[union-attr]
            )
        return f"{type(self.module).__name__} module"

    def grid(self, shape: tuple[int, int]) -> WindowGrid:
        """The global window grid for an image of ``shape``."""
        return window_grid(shape, self.window, self.overlap)

    def __call__(self, image: Any) -> Any:
        """Lazy probability (or raw output) of ``image``; see :func:`predict`."""
        check_2d(image, "predict")
        data = as_dask(image)
        if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise ConfigError(f"predict: image must be integer or float, got dtype {data.dtype}")
        if 0 in data.shape:
            raise ConfigError(f"predict: empty image of shape {data.shape}")
        if min(data.shape) < self.window and not self.pad_small:
            axis = "y" if data.shape[0] < self.window else "x"
            raise ConfigError(
                f"predict: the image {tuple(data.shape)} is smaller than the {self.window}-px "
                f"window along {axis}; pass a window no larger than {min(data.shape)} px (FPN: "
                "a multiple of 32), or pad_small=True to zero-pad it as MONAI does"
            )
        out = self._graph(data)
        attrs = {
            "predict": {
                "model": self.describe_model(),
                "window": self.window,
                "overlap": self.overlap,
                "blend": self.options.blend,
                "sigma_scale": self.options.sigma_scale,
                "activation": self.options.activation or "none",
                "tta": self.options.tta,
            }
        }
        if out.ndim == 2:
            return like_input(image, out, name="probability", **attrs)
        if isinstance(image, xr.DataArray):
            return xr.DataArray(
                out,
                dims=("class", *image.dims),
                coords=image.coords,
                name="probability",
                attrs={**image.attrs, **attrs},
            )
        return out

    def _graph(self, data: da.Array) -> da.Array:
        opts = self.options
        w = opts.window
        grid = self.grid(data.shape)
        token = tokenize(data.name, grid.pad, self.overlap, self.batch_size, opts, self.source)
        name = f"predict-{token}"
        wname = f"predict-windows-{token}"
        dsk: dict[Any, Any] = {}
        model_arg: str | None = None
        if self.module is not None:
            model_arg = f"predict-model-{self.source.token}"
            dsk[model_arg] = _Boxed(self.module)

        ybounds = np.cumsum((0, *data.chunks[0]))
        xbounds = np.cumsum((0, *data.chunks[1]))
        height, width = data.shape
        pad_y, pad_x = grid.pad

        def blocks_between(bounds: np.ndarray, lo: int, hi: int) -> range:
            first = int(np.searchsorted(bounds, lo, side="right")) - 1
            last = int(np.searchsorted(bounds, hi, side="left")) - 1
            return range(max(first, 0), min(last, len(bounds) - 2) + 1)

        nx = len(grid.starts_x)
        bs = self.batch_size
        for r, wy in enumerate(grid.starts_y.tolist()):
            top, bottom = max(wy - pad_y, 0), min(wy - pad_y + w, height)
            rows = blocks_between(ybounds, top, bottom)
            for b in range(-(-nx // bs)):
                starts = grid.starts_x[b * bs : (b + 1) * bs].tolist()
                left, right = max(starts[0] - pad_x, 0), min(starts[-1] - pad_x + w, width)
                cols = blocks_between(xbounds, left, right)
                specs = tuple(
                    (
                        (i, j),
                        int(ybounds[i]),
                        int(ybounds[i + 1]),
                        int(xbounds[j]),
                        int(xbounds[j + 1]),
                    )
                    for i in rows
                    for j in cols
                )
                plan = _BatchPlan(
                    self.source,
                    opts,
                    grid.pad,
                    tuple((wy, wx) for wx in starts),
                    (top, bottom, left, right),
                    specs,
                )
                keys = [(data.name, i, j) for i in rows for j in cols]
                dsk[(wname, r, b)] = (_run_window_batch, model_arg, plan, keys)
        window_dsk, dsk = dsk, {}

        squeeze = opts.classes == 1
        for i in range(len(ybounds) - 1):
            y0, y1 = int(ybounds[i]) + pad_y, int(ybounds[i + 1]) + pad_y
            r_lo = int(np.searchsorted(grid.starts_y, y0 - w, side="right"))
            r_hi = int(np.searchsorted(grid.starts_y, y1, side="left"))
            for j in range(len(xbounds) - 1):
                x0, x1 = int(xbounds[j]) + pad_x, int(xbounds[j + 1]) + pad_x
                c_lo = int(np.searchsorted(grid.starts_x, x0 - w, side="right"))
                c_hi = int(np.searchsorted(grid.starts_x, x1, side="left"))
                deps: dict[tuple[str, int, int], int] = {}
                windows = []
                if y1 > y0 and x1 > x0:
                    for r in range(r_lo, r_hi):
                        for c in range(c_lo, c_hi):
                            key = (wname, r, c // bs)
                            arg = deps.setdefault(key, len(deps))
                            windows.append(
                                (arg, c % bs, int(grid.starts_y[r]), int(grid.starts_x[c]))
                            )
                plan2 = _BlendPlan(opts, (y0, y1, x0, x1), tuple(windows), squeeze)
                out_key = (name, i, j) if squeeze else (name, 0, i, j)
                dsk[out_key] = (_blend_chunk, plan2, list(deps))

        # Two layers: the window tasks (where the model runs, so the ones Dask resources route to
        # GPU workers) and the blend tasks (cheap, anywhere).
        wgraph = HighLevelGraph.from_collections(wname, window_dsk, dependencies=[data])  # type: ignore[list-item]
        if self.resources:
            wgraph.layers[wname].annotations = {"resources": self.resources}
        layers = {**wgraph.layers, name: MaterializedLayer(dsk)}
        graph = HighLevelGraph(layers, {**wgraph.dependencies, name: {wname}})
        chunks = data.chunks if squeeze else ((opts.classes,), *data.chunks)
        meta = np.empty((0,) * len(chunks), dtype=np.float32)
        return da.Array(graph, name, chunks=chunks, dtype=np.float32, meta=meta)


def predict(
    image: Any,
    model: Any,
    *,
    window: int | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sigma_scale: float = 0.125,
    batch_size: int = 4,
    activation: str | None = "auto",
    tta: bool = False,
    device: str = "auto",
    amp_dtype: str | None = None,
    channels_last: bool = False,
    classes: int | None = None,
    pad_small: bool = False,
    resources: dict[str, float] | None = None,
) -> Any:
    """Segmentation probability of a chunked image by overlapping, blended model windows.

    Parameters
    ----------
    image : dask.array.Array or xarray.DataArray
        2-D image, any integer or float dtype, NumPy (or CuPy) chunks of any size.
    model : torch.nn.Module, callable, path or "default"
        A module (or callable) mapping float32 ``(B, 1, w, w)`` to ``(B, classes, w, w)``; a
        checkpoint written by :func:`~mosaicflow.segmentation.save_checkpoint` (its
        normalisation is applied to the image, its window and activation are the defaults);
        ``"default"`` raises: no trained model is shipped yet.
    window : int, optional
        Square window side in pixels; default: the checkpoint's, else 512. smp encoders need a
        multiple of their output stride (32 for resnet18 Unet/FPN).
    overlap : float
        Fraction of the window shared by neighbours, in [0, 1); the step is
        ``int(window * (1 - overlap))``.
    blend : {"gaussian", "constant"}
        Weights of the windows where they overlap (see :func:`importance_map`).
    sigma_scale : float
        Gaussian sigma as a fraction of the window.
    batch_size : int
        Windows per model call (and per window task).
    activation : {"auto", "sigmoid", "softmax", None}
        Applied after blending. ``None`` returns the blended raw output, what MONAI's
        ``sliding_window_inference`` returns; ``"auto"`` takes the checkpoint's activation, or
        sigmoid (one class) / softmax (several) for a bare module.
    tta : bool
        Test-time augmentation: each window is evaluated under the 8 flips/rotations of the
        square, mapped back and averaged before blending (8x the model cost).
    device : str
        ``"auto"`` (CUDA when the worker's torch sees a GPU, else CPU) or a torch device.
    amp_dtype : {None, "bfloat16", "float16"}
        Run the model under ``torch.autocast`` with this dtype (meant for GPUs).
    channels_last : bool
        Run the model and windows in ``torch.channels_last`` memory format (GPUs).
    classes : int, optional
        Output channels of a bare module (default 1); a checkpoint declares its own.
    pad_small : bool
        An image smaller than the window is an error unless this is set; then the short axis
        is zero-padded (after normalisation) as MONAI does and the output cropped back.
    resources : dict, optional
        Dask worker resources the window tasks (where the model runs) require, e.g.
        ``{"GPU": 1}`` to run them only on workers started with ``--resources GPU=1``; the
        blend tasks run anywhere. The requirement is a layer annotation, which Dask's low-level
        task fusion discards: compute under
        ``dask.config.set({"optimization.fuse.active": False})`` (the pipeline does).

    Returns
    -------
    Same kind as ``image``
        Lazy float32 of the image's shape and chunks (one class), or ``(classes, y, x)``.

    Raises
    ------
    ConfigError
        Invalid option, a window the model's encoder cannot take, or an image smaller than the
        window (without ``pad_small``).
    MosaicflowError
        ``model="default"``; a checkpoint that is missing or does not fit its architecture
        (:class:`~mosaicflow.segmentation.models.CheckpointError`). At compute time: NaN or
        infinite input pixels (the message names the chunk and its pixel range).

    Notes
    -----
    The window grid is global (see :func:`window_grid`); with ``pad_small``, an image shorter than
    the window on an axis is zero-padded (after normalisation) on that axis as MONAI does, and the
    output cropped back. Each window is evaluated once; an output chunk gathers the windows touching
    it, so the result does not depend on the chunking. Memory per window task is about ``batch_size
    * window^2 * (4 + 4 * classes)`` bytes plus the input chunks it touches and the model's
    activations; per blend task ``chunk * (classes + 1) * 4`` bytes plus the window outputs it
    reads.

    Examples
    --------
    >>> prob = predict(mosaic, "unet.safetensors", window=512, overlap=0.25)  # doctest: +SKIP
    >>> (prob.data * 255).astype("uint8")  # what the pipeline stores  # doctest: +SKIP
    """
    predictor = WindowedPredictor(
        model,
        window=window,
        overlap=overlap,
        blend=blend,
        sigma_scale=sigma_scale,
        batch_size=batch_size,
        activation=activation,
        tta=tta,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        classes=classes,
        pad_small=pad_small,
        resources=resources,
    )
    return predictor(image)
