"""Segmentation models (segmentation-models-pytorch) and their checkpoint files.

A checkpoint is one file holding the weights and the metadata needed to rebuild and use the
model: architecture, encoder, channels, input normalisation, window, threshold and activation.
It is written as safetensors when that package imports (it comes with
segmentation-models-pytorch), otherwise with ``torch.save``; the reader recognises either by
content, and reads weights with ``weights_only=True`` (no pickled code is ever executed).

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mosaicflow.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

#: Architectures ``build_model`` knows, by lower-case name -> smp class name.
ARCHITECTURES = {"unet": "Unet", "fpn": "FPN"}
#: Activations a checkpoint may declare; applied by ``predict`` after blending.
ACTIVATIONS = ("sigmoid", "softmax", "none")
FORMAT_VERSION = 1
_META_KEY = "mosaicflow"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its model (everything except the weights)."""

    arch: str
    encoder: str = "resnet18"
    in_channels: int = 1
    classes: int = 1
    normalization: dict[str, float] | None = None
    window: int = 512
    threshold: float = 0.5
    activation: str = "sigmoid"
    mosaicflow_version: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    decoder_channels: list[int] | None = None

    def to_json(self) -> str:
        """The metadata as the JSON object stored in the file (keys sorted)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str) -> CheckpointMeta:
        """The metadata read from a file's JSON object, validated.

        Parameters
        ----------
        data : dict
            The decoded JSON object.
        where : str
            Names the file in error messages.

        Returns
        -------
        CheckpointMeta

        Raises
        ------
        CheckpointError
            Unknown keys, no ``arch``, or an invalid value.
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{where}: unknown metadata keys {unknown}")
        if "arch" not in data:
            raise CheckpointError(f"{where}: metadata has no 'arch'")
        try:
            meta = cls(**data)
            _validate_meta(meta)
        except (TypeError, ConfigError) as exc:
            raise CheckpointError(f"{where}: invalid metadata: {exc}") from exc
        return meta


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, on CPU) and its metadata."""

    model: torch.nn.Module
    meta: CheckpointMeta
    path: Path

    @property
    def threshold(self) -> float:
        """The operating threshold: of the foreground probability for an instance model."""
        return float(self.meta.threshold)

    @property
    def seed_threshold(self) -> float | None:
        """An instance model's seed threshold on the interior probability; None otherwise."""
        value = self.meta.extra.get("seed_threshold")
        return None if value is None else float(value)

    @property
    def min_seed_px(self) -> int:
        """An instance model's smallest seed (pixels); smaller seeds are dropped."""
        return int(self.meta.extra.get("min_seed_px", 0))

    @property
    def is_instance_model(self) -> bool:
        """Whether the model predicts background / interior / contact (see ``targets``)."""
        return self.meta.extra.get("kind") == "instances" and self.meta.classes == 3


def _validate_meta(meta: CheckpointMeta) -> None:
    if meta.arch not in ARCHITECTURES:
        raise ConfigError(f"arch must be one of {sorted(ARCHITECTURES)}, got {meta.arch!r}")
    for name in ("in_channels", "classes", "window"):
        value = getattr(meta, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if meta.activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {meta.activation!r}")
    dec = meta.decoder_channels
    if dec is not None and not (
        isinstance(dec, list | tuple)
        and dec
        and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in dec)
    ):
        raise ConfigError(f"decoder_channels must be a list of positive integers, got {dec!r}")
    if not isinstance(meta.extra, dict):
        raise ConfigError(f"extra must be a mapping, got {meta.extra!r}")
    if not (isinstance(meta.threshold, int | float) and 0.0 <= meta.threshold <= 1.0):
        raise ConfigError(f"threshold must be in [0, 1], got {meta.threshold!r}")
    norm = meta.normalization
    if norm is not None:
        if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
            raise ConfigError(f"normalization must be {{'mean': m, 'std': s}}, got {norm!r}")
        mean, std = norm["mean"], norm["std"]
        if not (isinstance(mean, int | float) and math.isfinite(mean)):
            raise ConfigError(f"normalization mean must be a finite number, got {mean!r}")
        if not (isinstance(std, int | float) and math.isfinite(std) and std > 0):
            raise ConfigError(f"normalization std must be a positive number, got {std!r}")


def build_model(
    arch: str = "unet",
    encoder: str = "resnet18",
    *,
    in_channels: int = 1,
    classes: int = 1,
    decoder_channels: list[int] | tuple[int, ...] | None = None,
) -> torch.nn.Module:
    """A randomly initialised segmentation-models-pytorch model, in eval mode.

    Parameters
    ----------
    arch : {"unet", "fpn"}
        Architecture (case-insensitive).
    encoder : str
        smp encoder name; its weights are never downloaded (``encoder_weights=None``).
    in_channels, classes : int
        Input channels (1 for a grey-level mosaic) and output channels.
    decoder_channels : sequence of int, optional
        The decoder's widths (a Unet's ``decoder_channels``, an FPN's first entry is its
        ``decoder_pyramid_channels``); ``None``: smp's defaults.

    Returns
    -------
    torch.nn.Module
        The smp model, in eval mode, on the CPU.

    Raises
    ------
    ConfigError
        Unknown architecture or encoder.
    """
    from mosaicflow._torchvision import import_smp

    key = str(arch).lower()
    if key not in ARCHITECTURES:
        raise ConfigError(f"build_model: arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    smp = import_smp()
    cls = getattr(smp, ARCHITECTURES[key])
    kwargs: dict[str, Any] = {}
    if decoder_channels is not None:
        if key == "unet":
            kwargs["decoder_channels"] = tuple(int(c) for c in decoder_channels)
        else:
            kwargs["decoder_pyramid_channels"] = int(decoder_channels[0])
    try:
        model = cls(
            encoder, encoder_weights=None, in_channels=in_channels, classes=classes, **kwargs
        )
    except KeyError as exc:
        raise ConfigError(f"build_model: unknown encoder {encoder!r} for {arch!r}") from exc
    except ValueError as exc:  # smp's own checks, e.g. decoder_channels of the wrong length
        raise ConfigError(f"build_model: {arch!r} with encoder {encoder!r}: {exc}") from exc
    return model.eval()


def _build(meta: CheckpointMeta) -> torch.nn.Module:
    return build_model(
        meta.arch,
        meta.encoder,
        in_channels=meta.in_channels,
        classes=meta.classes,
        decoder_channels=meta.decoder_channels,
    )


def _fit_weights(
    model: torch.nn.Module, state: dict[str, Any], meta: CheckpointMeta, where: str
) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
        raise CheckpointError(
            f"{where}: weights do not fit arch={meta.arch!r} encoder={meta.encoder!r} "
            f"in_channels={meta.in_channels} classes={meta.classes}: " + " ".join(lines)
        ) from exc


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    *,
    arch: str,
    encoder: str = "resnet18",
    in_channels: int = 1,
    classes: int = 1,
    normalization: dict[str, float] | None = None,
    window: int = 512,
    threshold: float = 0.5,
    activation: str = "sigmoid",
    format: str = "auto",
    decoder_channels: list[int] | tuple[int, ...] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model``'s weights and metadata to one checkpoint file (atomically).

    Parameters
    ----------
    path : path-like
        Destination file (``.safetensors`` or ``.pt`` by convention; the content decides).
    model : torch.nn.Module
        A model whose weights fit ``build_model(arch, encoder, in_channels=, classes=)``;
        this is checked before anything is written.
    arch, encoder, in_channels, classes
        How to rebuild the model.
    normalization : dict, optional
        ``{"mean": m, "std": s}``: ``predict`` feeds ``(image - m) / s`` to the model.
    window : int
        The window the model was trained for (``predict``'s default window).
    threshold : float
        Probability threshold that separates particles from background (used downstream).
    activation : {"sigmoid", "softmax", "none"}
        Applied by ``predict(activation="auto")`` after blending.
    format : {"auto", "safetensors", "torch"}
        ``auto`` writes safetensors when it imports, else ``torch.save``.
    decoder_channels : sequence of int, optional
        As :func:`build_model`.
    extra : dict, optional
        Further JSON-able settings (an instance model's class names and seed threshold, how
        its input is scaled, how it was trained).
    half : bool
        Store floating-point weights as float16 (half the file; they load into the float32
        model).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ConfigError
        Invalid metadata (architecture, channels, window, threshold, activation,
        normalisation) or format.
    CheckpointError
        ``model``'s weights do not fit the declared architecture, encoder and channels.
    """
    import mosaicflow

    where = f"checkpoint {str(path)!r}"
    meta = CheckpointMeta(
        arch=str(arch).lower(),
        encoder=encoder,
        in_channels=in_channels,
        classes=classes,
        normalization=None
        if normalization is None
        else {k: float(v) for k, v in normalization.items()},
        window=window,
        threshold=float(threshold),
        activation=activation,
        mosaicflow_version=mosaicflow.__version__,
        extra=dict(extra or {}),
        decoder_channels=None if decoder_channels is None else [int(c) for c in decoder_channels],
    )
    try:
        _validate_meta(meta)
    except ConfigError as exc:
        raise ConfigError(f"save_checkpoint: {exc}") from exc
    if format not in ("auto", "safetensors", "torch"):
        raise ConfigError(f"save_checkpoint: format must be auto|safetensors|torch, got {format!r}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    reference = _build(meta)
    _fit_weights(reference, state, meta, where)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if format == "auto":
        try:
            import safetensors.torch  # noqa: F401

            format = "safetensors"
        except ImportError:
            format = "torch"
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if format == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp), metadata={_META_KEY: meta.to_json()})
    else:
        import torch

        buffer = io.BytesIO()
        torch.save({_META_KEY: meta.to_json(), "state_dict": state}, buffer)
        tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


def _file_kind(path: Path, where: str) -> str:
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    with path.open("rb") as f:
        head = f.read(9)
    if head[:2] == b"PK":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    raise CheckpointError(
        f"{where}: not a checkpoint (neither safetensors nor a torch.save zip; "
        f"{path.stat().st_size} bytes)"
    )


def _read(path: Path, *, weights: bool) -> tuple[CheckpointMeta, dict[str, Any] | None]:
    where = f"checkpoint {str(path)!r}"
    kind = _file_kind(path, where)
    state: dict[str, Any] | None = None
    try:
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(_META_KEY)
                if weights:
                    state = {k: f.get_tensor(k) for k in f.keys()}
        else:
            import torch

            blob = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict):
                raise CheckpointError(f"{where}: torch file holds a {type(blob).__name__}")
            raw = blob.get(_META_KEY)
            state = blob.get("state_dict") if weights else None
            if weights and not isinstance(state, dict):
                raise CheckpointError(f"{where}: torch file has no 'state_dict'")
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{where}: unreadable {kind} file ({exc})") from exc
    if state is not None:
        import torch

        odd = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
        if odd:
            raise CheckpointError(f"{where}: weights {odd[:3]} are not tensors")
    if raw is None:
        raise CheckpointError(f"{where}: {kind} file without mosaicflow metadata")
    try:
        data = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: metadata is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: metadata is not a JSON object")
    return CheckpointMeta.from_dict(data, where=where), state


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The metadata of a checkpoint (for safetensors, without reading the weights).

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_checkpoint`.

    Returns
    -------
    CheckpointMeta

    Raises
    ------
    CheckpointError
        Missing, truncated or foreign file; metadata missing or invalid.
    """
    return _read(Path(path), weights=False)[0]


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Rebuild the model a checkpoint describes and load its weights (CPU, eval mode).

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_checkpoint`.

    Returns
    -------
    Checkpoint
        The model, its metadata and the path.

    Raises
    ------
    CheckpointError
        Missing, truncated or foreign file; metadata missing or invalid; weights whose names or
        shapes do not fit the declared architecture, encoder and channels. The message names
        the file and the problem.
    """
    path = Path(path)
    meta, state = _read(path, weights=True)
    assert state is not None
    try:
        model = _build(meta)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {exc}") from exc
    _fit_weights(model, state, meta, f"checkpoint {str(path)!r}")
    return Checkpoint(model=model.eval(), meta=meta, path=path)


def validate_checkpoint(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Check that a run can use the checkpoint, reading all of it (for a pre-flight check).

    Reads the metadata and every weight (safetensors, or ``torch.load(weights_only=True)``: no
    pickled code runs), rebuilds the model the metadata describes (architecture, encoder,
    channels, classes) and loads the weights into it strictly: every name and shape must fit.
    Weights holding NaN or infinite values are refused too (the model would turn the whole
    mosaic into NaN).

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_checkpoint`.

    Returns
    -------
    CheckpointMeta
        The checkpoint's metadata.

    Raises
    ------
    CheckpointError
        Naming the file and the problem: missing, truncated, damaged or foreign file; metadata
        missing or invalid; an architecture or encoder this installation cannot build; weights
        that are not tensors, do not fit the declared model, or are not finite.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    meta, state = _read(path, weights=True)
    assert state is not None
    try:
        model = _build(meta)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    _fit_weights(model, state, meta, where)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(
            f"{where}: {len(bad)} weight tensor(s) hold NaN or infinite values (first: "
            f"{bad[0]!r}); the file is damaged or the training diverged"
        )
    return meta
