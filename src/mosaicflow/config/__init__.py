"""Run configuration: frozen dataclasses, from YAML/dicts, overridable by environment variables.

``MOSAICFLOW_<SECTION>__<KEY>=value`` overrides one value (e.g. ``MOSAICFLOW_DENOISE__SIGMA=2``),
which suits Kubernetes pods. Unknown sections or keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mosaicflow.config.values import (
    coerce_value,
    parse_grid,
    parse_memory_limit,
    parse_overlap,
    parse_size,
)
from mosaicflow.errors import ConfigError

ENV_PREFIX = "MOSAICFLOW_"
#: Store chunk side in pixels (also each task's block) on the threshold path: a 2048x2048 uint8
#: chunk is 4 MiB, and a threshold run's workers peak at about 0.55-0.6 GiB at any mosaic size.
#: Against 1024 px it has a quarter of the tasks and runs 8-21 % faster (docs/PERFORMANCE.md,
#: "chunk size").
DEFAULT_CHUNK_PX = 2048
#: The store chunk with a model (``segment.method: model``): windowed inference dominates such a
#: run, and 1024 px chunks are faster and lighter there (docs/PERFORMANCE.md, "chunk size").
MODEL_CHUNK_PX = 1024
BLEND_MODES = ("linear", "nearest")


@dataclass(frozen=True)
class SynthConfig:
    """The built-in default input: a synthetic Maps-like grid (used when no input is given)."""

    rows: int = 4
    cols: int = 5
    tile_height: int = 900
    tile_width: int = 1400
    overlap: float = 0.10
    stage_error_px: float = 8.0
    pixel_size_nm: float = 2.0
    snr: float = 20.0
    bit_depth: int = 8
    seed: int = 0


MISSING_TILE_POLICIES = ("error", "blank")


@dataclass(frozen=True)
class StitchConfig:
    """``register``: measure every overlapping tile pair's offset (phase correlation) and solve
    all positions together before fusing (``docs/STITCHING.md``); ``false`` fuses at the stage
    positions. ``max_shift_px``: the largest stage error searched (default: a tenth of the
    smaller tile side, at least 16 px). ``blend``: ``linear`` (feathered across overlaps) or
    ``nearest`` (each pixel from the tile with the nearest centre). ``equalize``: per-tile gain
    and offset from the overlaps. ``flatfield``: divide every tile by the shading all tiles
    share (estimated from the tiles; for grids of at least a few dozen tiles). ``device``:
    where pairs are registered, ``cpu``, ``gpu`` (CuPy/cuCIM through ``mosaicflow.dispatch``;
    checked on an NVIDIA H200 against the CPU path) or ``auto`` (the GPU where a worker has one)."""

    register: bool = True
    max_shift_px: float | None = None
    blend: str = "linear"
    equalize: bool = True
    flatfield: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class TilesConfig:
    """How the input's tiles are read (``mosaicflow.io.read_tileset``; see
    ``docs/GRID_FORMAT.md``). ``layout``: a ``file,row,col`` CSV or a Fiji
    ``TileConfiguration.txt``; ``pixel_size_nm``: overrides the layout and tile metadata;
    ``grid``: ``"ROWSxCOLS"`` (image files in sorted name order, row by row); ``overlap``: the
    fraction shared by neighbours, for the grid model (one value, or ``"VERTICAL,HORIZONTAL"``);
    ``crop_bottom``: data-bar rows cut from every tile (default: from FEI metadata);
    ``missing_tiles``: ``error`` or ``blank``."""

    layout: str | None = None
    pixel_size_nm: float | None = None
    grid: str | None = None
    overlap: str | None = None
    crop_bottom: int | None = None
    missing_tiles: str = "error"

    def reader_options(self) -> dict[str, Any]:
        """The keyword arguments of ``read_tileset``."""
        return {
            "layout": self.layout,
            "pixel_size_nm": self.pixel_size_nm,
            "grid": None if self.grid is None else parse_grid(self.grid),
            "overlap": parse_overlap(self.overlap),
            "crop_bottom": self.crop_bottom,
            "missing_tiles": self.missing_tiles,
        }


@dataclass(frozen=True)
class StoreConfig:
    """``chunk``: side of the store's square chunks in pixels (also the Dask chunk of every
    stage); empty (the default) chooses by the segmenter: :data:`DEFAULT_CHUNK_PX` on the
    threshold path, :data:`MODEL_CHUNK_PX` with a model (:attr:`Config.chunk_px`)."""

    chunk: int | None = None


#: The denoisers ``mosaicflow.restoration.denoise`` runs by name (each but ``none`` is a filter).
DENOISE_METHODS = ("gaussian", "median", "nl_means", "none")
POLARITIES = ("bright", "dark", "auto")
EDGE_POLICIES = ("keep", "flag", "drop")
#: ``measure.min_size: auto``: the smallest listed equivalent diameter, in pixels.
AUTO_MIN_DIAMETER_PX = 3.0


@dataclass(frozen=True)
class DenoiseConfig:
    """``method``: gaussian | median | nl_means | none.

    gaussian uses ``sigma`` (px); median ``size`` (odd px); nl_means ``patch_size``,
    ``patch_distance``, ``h`` and ``noise_sigma`` in grey levels of the mosaic, where ``None``
    means: ``noise_sigma`` estimated over the whole mosaic, ``h = 0.8 * noise_sigma``
    (scikit-image's advice for the fast mode). ``store_dtype``: ``input`` stores the denoised
    layer rounded to the mosaic's integer type (a float mosaic stays float32), ``float32`` keeps
    the filter's output.
    """

    method: str = "gaussian"
    sigma: float = 1.0
    size: int = 3
    patch_size: int = 5
    patch_distance: int = 6
    h: float | None = None
    noise_sigma: float | None = None
    store_dtype: str = "input"


@dataclass(frozen=True)
class SegmentConfig:
    """``method``: ``otsu`` (the default baseline; ``polarity`` says whether particles are
    ``bright`` (SEM backscatter, HAADF) or ``dark`` (bright-field TEM/HRTEM) against the
    substrate, or ``auto``: the smaller side of the threshold, decided from the mosaic's
    histogram and recorded in the store) or ``model`` (windowed inference with the
    checkpoint at ``model``; its window and threshold apply unless ``window`` is set).
    ``model: default`` is the instance model shipped inside the package; with an instance model
    (``mosaicflow train``) the run stores the foreground and interior probabilities and grows
    seeds into instances (``docs/INSTANCES.md``): ``foreground_threshold`` and
    ``seed_threshold`` and ``min_seed_px`` (smaller seeds are dropped) override the
    checkpoint's, ``max_particle_px`` is the halo each label
    chunk reads first (larger particles widen the window, exactly).
    ``resources`` (e.g. ``{GPU: 1}``) sends the model's window tasks only to workers started
    with those Dask resources. ``runtime``: ``auto`` (ONNX Runtime on CPU workers, about twice
    eager PyTorch at the same masks; PyTorch on a GPU), ``torch`` or ``onnx``
    (``docs/INFERENCE.md``)."""

    method: str = "otsu"
    polarity: str = "auto"
    nbins: int = 256
    model: str | None = None
    window: int | None = None
    overlap: float = 0.25
    batch_size: int = 4
    tta: bool = False
    device: str = "auto"
    resources: dict[str, float] | None = None
    runtime: str = "auto"
    foreground_threshold: float | None = None
    seed_threshold: float | None = None
    min_seed_px: int | None = None
    max_particle_px: int = 256

    def predict_options(self) -> dict[str, Any]:
        """The windowed-inference keywords of ``segmentation.predict`` this section sets."""
        return {
            "window": self.window,
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "tta": self.tta,
            "device": self.device,
            "resources": self.resources,
            "runtime": self.runtime,
        }


@dataclass(frozen=True)
class LabelConfig:
    """``connectivity``: 1 (4-connected) or 2 (8-connected), as in ``skimage.measure.label``."""

    connectivity: int = 1


@dataclass(frozen=True)
class MeasureConfig:
    """Which particles the table lists and how they are measured.

    ``halo``: pixels each chunk reads from its neighbours when measuring particles; particles
    up to about this size are measured by one chunk, larger ones are assembled from pieces
    (exact either way, slower for giants). ``min_size``: the smallest equivalent diameter a
    particle must have to be listed, ``"<number> nm"`` or ``"<number> px"``, ``"0"`` for none,
    or ``"auto"``: :data:`AUTO_MIN_DIAMETER_PX` pixels (objects of a few pixels are noise at any
    pixel size). ``edge_policy``: particles touching the mosaic's edge or an area no tile covers
    are ``keep`` (counted like any other), ``flag`` (listed, left out of the statistics and
    counted apart) or ``drop`` (not listed; counted in the stage record). ``max_object_fraction``:
    a warning when one object covers more than this fraction of the mosaic (a background taken
    for a particle: check the polarity). ``block``: stored chunks per measuring task along
    each axis (1: a task per chunk). A task reads its block and the halo around it, and each
    read decodes every stored chunk it touches, so larger blocks decode less per pixel and hold
    more per task; the table is the same for any block."""

    halo: int = 64
    block: int = 2
    min_size: str = "auto"
    edge_policy: str = "flag"
    max_object_fraction: float = 0.25


@dataclass(frozen=True)
class ClassifyConfig:
    """``model``: a random forest saved by ``mosaicflow classify-train`` (``None``: particles
    are not classified). ``trust_pickle``: also read a classifier file of the old pickle-based
    format, which can run code when loaded: only for files whose origin you trust."""

    model: str | None = None
    trust_pickle: bool = False


#: How a local cluster's nannies may start their worker processes (``cluster.start_method``,
#: :func:`mosaicflow.cluster.local_start_method`).
START_METHODS = ("auto", "fork", "spawn")


@dataclass(frozen=True)
class ClusterConfig:
    """``address``: ``local`` (a LocalCluster of ``n_workers`` processes, at least 1; empty:
    sized from the machine), ``local-cuda`` (one worker per GPU), a scheduler address such as
    ``tcp://host:8786``, ``kubernetes`` or ``kubernetes://NAME`` (``mosaicflow.cluster``).
    ``memory_limit`` per worker: ``auto``, a size (``4GiB``, ``4 GB``), a whole number of bytes,
    a fraction in (0, 1] of the machine's memory, or 0 for none
    (:func:`~mosaicflow.config.values.parse_memory_limit`). ``no_worker_timeout_s``: a stage
    with no worker at all for this long fails instead of waiting for ever;
    ``stall_timeout_s``: a stage where no task finishes for this long (and 20 x the slowest
    task so far) fails as hung (:class:`mosaicflow.runner.Runner`). ``start_method``: how a
    local cluster starts its worker processes, ``auto`` (fork on Linux where safe), ``fork``
    or ``spawn`` (:func:`mosaicflow.cluster.local_start_method`). ``dashboard``: a local
    cluster also serves Dask's dashboard (off by default: it costs the driver about 2 s of CPU
    per run, ``docs/PERFORMANCE.md``); a running scheduler keeps its own."""

    address: str = "local"
    n_workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    start_method: str = "auto"
    dashboard: bool = False
    no_worker_timeout_s: float = 120.0
    stall_timeout_s: float = 600.0


@dataclass(frozen=True)
class StorageConfig:
    """``options``: fsspec storage options for inputs and run stores at URLs (``s3://...``),
    as the file system spells them: for S3 (s3fs) ``endpoint_url``, ``key``, ``secret``,
    ``token``, ``anon``, ``client_kwargs: {region_name: ...}``. Credentials are never printed
    and never stored in a run store (the stored configuration has them as ``***``)."""

    options: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Config:
    """Everything a run needs. ``input`` None means the built-in synthetic grid."""

    input: str | None = None
    synth: SynthConfig = field(default_factory=SynthConfig)
    tiles: TilesConfig = field(default_factory=TilesConfig)
    stitch: StitchConfig = field(default_factory=StitchConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        self._coerce_types()
        from mosaicflow.config.checks import configuration_checks

        cluster = self.cluster
        checks = configuration_checks(self)
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid configuration: {message}")
        parse_memory_limit(cluster.memory_limit)
        parse_size(self.measure.min_size)
        if self.tiles.grid is not None:
            parse_grid(self.tiles.grid)
        parse_overlap(self.tiles.overlap)

    def _coerce_types(self) -> None:
        """Every value with its field's type (:func:`~mosaicflow.config.values.coerce_value`),
        before any value is compared: ``store.chunk: 512.9`` or ``segment.tta: 'no'`` is a
        :class:`ConfigError` naming the option, never truncated or taken as true."""
        object.__setattr__(self, "input", coerce_value("input", "str | None", self.input))
        for section in dataclasses.fields(self):
            if section.name == "input":
                continue
            values = getattr(self, section.name)
            if not isinstance(values, _section_class(section.name)):
                raise ConfigError(f"configuration section {section.name!r}: got {values!r}")
            typed = {
                f.name: coerce_value(f"{section.name}.{f.name}", f.type, getattr(values, f.name))
                for f in dataclasses.fields(values)
            }
            object.__setattr__(self, section.name, dataclasses.replace(values, **typed))

    @property
    def chunk_px(self) -> int:
        """The store chunk the run uses: ``store.chunk``, or when it is empty
        :data:`MODEL_CHUNK_PX` with a model and :data:`DEFAULT_CHUNK_PX` otherwise."""
        if self.store.chunk is not None:
            return int(self.store.chunk)
        return MODEL_CHUNK_PX if self.segment.method == "model" else DEFAULT_CHUNK_PX

    # -- conversion -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionaries (YAML- and JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build from nested mappings; unknown sections or keys are errors."""
        sections = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in sections:
                raise ConfigError(
                    f"unknown configuration section {key!r}; known: {sorted(sections)}"
                )
            if key == "input":
                kwargs[key] = None if value is None else str(value)
                continue
            section_cls = _section_class(key)
            if not isinstance(value, Mapping):
                raise ConfigError(f"configuration section {key!r} must be a mapping, got {value!r}")
            known = {f.name: f for f in dataclasses.fields(section_cls)}
            for name in value:
                if name not in known:
                    raise ConfigError(f"unknown key {key}.{name}; known: {sorted(known)}")
            kwargs[key] = section_cls(**value)  # typed by __post_init__
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Config:
        """Read a YAML file of sections (see :meth:`from_dict`)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"configuration file {str(path)!r}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"configuration file {str(path)!r}: expected a mapping at the top")
        return cls.from_dict(data)

    def with_env(self, environ: Mapping[str, str] | None = None) -> Config:
        """A copy with the ``MOSAICFLOW_SECTION__KEY`` variables of ``environ`` applied."""
        environ = os.environ if environ is None else environ
        data = self.to_dict()
        for name, raw in environ.items():
            if not name.startswith(ENV_PREFIX) or "__" not in name:
                continue
            section, key = name[len(ENV_PREFIX) :].lower().split("__", 1)
            if section not in data or not isinstance(data[section], dict):
                raise ConfigError(f"environment variable {name}: unknown section {section!r}")
            data[section][key] = yaml.safe_load(raw)
        return Config.from_dict(data)

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed."""
        if section == "input":
            return dataclasses.replace(self, input=values["value"])
        return dataclasses.replace(
            self, **{section: dataclasses.replace(getattr(self, section), **values)}
        )


def _section_class(name: str) -> type:
    return {
        "synth": SynthConfig,
        "tiles": TilesConfig,
        "stitch": StitchConfig,
        "store": StoreConfig,
        "denoise": DenoiseConfig,
        "segment": SegmentConfig,
        "label": LabelConfig,
        "measure": MeasureConfig,
        "classify": ClassifyConfig,
        "cluster": ClusterConfig,
        "storage": StorageConfig,
    }[name]
