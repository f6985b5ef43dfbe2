"""The rules a configuration must keep, as ``(holds, message)`` pairs checked when a
:class:`~mosaicflow.config.Config` is made."""

from __future__ import annotations

from typing import Any

from mosaicflow.config import (
    BLEND_MODES,
    DENOISE_METHODS,
    EDGE_POLICIES,
    MISSING_TILE_POLICIES,
    POLARITIES,
    START_METHODS,
)


def configuration_checks(config: Any) -> list[tuple[bool, str]]:
    """``(holds, message)`` for every rule a :class:`~mosaicflow.config.Config` must keep."""
    checks = [
        (
            config.store.chunk is None or config.store.chunk >= 16,
            f"store.chunk must be >= 16 px or empty (by the segmenter), got {config.store.chunk}",
        ),
        (
            config.denoise.method in DENOISE_METHODS,
            f"denoise.method must be one of {DENOISE_METHODS}, got {config.denoise.method!r}",
        ),
        (config.denoise.sigma > 0, f"denoise.sigma must be > 0, got {config.denoise.sigma}"),
        (
            config.denoise.size >= 1 and config.denoise.size % 2 == 1,
            f"denoise.size must be an odd number >= 1, got {config.denoise.size}",
        ),
        (
            config.denoise.patch_size >= 1 and config.denoise.patch_size % 2 == 1,
            f"denoise.patch_size must be an odd number >= 1, got {config.denoise.patch_size}",
        ),
        (
            config.denoise.patch_distance >= 1,
            f"denoise.patch_distance must be >= 1, got {config.denoise.patch_distance}",
        ),
        (
            config.denoise.h is None or config.denoise.h > 0,
            f"denoise.h must be > 0 or empty (automatic), got {config.denoise.h}",
        ),
        (
            config.denoise.noise_sigma is None or config.denoise.noise_sigma >= 0,
            f"denoise.noise_sigma must be >= 0 or empty (estimated), "
            f"got {config.denoise.noise_sigma}",
        ),
        (
            config.denoise.store_dtype in ("input", "float32"),
            f"denoise.store_dtype must be 'input' or 'float32', got {config.denoise.store_dtype!r}",
        ),
        (
            config.segment.method in ("otsu", "model"),
            f"segment.method must be 'otsu' or 'model', got {config.segment.method!r}",
        ),
        (
            config.segment.method != "model" or bool(config.segment.model),
            "segment.method 'model' needs segment.model: 'default' (the shipped instance "
            "model) or the path of a checkpoint",
        ),
        (
            all(
                t is None or 0.0 < t <= 1.0
                for t in (config.segment.foreground_threshold, config.segment.seed_threshold)
            ),
            "segment.foreground_threshold and segment.seed_threshold must be in (0, 1] "
            f"(or empty: the checkpoint's), got {config.segment.foreground_threshold!r} and "
            f"{config.segment.seed_threshold!r}",
        ),
        (
            config.segment.min_seed_px is None or config.segment.min_seed_px >= 0,
            f"segment.min_seed_px must be >= 0, got {config.segment.min_seed_px}",
        ),
        (
            config.segment.max_particle_px >= 1,
            f"segment.max_particle_px must be >= 1, got {config.segment.max_particle_px}",
        ),
        (
            0.0 <= config.segment.overlap < 1.0,
            f"segment.overlap must be in [0, 1), got {config.segment.overlap}",
        ),
        (
            config.segment.batch_size >= 1,
            f"segment.batch_size must be >= 1, got {config.segment.batch_size}",
        ),
        (
            config.segment.runtime in ("auto", "torch", "onnx"),
            f"segment.runtime must be auto, torch or onnx, got {config.segment.runtime!r}",
        ),
        (
            config.segment.window is None or config.segment.window >= 16,
            f"segment.window must be >= 16 px or empty, got {config.segment.window}",
        ),
        (
            config.segment.polarity in POLARITIES,
            f"segment.polarity must be one of {POLARITIES}, got {config.segment.polarity!r}",
        ),
        (
            config.measure.edge_policy in EDGE_POLICIES,
            f"measure.edge_policy must be one of {EDGE_POLICIES}, got "
            f"{config.measure.edge_policy!r}",
        ),
        (
            0 < config.measure.max_object_fraction <= 1,
            f"measure.max_object_fraction must be in (0, 1], got "
            f"{config.measure.max_object_fraction}",
        ),
        (config.segment.nbins >= 2, f"segment.nbins must be >= 2, got {config.segment.nbins}"),
        (
            config.label.connectivity in (1, 2),
            f"label.connectivity must be 1 or 2, got {config.label.connectivity}",
        ),
        (config.measure.halo >= 1, f"measure.halo must be >= 1 px, got {config.measure.halo}"),
        (
            config.measure.block >= 1,
            f"measure.block must be >= 1 (stored chunks per task), got {config.measure.block}",
        ),
        (
            config.synth.rows >= 1 and config.synth.cols >= 1,
            "synth.rows and synth.cols must be >= 1",
        ),
        (
            0 <= config.synth.overlap < 0.5,
            f"synth.overlap must be in [0, 0.5), got {config.synth.overlap}",
        ),
        (
            config.synth.bit_depth in (8, 16),
            f"synth.bit_depth must be 8 or 16, got {config.synth.bit_depth}",
        ),
    ]
    tiles = config.tiles
    checks += [
        (
            tiles.pixel_size_nm is None or tiles.pixel_size_nm > 0,
            f"tiles.pixel_size_nm must be > 0 or empty, got {tiles.pixel_size_nm}",
        ),
        (
            tiles.crop_bottom is None or tiles.crop_bottom >= 0,
            f"tiles.crop_bottom must be >= 0 px or empty, got {tiles.crop_bottom}",
        ),
        (
            tiles.missing_tiles in MISSING_TILE_POLICIES,
            f"tiles.missing_tiles must be one of {MISSING_TILE_POLICIES}, got "
            f"{tiles.missing_tiles!r}",
        ),
    ]
    checks += [
        (
            config.stitch.max_shift_px is None or config.stitch.max_shift_px > 0,
            f"stitch.max_shift_px must be > 0 or empty, got {config.stitch.max_shift_px}",
        ),
        (
            config.stitch.blend in BLEND_MODES,
            f"stitch.blend must be one of {BLEND_MODES}, got {config.stitch.blend!r}",
        ),
        (
            config.stitch.device in ("cpu", "gpu", "auto"),
            f"stitch.device must be cpu, gpu or auto, got {config.stitch.device!r}",
        ),
    ]
    cluster = config.cluster
    checks += [
        (
            cluster.n_workers is None or cluster.n_workers >= 1,
            f"cluster.n_workers (--workers) must be >= 1 or empty (sized from the "
            f"machine), got {cluster.n_workers}",
        ),
        (
            cluster.threads_per_worker >= 1,
            f"cluster.threads_per_worker must be >= 1, got {cluster.threads_per_worker}",
        ),
        (
            cluster.start_method in START_METHODS,
            f"cluster.start_method must be one of {', '.join(START_METHODS)}, got "
            f"{cluster.start_method!r}",
        ),
        (
            cluster.no_worker_timeout_s > 0 and cluster.stall_timeout_s > 0,
            "cluster.no_worker_timeout_s and cluster.stall_timeout_s must be > 0 s, got "
            f"{cluster.no_worker_timeout_s} and {cluster.stall_timeout_s}",
        ),
    ]
    return checks
