"""Windowed segmentation inference on a chunked mosaic: the public function and its settings class.

:func:`predict` validates its settings, resolves the model and builds a lazy graph on one global
window grid (:mod:`mosaicflow.segmentation.windows`). Each window is evaluated exactly once, in a
*window task* holding up to ``batch_size`` windows of one grid row; each output chunk is a
*blend task* that depends on the window tasks whose windows touch it and adds their weighted
outputs in MONAI's window order (the tasks: :mod:`mosaicflow.segmentation._tasks`). The result
is therefore independent of the chunking and equal to MONAI's whole-image result (up to the
model's own batch-size-dependent rounding).

As with MONAI's ``sliding_window_inference`` and ``SlidingWindowInferer``, the function does the
work and :class:`WindowedPredictor` only stores settings (with the model resolved and the
blending weights computed once) and forwards them to :func:`predict`.

torch is imported only inside the functions that run or hash models, so importing this module is
cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import xarray as xr

from mosaicflow._shared.arrays import as_dask, check_2d, like_input
from mosaicflow._shared.validate import check_choice, positive_number
from mosaicflow.errors import ConfigError
from mosaicflow.segmentation._graph import _Settings, build_graph
from mosaicflow.segmentation._model import _resolve_model
from mosaicflow.segmentation._onnx import plan_runtime
from mosaicflow.segmentation._tasks import _Options
from mosaicflow.segmentation.windows import BLENDS, WindowGrid, importance_map, window_grid

if TYPE_CHECKING:
    from mosaicflow.segmentation._plugin import CheckpointSource, ModuleSource
    from mosaicflow.segmentation.models import CheckpointMeta

ACTIVATIONS = ("auto", "sigmoid", "softmax", "none", None)
AMP_DTYPES = (None, "bfloat16", "float16")

# ---------------------------------------------------------------------------------------------
# The settings, resolved once


def _configure(
    model: Any,
    *,
    window: int | None,
    overlap: float,
    blend: str,
    sigma_scale: float,
    batch_size: int,
    activation: str | None,
    tta: bool,
    device: str,
    amp_dtype: str | None,
    channels_last: bool,
    classes: int | None,
    pad_small: bool,
    resources: dict[str, float] | None,
    runtime: str,
) -> _Settings:
    if resources is not None and not (
        isinstance(resources, dict)
        and all(isinstance(k, str) and float(v) > 0 for k, v in resources.items())
    ):
        raise ConfigError(
            f"predict: resources must map resource names to positive amounts, "
            f"e.g. {{'GPU': 1}}; got {resources!r}"
        )
    check_choice(blend, "predict", "blend", BLENDS)
    check_choice(activation, "predict", "activation", ACTIVATIONS)
    check_choice(amp_dtype, "predict", "amp_dtype", AMP_DTYPES)
    if not (isinstance(overlap, int | float) and 0 <= overlap < 1):
        raise ConfigError(f"predict: overlap must be in [0, 1), got {overlap!r}")
    sigma_scale = positive_number(sigma_scale, "predict", "sigma_scale")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(tta, bool):
        raise ConfigError(f"predict: tta must be True or False, got {tta!r}")
    if not isinstance(device, str):
        raise ConfigError(
            f"predict: device must be 'auto' or a torch device string, got {device!r}"
        )

    resolved = _resolve_model(model)
    meta = resolved.meta
    if window is None:
        window = meta.window if meta is not None else 512
    if not (isinstance(window, int) and not isinstance(window, bool) and window >= 1):
        raise ConfigError(f"predict: window must be a positive integer, got {window!r}")
    stride = resolved.stride
    if stride is not None and window % stride:
        fit = -(-window // stride) * stride
        raise ConfigError(
            f"predict: window {window} is not a multiple of {stride}, which this "
            f"{resolved.describe()} needs (its encoder downsamples {stride}x); "
            f"use window={fit}"
        )
    if classes is None:
        classes = meta.classes if meta is not None else 1
    if activation == "auto":
        if meta is not None:
            activation = None if meta.activation == "none" else meta.activation
        else:
            activation = "sigmoid" if classes == 1 else "softmax"
    elif activation == "none":
        activation = None
    norm = None
    if meta is not None and meta.normalization is not None:
        norm = (float(meta.normalization["mean"]), float(meta.normalization["std"]))
    options = _Options(
        window=window,
        blend=blend,
        sigma_scale=sigma_scale,
        activation=activation,
        classes=classes,
        normalization=norm,
        tta=tta,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=bool(channels_last),
        runtime=plan_runtime(
            runtime,
            module=resolved.module,
            checkpoint=meta is not None,
            device=device,
            amp_dtype=amp_dtype,
        ),
    )
    return _Settings(
        model=resolved,
        options=options,
        overlap=float(overlap),
        batch_size=batch_size,
        pad_small=bool(pad_small),
        resources=dict(resources) if resources else None,
    )


def _check_image(image: Any, window: int, pad_small: bool) -> da.Array:
    check_2d(image, "predict")
    data = as_dask(image)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ConfigError(f"predict: image must be integer or float, got dtype {data.dtype}")
    if 0 in data.shape:
        raise ConfigError(f"predict: empty image of shape {data.shape}")
    if min(data.shape) < window and not pad_small:
        axis = "y" if data.shape[0] < window else "x"
        raise ConfigError(
            f"predict: the image {tuple(data.shape)} is smaller than the {window}-px "
            f"window along {axis}; pass a window no larger than {min(data.shape)} px (FPN: "
            "a multiple of 32), or pad_small=True to zero-pad it as MONAI does"
        )
    return data


# ---------------------------------------------------------------------------------------------
# The public function and the settings class


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
    runtime: str = "auto",
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
        ``"default"``: the shipped instance model (three classes; its probabilities are not
        yet instances: :func:`~mosaicflow.segmentation.segment` grows them).
    window : int, optional
        Square window side in pixels; default: the checkpoint's, else 512. smp encoders need a
        multiple of their output stride (32 for resnet18 Unet/FPN).
    overlap : float
        Fraction of the window shared by neighbours, in [0, 1); the step is
        ``int(window * (1 - overlap))``.
    blend : {"gaussian", "constant"}
        Weights of the windows where they overlap (see
        :func:`~mosaicflow.segmentation.importance_map`).
    sigma_scale : float
        Gaussian sigma as a fraction of the window.
    batch_size : int
        Windows per model call (and per window task).
    activation : {"auto", "sigmoid", "softmax", "none", None}
        Applied after blending. ``None`` (or ``"none"``) returns the blended raw output, what
        MONAI's ``sliding_window_inference`` returns; ``"auto"`` takes the checkpoint's
        activation, or sigmoid (one class) / softmax (several) for a bare module.
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
    runtime : {"auto", "torch", "onnx"}
        What runs the model. ``"torch"``: the module as written. ``"onnx"``: the model exported
        to ONNX once per worker process (in memory) and run by ONNX Runtime on the CPU, about
        2x faster there, probabilities within ~1e-4. ``"auto"``: ONNX Runtime on CPU workers for
        a checkpoint or a segmentation-models-pytorch Unet/FPN without ``amp_dtype``, torch
        otherwise (GPUs, any other module or callable).

    Returns
    -------
    Same kind as ``image``
        Lazy float32 of the image's shape and chunks (one class), or ``(classes, y, x)``.

    Raises
    ------
    ConfigError
        Invalid option, a window the model's encoder cannot take, an image smaller than the
        window (without ``pad_small``), or ``runtime="onnx"`` with a plain callable, a CUDA
        device or ``amp_dtype``.
    ValueError
        ``image`` is not 2-D.
    MosaicflowError
        A checkpoint that is missing or does not fit its architecture
        (:class:`~mosaicflow.errors.CheckpointError`). At compute time: an ONNX export that
        fails or disagrees with torch (the message says to use ``runtime="torch"``); NaN or
        infinite input pixels (the message names the chunk and its pixel range).

    See Also
    --------
    WindowedPredictor : These settings stored once, the model resolved once.
    mosaicflow.segmentation.window_grid : Where the windows sit.

    Notes
    -----
    The window grid is global (see :func:`~mosaicflow.segmentation.window_grid`); with
    ``pad_small``, an image shorter than the window on an axis is zero-padded (after
    normalisation) on that axis as MONAI does, and the output cropped back. Each window is
    evaluated once; an output chunk gathers the windows touching it, so the result does not
    depend on the chunking. Memory per window task is about ``batch_size * window^2 * (4 + 4 *
    classes)`` bytes plus the input chunks it touches and the model's activations; per blend
    task ``chunk * (classes + 1) * 4`` bytes plus the window outputs it reads.

    Examples
    --------
    >>> prob = predict(mosaic, "unet.safetensors", window=512, overlap=0.25)  # doctest: +SKIP
    >>> (prob.data * 255).astype("uint8")  # what the pipeline stores  # doctest: +SKIP
    """
    settings = _configure(
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
        runtime=runtime,
    )
    opts = settings.options
    data = _check_image(image, opts.window, settings.pad_small)
    out = build_graph(data, settings)
    attrs = {
        "predict": {
            "model": settings.model.describe(),
            "window": opts.window,
            "overlap": settings.overlap,
            "blend": opts.blend,
            "sigma_scale": opts.sigma_scale,
            "activation": opts.activation or "none",
            "tta": opts.tta,
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


class WindowedPredictor:
    """The settings of :func:`predict`, stored once; calling it on an image forwards to it.

    Parameters are those of :func:`predict`. Building the predictor validates them, resolves
    the model once (a checkpoint is read and its weights checked against its architecture; a
    bare module is hashed) and precomputes the blending weights; each call is
    ``predict(image, <the resolved model>, **<these settings>)``, which builds a lazy graph.

    Attributes
    ----------
    window : int
        The window, resolved (default: the checkpoint's, else 512).
    overlap, batch_size, pad_small, resources
        As given to :func:`predict` (validated).
    options
        The settings the tasks carry, with ``activation`` and ``classes`` resolved.
    meta : CheckpointMeta or None
        A checkpoint's metadata; ``None`` for a bare module.
    module
        The bare module or callable; ``None`` for a checkpoint.
    source
        What the tasks load the model from (a checkpoint path and version, or a module token).
    weights : numpy.ndarray
        The blending weights of one window (float32, ``window x window``).
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
        runtime: str = "auto",
    ) -> None:
        settings = _configure(
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
            runtime=runtime,
        )
        self._model = settings.model
        self.module: Any = settings.model.module
        self.meta: CheckpointMeta | None = settings.model.meta
        self.source: CheckpointSource | ModuleSource = settings.model.source
        self.options = settings.options
        self.overlap = settings.overlap
        self.batch_size = settings.batch_size
        self.pad_small = settings.pad_small
        self.resources = settings.resources
        self.weights = importance_map(self.window, self.options.blend, self.options.sigma_scale)

    @property
    def window(self) -> int:
        """The square window side in pixels."""
        return self.options.window

    def describe_model(self) -> str:
        """The model in a few words, e.g. ``"unet/resnet18 checkpoint 'm.safetensors'"``."""
        return self._model.describe()

    def grid(self, shape: tuple[int, int]) -> WindowGrid:
        """The global window grid for an image of ``shape``."""
        return window_grid(shape, self.window, self.overlap)

    def __call__(self, image: Any) -> Any:
        """Lazy probability (or raw output) of ``image``; see :func:`predict`."""
        opts = self.options
        return predict(
            image,
            self._model,
            window=opts.window,
            overlap=self.overlap,
            blend=opts.blend,
            sigma_scale=opts.sigma_scale,
            batch_size=self.batch_size,
            activation=opts.activation,
            tta=opts.tta,
            device=opts.device,
            amp_dtype=opts.amp_dtype,
            channels_last=opts.channels_last,
            classes=opts.classes,
            pad_small=self.pad_small,
            resources=self.resources,
            runtime=opts.runtime,
        )
