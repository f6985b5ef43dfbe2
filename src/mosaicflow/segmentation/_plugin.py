"""One model per worker process: a cache of ready-to-run models and the worker plugin holding it.

Predict tasks never carry weights. They carry a small *source*: a checkpoint path with a token
(mtime and size, so a file replaced after the graph was built is detected), or the token of a
bare ``torch.nn.Module`` that travels once as its own graph key. Each task asks the cache of
the process it runs in for the model; the first task loads it (from the file, or by preparing
the module: eval mode, device, memory format), the others reuse it. For the ONNX runtime the
cache also holds the ONNX Runtime session exported from that model, once per window.

On a distributed worker with ``ModelPlugin`` registered the cache lives on the plugin (its
``loads`` counter says how often a model was loaded there, and it can preload checkpoints at
worker start). Anywhere else (threaded or synchronous scheduler, or a worker without the
plugin) one cache per process is used, which gives the same once-per-process behaviour.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import WorkerPlugin

from mosaicflow.errors import CheckpointError

if TYPE_CHECKING:
    import torch

PLUGIN_NAME = "mosaicflow-models"


@dataclass(frozen=True)
class CheckpointSource:
    """A model to load from a checkpoint file; ``token`` pins the file's version."""

    path: str
    token: str


@dataclass(frozen=True)
class ModuleSource:
    """A bare module that travels as a graph key; ``token`` identifies it in the cache."""

    token: str
    name: str


def checkpoint_source(path: str | os.PathLike[str]) -> CheckpointSource:
    """The source of the checkpoint at ``path``, pinned to the file's current version.

    Parameters
    ----------
    path : path-like
        The checkpoint file; made absolute.

    Returns
    -------
    CheckpointSource
        The absolute path and a token ``"path:mtime_ns:size"``.

    Raises
    ------
    CheckpointError
        The file does not exist.
    """
    resolved = Path(path).resolve()
    try:
        st = resolved.stat()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file") from exc
    return CheckpointSource(str(resolved), f"{resolved}:{st.st_mtime_ns}:{st.st_size}")


def resolve_device(device: Any) -> torch.device:
    """The torch device a device setting names, in this process.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` (or ``None``) is CUDA when torch sees a GPU in this process, else the CPU;
        anything else is passed to ``torch.device``.

    Returns
    -------
    torch.device
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


def _prepare(model: Any, device: torch.device, channels_last: bool, *, own: bool) -> Any:
    import torch

    if not isinstance(model, torch.nn.Module):
        return model  # a plain callable: run as given
    if not own:
        # the cached model must not follow later changes to the caller's module (train mode,
        # device), and the caller's module is never switched to eval mode or moved
        model = copy.deepcopy(model)
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


class ModelCache:
    """Ready-to-run models keyed by (source token, device, memory format, runtime, window);
    thread-safe, LRU.

    ``loads`` counts models loaded from a file or prepared from a module; ``exports`` counts
    ONNX Runtime sessions made from them (one per model and window).
    """

    # 8 entries: four models, each with its ONNX Runtime session on a CPU worker
    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = maxsize
        self.loads = 0
        self.exports = 0
        self._models: OrderedDict[tuple[str, str, bool, str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        source: CheckpointSource | ModuleSource,
        module: Any,
        device: torch.device,
        channels_last: bool = False,
        *,
        runtime: str = "torch",
        window: int = 0,
    ) -> Any:
        """The ready-to-run model of ``source``, loaded or prepared on the first request.

        Parameters
        ----------
        source : CheckpointSource or ModuleSource
            Where the model comes from; its token is part of the cache key.
        module : torch.nn.Module, callable or None
            The bare module of a ``ModuleSource`` (a copy is prepared; the caller's module is
            left alone); ignored for a ``CheckpointSource``.
        device : torch.device
            Where the model runs.
        channels_last : bool
            Convert the model to ``torch.channels_last`` memory format (torch only).
        runtime : {"torch", "onnx"}
            ``"onnx"``: the torch model (from this cache) exported for ``window`` and run by
            ONNX Runtime on the CPU with :func:`~._onnx.threads_per_call` threads.
        window : int
            The square window side an ONNX session is exported for.

        Returns
        -------
        torch.nn.Module, OnnxModel or callable
            The model in eval mode on ``device`` (a plain callable as given).

        Raises
        ------
        CheckpointError
            The checkpoint is unreadable, or changed since its source was made.
        MosaicflowError
            The ONNX export failed or disagrees with torch.
        """
        with self._lock:
            if runtime != "onnx":
                return self._torch(source, module, device, bool(channels_last))
            key = (source.token, "cpu", False, "onnx", int(window))
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            from mosaicflow.segmentation import _onnx

            base = self._torch(source, module, _cpu(), False)
            name = (
                f"checkpoint {Path(source.path).name!r}"
                if isinstance(source, CheckpointSource)
                else f"{source.name} module"
            )
            model = _onnx.export(base, int(window), threads=_onnx.threads_per_call(), name=name)
            self.exports += 1
            return self._store(key, model)

    def _torch(
        self, source: CheckpointSource | ModuleSource, module: Any, device: Any, cl: bool
    ) -> Any:
        key = (source.token, str(device), cl, "torch", 0)
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model
        if isinstance(source, CheckpointSource):
            model = _prepare(_load(source), device, cl, own=True)
        else:
            model = _prepare(module, device, cl, own=False)
        self.loads += 1
        return self._store(key, model)

    def _store(self, key: tuple[str, str, bool, str, int], model: Any) -> Any:
        self._models[key] = model
        while len(self._models) > self.maxsize:
            self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        """Drop every cached model."""
        with self._lock:
            self._models.clear()


def _load(source: CheckpointSource) -> Any:
    from mosaicflow.segmentation.models import load_checkpoint

    current = checkpoint_source(source.path)
    if current.token != source.token:
        raise CheckpointError(
            f"checkpoint {source.path!r}: the file changed after the graph was built "
            "(modification time or size differ); rebuild the graph"
        )
    return load_checkpoint(source.path).model


_PROCESS_CACHE = ModelCache()
_UNSET: Any = None


class ModelPlugin(WorkerPlugin):
    """Holds a worker's model cache; optionally loads checkpoints when the worker starts.

    Register with ``client.register_plugin(ModelPlugin(preload=[path]))`` or
    :func:`register_model_plugin`. ``worker.plugins[PLUGIN_NAME].cache.loads`` counts the
    models loaded on that worker.
    """

    name = PLUGIN_NAME

    def __init__(self, preload: tuple[str, ...] | list[str] = (), *, device: str = "auto") -> None:
        self.preload = tuple(str(p) for p in preload)
        self.device = device
        # made in setup, on the worker: the plugin is pickled to every worker and a lock is not
        self.cache: ModelCache = _UNSET

    def setup(self, worker: Any) -> None:
        """Make the worker's cache and load the ``preload`` checkpoints into it."""
        self.cache = ModelCache()
        for path in self.preload:
            self.cache.get(checkpoint_source(path), None, resolve_device(self.device))

    def teardown(self, worker: Any) -> None:
        """Drop the worker's cached models."""
        self.cache.clear()


def register_model_plugin(
    client: Any, *checkpoints: str | os.PathLike[str], device: str = "auto"
) -> ModelPlugin:
    """Register :class:`ModelPlugin` on every worker of ``client``, preloading ``checkpoints``.

    Parameters
    ----------
    client : distributed.Client
        The cluster's client.
    *checkpoints : path-like
        Checkpoints each worker loads when it starts (workers that join later too).
    device : str
        Where the preloaded models go: ``"auto"`` (CUDA when the worker sees a GPU) or a torch
        device.

    Returns
    -------
    ModelPlugin
        The registered plugin.
    """
    plugin = ModelPlugin(preload=[str(Path(p).resolve()) for p in checkpoints], device=device)
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return plugin


def get_cache() -> ModelCache:
    """The model cache of the current worker's :class:`ModelPlugin`, else this process's cache.

    Returns
    -------
    ModelCache
    """
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            worker = get_worker()
        except ValueError:
            return _PROCESS_CACHE
        plugin = worker.plugins.get(PLUGIN_NAME)
        if isinstance(plugin, ModelPlugin):
            return plugin.cache
    return _PROCESS_CACHE
