"""Each stage's minimum work (bytes through memory, bytes decoded and encoded, bytes from and to
disk, FLOPs) from a run's pixel counts and dtypes, and how far the stage ran from the time that
work takes at the machine's ceilings (``bench.ceilings``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft

from mosaicflow.bench.ceilings import Rates

#: The codec kind (``bench.ceilings.CODEC_KINDS``) each stored image is measured with.
KINDS = {"mosaic": "image", "denoised": "smooth", "probability": "mask", "labels": "labels"}
#: The store's name of each image.
STORED = {"mosaic": "mosaic", "denoised": "denoised", "probability": "probability"}
STORED["labels"] = "labels/particles"
#: Bytes through memory per pixel of one float pass that reads and writes the array.
F32_PASS, F64_PASS = 8, 16
#: FLOPs of one real FFT of N points (half of the complex transform's 5 N log2 N).
REAL_FFT = 2.5

#: Each stage's model in words; P: mosaic pixels, T: acquired tile pixels, S: strip pixels
#: (both strips of every registered pair), b_t, b_m, b_d: bytes per tile, mosaic and denoised
#: pixel, pyr(X): the stored levels of image X (encode all levels, decode every level but the
#: last to compute the next). Store reads and writes also count the compressed bytes (raw /
#: the codec's ratio) against the disk.
MODELS = {
    "tiles": "every tile read from disk once and checked: T*b_t from disk and through memory",
    "register": "both strips of every pair from disk (S*b_t); LoG pre-filter in float64 "
    "(S*(b_t + 8) to convert, 4 float64 passes: 64 B/px); masked NCC: 3 real FFTs of the "
    "padded strip shape per pair, 2.5 N log2 N FLOPs each, in float64",
    "mosaic": "every tile from disk once (T*b_t); to float64 and corrected (T*(b_t + 8)); "
    "3 float64 passes over the mosaic (weighted sum, weights, division) and the cast "
    "(P*(48 + b_m)); encode pyr(mosaic)",
    "mosaic+denoised": "the mosaic's model; then, in the same tasks, the Gaussian of the "
    "denoised stage on each fused chunk in memory: to float32, 2 float32 passes, back to the "
    "stored type (P*(b_m + 4 + 16 + 4 + b_d)); encode pyr(denoised)",
    "denoised": "decode mosaic level 0 (P*b_m); Gaussian: to float32, 2 float32 passes, "
    "back to the stored type (P*(b_m + 4 + 16 + 4 + b_d)); encode pyr(denoised)",
    "probability": "decode denoised level 0 once for the threshold (P*b_d; the Otsu "
    "histogram was counted as the denoised image was written); P*(2*b_d + 1) through memory; "
    "encode pyr(probability) (uint8)",
    "probability-model": "decode denoised level 0 (P*b_d); the model's FLOPs on every "
    "window of the inference grid (counted by torch on the checkpoint's architecture) at "
    "torch's convolution rate; encode pyr(probability) (uint8)",
    "labels": "decode probability level 0 twice (2*P: each chunk is labelled once for its "
    "summary and again to be relabelled); label twice (2*P*(1 + 4)), relabel (P*8); encode "
    "pyr(labels) (uint32)",
    "particles": "decode labels (P*4), denoised (P*b_d) and mosaic (P*b_m) level 0 and read "
    "each once through memory; measuring is not counted beyond that one pass",
}
NOT_MODELLED = {
    "report": "not modelled: figures and a few small reads of the stored levels",
    "register": "not modelled: no pair was registered (registration off, or a single tile)",
    "denoised": "not modelled here: written by the mosaic stage in the same pass, whose model "
    "counts it",
}


@dataclass(frozen=True)
class Work:
    """One stage's minimum work.

    Attributes
    ----------
    memory : float
        Bytes read plus written through main memory.
    decode, encode : dict
        Raw (uncompressed) bytes decoded and encoded, per codec kind.
    disk_read, disk_write : float
        Bytes read from and written to disk (stored bytes: compressed where the store's
        codec compresses them).
    flops_f64 : float
        Float64 FLOPs (at the float64 matrix-product rate).
    conv_flops : float
        A model's FLOPs (at torch's convolution rate where measured, else the float32
        matrix-product rate).
    model : str
        The model in words (:data:`MODELS`).
    """

    memory: float = 0.0
    decode: dict[str, float] = field(default_factory=dict)
    encode: dict[str, float] = field(default_factory=dict)
    disk_read: float = 0.0
    disk_write: float = 0.0
    flops_f64: float = 0.0
    conv_flops: float = 0.0
    model: str = ""


@dataclass(frozen=True)
class Workload:
    """What a run's stages handled, read from its run store (:func:`workload_from_store`).

    Attributes
    ----------
    tile_px : int
        Acquired pixels: tiles x tile height x tile width.
    tile_itemsize : int
        Bytes per tile pixel.
    tile_shape : tuple of int
        Tile height and width.
    levels : dict
        Per image of :data:`STORED` (keys of :data:`KINDS`): the pixels of each stored level.
    itemsize : dict
        Per image: bytes per pixel.
    pairs : tuple
        Nominal offsets ``(dy, dx)`` of every registered pair (neighbours and null pairs).
    max_shift : float
        Largest shift (px) registration searched.
    model_flops : float or None
        A model's FLOPs over the whole inference grid; None for the threshold baseline.
    denoised_with_mosaic : bool
        The mosaic stage wrote the denoised image too, in the same pass.
    """

    tile_px: int
    tile_itemsize: int
    tile_shape: tuple[int, int]
    levels: dict[str, tuple[int, ...]]
    itemsize: dict[str, int]
    pairs: tuple[tuple[float, float], ...] = ()
    max_shift: float = 0.0
    model_flops: float | None = None
    denoised_with_mosaic: bool = False

    @property
    def mosaic_px(self) -> int:
        """Level-0 pixels of the mosaic (every stored image has the same shape)."""
        return self.levels["mosaic"][0]

    def strip_px(self) -> int:
        """Pixels of both strips of every registered pair (S)."""
        return sum(pair_work(p, self.tile_shape, self.max_shift)[0] for p in self.pairs)

    def legend(self) -> dict[str, int]:
        """The symbols of :data:`MODELS` with their values, for ``bench.md``."""
        return {
            "P": self.mosaic_px,
            "T": self.tile_px,
            "S": self.strip_px(),
            "b_t": self.tile_itemsize,
            "b_m": self.itemsize["mosaic"],
            "b_d": self.itemsize["denoised"],
            "levels": len(self.levels["mosaic"]),
            "pairs": len(self.pairs),
        }


def _axis(d: float, n: int, max_shift: float) -> tuple[int, int, int]:
    """Along one axis of a pair at nominal offset ``d`` of tiles of ``n`` px: the lengths of
    the two strips and the FFT length of the masked NCC (as ``stitch.register`` sizes them:
    the nominal overlap widened by the allowed shift, only the allowed shifts computed)."""
    margin = math.ceil(max_shift)
    base = round(d)
    lo0, hi0 = max(0, base) - margin, min(n, base + n) + margin
    a0, a1 = max(lo0, 0), min(hi0, n)
    b0, b1 = max(lo0 - base, 0), min(hi0 - base, n)
    nr, nm = max(a1 - a0, 0), max(b1 - b0, 0)
    centre = d - a0 + b0
    lo = max(math.floor(centre - max_shift) - 1, -(nm - 1))
    hi = min(math.ceil(centre + max_shift) + 1, nr - 1)
    if nr == 0 or nm == 0 or hi < lo:
        return nr, nm, 0
    return nr, nm, sfft.next_fast_len(max(hi + nm, nr - lo, 1), real=True)


def pair_work(
    nominal: tuple[float, float], tile_shape: tuple[int, int], max_shift: float
) -> tuple[int, float]:
    """Strip pixels (both strips) and float64 FFT FLOPs of one registered pair."""
    (ry, my, ly), (rx, mx, lx) = (
        _axis(nominal[0], tile_shape[0], max_shift),
        _axis(nominal[1], tile_shape[1], max_shift),
    )
    pixels = ry * rx + my * mx
    n = ly * lx
    flops = 3 * REAL_FFT * n * math.log2(n) if n > 1 else 0.0
    return pixels, flops


def _pyramid(w: Workload, image: str, rates: Rates) -> dict[str, float]:
    """Encoding every stored level of ``image``, decoding each but the last (the next level is
    computed from it), the 2x2 reduction's reads and writes, and the stored bytes to disk."""
    b, lv, kind = w.itemsize[image], w.levels[image], KINDS[image]
    enc = b * sum(lv)
    dec = b * sum(lv[:-1])
    return {
        "encode": enc,
        "decode": dec,
        "memory": dec + b * sum(lv[1:]),
        "disk_write": enc / rates.ratio[kind],
        "disk_read": dec / rates.ratio[kind],
    }


def _combine(model: str, parts: list[dict[str, Any]]) -> Work:
    """One :class:`Work` from parts ``{memory, disk_read, disk_write, flops_f64, conv_flops,
    decode: {kind: bytes}, encode: {kind: bytes}}``."""
    totals = {k: 0.0 for k in ("memory", "disk_read", "disk_write", "flops_f64", "conv_flops")}
    decode: dict[str, float] = {}
    encode: dict[str, float] = {}
    for part in parts:
        for k in totals:
            totals[k] += float(part.get(k, 0.0))
        for kind, value in part.get("decode_kind", {}).items():
            decode[kind] = decode.get(kind, 0.0) + float(value)
        for kind, value in part.get("encode_kind", {}).items():
            encode[kind] = encode.get(kind, 0.0) + float(value)
    return Work(decode=decode, encode=encode, model=model, **totals)


def _store_read(image: str, raw: float, rates: Rates) -> dict[str, Any]:
    kind = KINDS[image]
    return {"decode_kind": {kind: raw}, "disk_read": raw / rates.ratio[kind]}


def _pyramid_part(w: Workload, image: str, rates: Rates) -> dict[str, Any]:
    p = _pyramid(w, image, rates)
    kind = KINDS[image]
    return {
        "encode_kind": {kind: p["encode"]},
        "decode_kind": {kind: p["decode"]},
        "memory": p["memory"],
        "disk_write": p["disk_write"],
        "disk_read": p["disk_read"],
    }


def stage_work(w: Workload, rates: Rates) -> dict[str, Work | None]:
    """Each stage's minimum work (:data:`MODELS`); None for a stage that is not modelled (the
    report) or did not run (registration switched off)."""
    P, T, bt = w.mosaic_px, w.tile_px, w.tile_itemsize
    bm, bd = w.itemsize["mosaic"], w.itemsize["denoised"]
    strips, fft = 0, 0.0
    for nominal in w.pairs:
        px, flops = pair_work(nominal, w.tile_shape, w.max_shift)
        strips += px
        fft += flops
    out: dict[str, Work | None] = {
        "tiles": _combine(MODELS["tiles"], [{"disk_read": T * bt, "memory": T * bt}]),
        "register": _combine(
            MODELS["register"],
            [{"disk_read": strips * bt, "memory": strips * (bt + 8 + 4 * 16), "flops_f64": fft}],
        )
        if w.pairs
        else None,
    }
    fused = [
        {"disk_read": T * bt, "memory": T * (bt + 8) + P * (3 * F64_PASS + bm)},
        _pyramid_part(w, "mosaic", rates),
    ]
    smoothed = [
        {"memory": P * (bm + 4 + 2 * F32_PASS + 4 + bd)},
        _pyramid_part(w, "denoised", rates),
    ]
    if w.denoised_with_mosaic:
        out["mosaic"] = _combine(MODELS["mosaic+denoised"], fused + smoothed)
        out["denoised"] = None
    else:
        out["mosaic"] = _combine(MODELS["mosaic"], fused)
        read = _store_read("mosaic", P * bm, rates)
        out["denoised"] = _combine(MODELS["denoised"], [read, *smoothed])
    if w.model_flops is None:
        out["probability"] = _combine(
            MODELS["probability"],
            [
                _store_read("denoised", P * bd, rates),
                {"memory": P * (2 * bd + 1)},
                _pyramid_part(w, "probability", rates),
            ],
        )
    else:
        out["probability"] = _combine(
            MODELS["probability-model"],
            [
                _store_read("denoised", P * bd, rates),
                {"conv_flops": w.model_flops},
                _pyramid_part(w, "probability", rates),
            ],
        )
    out["labels"] = _combine(
        MODELS["labels"],
        [
            _store_read("probability", 2 * P, rates),
            {"memory": 2 * P * (1 + 4) + P * 8},
            _pyramid_part(w, "labels", rates),
        ],
    )
    reads = [_store_read(n, P * b, rates) for n, b in (("labels", 4), ("denoised", bd))]
    reads.append(_store_read("mosaic", P * bm, rates))
    out["particles"] = _combine(MODELS["particles"], [*reads, {"memory": P * (4 + bd + bm)}])
    out["report"] = None
    return out


def seconds_by_bound(work: Work, rates: Rates) -> dict[str, float]:
    """The time ``work`` takes at each ceiling alone: ``memory``, ``codec`` (decode plus
    encode), ``disk`` (read plus write) and ``flops``; bounds without work are left out."""
    out: dict[str, float] = {}
    if work.memory:
        out["memory"] = work.memory / rates.memory
    codec = sum(v / rates.decode[k] for k, v in work.decode.items())
    codec += sum(v / rates.encode[k] for k, v in work.encode.items())
    if codec:
        out["codec"] = codec
    disk = work.disk_read / rates.disk_read + work.disk_write / rates.disk_write
    if disk:
        out["disk"] = disk
    flops = work.flops_f64 / rates.flops_f64
    flops += work.conv_flops / (rates.conv or rates.flops_f32)
    if flops:
        out["flops"] = flops
    return out


def not_modelled(reason: str) -> dict[str, Any]:
    """The ``ceiling`` entry of a stage without a model of its work: ``model`` says why."""
    return {
        "bound": None,
        "seconds_at_ceiling": None,
        "fraction": None,
        "seconds_by_bound": {},
        "work": None,
        "model": reason,
    }


def ceiling(work: Work, rates: Rates, wall: float | None) -> dict[str, Any]:
    """A stage's ``ceiling`` entry in ``bench.json``.

    The bound is the ceiling the work takes longest at (no stage can be faster than the
    slowest of its resources allows); ``fraction = seconds_at_ceiling / wall``: 1 means the
    stage ran at that ceiling, 0.1 ten times slower.

    Returns
    -------
    dict
        ``bound`` (``memory``, ``codec``, ``disk`` or ``flops``), ``seconds_at_ceiling``,
        ``fraction`` (None without a wall time), ``seconds_by_bound``, ``work`` (the modelled
        quantities) and ``model`` (in words).
    """
    by = seconds_by_bound(work, rates)
    bound = max(by, key=by.__getitem__) if by else None
    at = by[bound] if bound else 0.0
    return {
        "bound": bound,
        "seconds_at_ceiling": _sig(at),
        "fraction": _sig(at / wall) if wall else None,
        "seconds_by_bound": {k: _sig(v) for k, v in by.items()},
        "work": {
            "memory_bytes": round(work.memory),
            "decode_bytes": {k: round(v) for k, v in work.decode.items()},
            "encode_bytes": {k: round(v) for k, v in work.encode.items()},
            "disk_read_bytes": round(work.disk_read),
            "disk_write_bytes": round(work.disk_write),
            "flops_f64": round(work.flops_f64),
            "conv_flops": round(work.conv_flops),
        },
        "model": work.model,
    }


def _sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def stage_ceilings(
    stages: dict[str, dict[str, Any]], workload: Workload, machine: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """``ceiling`` of every stage in ``stages`` (the benchmark's per-stage figures, whose
    ``seconds`` is the wall time), at the machine's ceilings ``machine``."""
    rates = Rates(machine)
    works = stage_work(workload, rates)
    out = {}
    for name, figures in stages.items():
        found = works.get(name)
        out[name] = (
            ceiling(found, rates, figures.get("seconds"))
            if found is not None
            else not_modelled(
                NOT_MODELLED.get(name, "not modelled: the stage did not run or is unknown")
            )
        )
    return out


def workload_from_store(store: str | os.PathLike[str], config: Any) -> Workload:
    """The :class:`Workload` of the run in ``store`` (read only), with ``config`` the run's
    configuration (the allowed registration shift, the model)."""
    from mosaicflow.io.store import RunStore
    from mosaicflow.stitch.register import default_max_shift

    run = RunStore(str(store), mode="r")
    tileset = run.meta["tileset"]
    tile_shape = (int(tileset["tile_shape"][0]), int(tileset["tile_shape"][1]))
    n_tiles = run.count_rows("tiles")
    levels, itemsize = {}, {}
    for image, name in STORED.items():
        shapes = [run.open_level(name, k).shape for k in run.image_levels(name)]
        levels[image] = tuple(int(s[0]) * int(s[1]) for s in shapes)
        itemsize[image] = int(run.open_level(name, 0).dtype.itemsize)
    pairs: tuple[tuple[float, float], ...] = ()
    if run.has_table("pairs"):
        table = run.read_table("pairs", columns=["nominal_dy", "nominal_dx"])
        pairs = tuple(map(tuple, table.to_numpy(float).tolist()))
    cfg = config.stitch
    max_shift = cfg.max_shift_px if cfg.max_shift_px is not None else default_max_shift(tile_shape)
    flops = None
    if config.segment.method == "model":
        shape = run.open_level("denoised", 0).shape
        flops = model_flops(config.segment, (int(shape[0]), int(shape[1])))
    return Workload(
        tile_px=n_tiles * tile_shape[0] * tile_shape[1],
        tile_itemsize=int(np.dtype(tileset["dtype"]).itemsize),
        tile_shape=tile_shape,
        levels=levels,
        itemsize=itemsize,
        pairs=pairs,
        max_shift=float(max_shift),
        model_flops=flops,
        denoised_with_mosaic=run.stages().get("denoised", {}).get("written_by") == "mosaic",
    )


def model_flops(segment: Any, shape: tuple[int, int]) -> float:
    """FLOPs of windowed inference on an image of ``shape``: torch's FLOP counter on one
    window of the checkpoint's architecture (built on the meta device: no weights, no
    arithmetic), times the windows of the inference grid, times 8 with test-time
    augmentation."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mosaicflow.segmentation.default import resolve_model_path
    from mosaicflow.segmentation.models import build_model, read_checkpoint_metadata
    from mosaicflow.segmentation.windows import window_grid

    meta = read_checkpoint_metadata(resolve_model_path(str(segment.model)))
    window = int(segment.window or meta.window)
    with torch.device("meta"):
        model = build_model(
            meta.arch,
            meta.encoder,
            in_channels=meta.in_channels,
            classes=meta.classes,
            decoder_channels=meta.decoder_channels,
        )
        x = torch.empty(1, meta.in_channels, window, window)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    grid = window_grid(shape, window, float(segment.overlap))
    return float(counter.get_total_flops()) * grid.n_windows * (8 if segment.tta else 1)
