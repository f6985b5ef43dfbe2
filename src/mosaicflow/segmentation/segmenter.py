"""Particles as instances from a grey image: ``segment(image, model="default")``.

With an instance model (the shipped ``"default"`` or a checkpoint written by ``mosaicflow
train``): the image is scaled by its own percentiles, as in training
(:mod:`mosaicflow.segmentation.scaling`); windowed inference (:func:`predict`) gives the
background / interior / contact probabilities, stored-scale as uint8; seeds are the connected
components of ``interior >= seed threshold``, numbered by first raster pixel, and they grow
within the foreground (:mod:`mosaicflow.segmentation.targets`). A chunked image is segmented
chunk by chunk, lazily, with the same result (seeds labelled across chunks by
:func:`mosaicflow.measure.label`, growth by
:func:`~mosaicflow.segmentation.instances.grow_chunked`).

With ``model="otsu"``: Gaussian smoothing, Otsu's threshold of the whole image, the minority
side as particles (or the polarity given), connected components: the threshold baseline.
"""

from __future__ import annotations

import math
import os
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage as ndi

from mosaicflow._shared.arrays import as_dask, check_2d, like_input
from mosaicflow.errors import CheckpointError, ConfigError
from mosaicflow.segmentation.instances import MAX_PARTICLE_PX, grow_chunked
from mosaicflow.segmentation.models import Checkpoint, load_checkpoint
from mosaicflow.segmentation.scaling import percentiles
from mosaicflow.segmentation.targets import (
    BACKGROUND,
    INTERIOR,
    instances_from_probability,
    probabilities_u8,
    u8_threshold,
)

POLARITIES = ("auto", "bright", "dark")


def load_model(model: str | os.PathLike[str] | Checkpoint = "default") -> Checkpoint:
    """The shipped default model (``"default"``) or a checkpoint file, loaded on the CPU.

    Returns
    -------
    Checkpoint
        ``.model`` (torch module, eval mode), ``.meta``, ``.path``, ``.threshold`` (foreground
        threshold) and ``.seed_threshold``; :func:`predict` and :func:`segment` accept it.

    Raises
    ------
    CheckpointError
        No such file, or one that is not a valid checkpoint.
    """
    if isinstance(model, Checkpoint):
        return model
    from mosaicflow.segmentation.default import resolve_model_path

    return load_checkpoint(resolve_model_path(model))


def input_scale(meta: Any) -> tuple[float, float]:
    """The percentiles an instance model's input is scaled by (from its checkpoint)."""
    spec = (meta.extra or {}).get("input", {})
    low, high = spec.get("percentiles", (0.5, 99.5))
    return float(low), float(high)


def model_probabilities(
    image: Any,
    model: Checkpoint,
    *,
    low: float,
    high: float,
    **predict_options: Any,
) -> tuple[da.Array, da.Array]:
    """Lazy ``(foreground_u8, interior_u8)`` of a chunked image scaled to ``[low, high]``."""
    from mosaicflow.segmentation.predict import predict

    data = as_dask(image)
    scaled = (data.astype(np.float32) - np.float32(low)) / np.float32(max(high - low, 1e-6))
    prob = predict(scaled, model.path, activation="softmax", **predict_options)
    fg = ((1.0 - prob[BACKGROUND]).clip(0, 1) * 255).round().astype(np.uint8)
    interior = (prob[INTERIOR].clip(0, 1) * 255).round().astype(np.uint8)
    return fg, interior


def _otsu_numpy(img: np.ndarray, sigma: float, polarity: str, nbins: int, structure: Any) -> Any:
    import skimage.filters

    smooth = ndi.gaussian_filter(img.astype(np.float32), sigma) if sigma > 0 else img
    t = float(skimage.filters.threshold_otsu(smooth, nbins=nbins))
    if polarity == "auto":
        polarity = "bright" if np.count_nonzero(smooth > t) < smooth.size / 2 else "dark"
    mask = smooth > t if polarity == "bright" else smooth < t
    return ndi.label(mask, structure=structure)[0].astype(np.uint32)


def _otsu_dask(data: da.Array, sigma: float, polarity: str, nbins: int, connectivity: int) -> Any:
    from mosaicflow.measure import label
    from mosaicflow.segmentation.threshold import histogram, minority_polarity, threshold_otsu

    smooth = data.astype(np.float32)
    if sigma > 0:
        depth = math.ceil(4 * sigma)
        smooth = smooth.map_overlap(
            ndi.gaussian_filter, depth=depth, boundary="reflect", sigma=sigma, dtype=np.float32
        )
    hist = histogram(smooth, nbins=nbins)
    t = threshold_otsu(nbins=nbins, hist=hist)
    if polarity == "auto":
        polarity = minority_polarity(*hist, t)
    mask = smooth > t if polarity == "bright" else smooth < t
    return label(mask, connectivity=connectivity)


def segment(
    image: Any,
    model: str | os.PathLike[str] | Checkpoint = "default",
    *,
    foreground_threshold: float | None = None,
    seed_threshold: float | None = None,
    min_seed_px: int | None = None,
    connectivity: int = 2,
    max_particle_px: int = MAX_PARTICLE_PX,
    window: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    runtime: str = "auto",
    tta: bool = False,
    sigma: float = 1.0,
    polarity: str = "auto",
    nbins: int = 256,
) -> Any:
    """Instance labels of a 2-D grey image: uint32, 0 = background, one id per particle.

    Parameters
    ----------
    image : numpy.ndarray, dask.array.Array or xarray.DataArray
        2-D, in its own dtype (uint8, uint16 or float). NumPy in gives NumPy out (computed in
        this process); a Dask array or DataArray gives the same kind, lazily (the scaling
        percentiles are computed at once), equal to the NumPy result for any chunking.
    model : "default", path, Checkpoint or "otsu"
        An instance model, or ``"otsu"`` for the threshold baseline.
    foreground_threshold, seed_threshold : float, optional
        Default: the checkpoint's (chosen on its validation images).
    min_seed_px : int, optional
        Seeds of fewer pixels are dropped; default: the checkpoint's.
    connectivity : {1, 2}
        Neighbourhood of seeds and growth (2: the 8 neighbours).
    max_particle_px : int
        Halo around each chunk of a chunked image: a particle or touching group reaching
        further than this beyond its chunk raises
        :class:`~mosaicflow.segmentation.instances.ParticleTooLarge`
        (the pipeline widens the window instead).
    window, overlap, batch_size, runtime
        Windowed inference (see :func:`predict`); the window defaults to the checkpoint's.
    tta : bool
        Test-time augmentation: each window's probabilities are the mean over the 8 flips and
        quarter turns of the square (:func:`predict`); 8x the inference time, a few points of
        instance F1 on real micrographs (the model card's figures).
    sigma, polarity, nbins
        ``model="otsu"`` only: Gaussian sigma in pixels (0: none), ``"auto"`` (the minority
        side of the threshold), ``"bright"`` or ``"dark"``, and the histogram's bins.

    Returns
    -------
    Same kind as ``image``
        uint32 instance labels.

    Raises
    ------
    ConfigError
        Invalid option or image.
    CheckpointError
        Missing checkpoint, or one that is not an instance model.
    """
    if connectivity not in (1, 2):
        raise ConfigError(f"segment: connectivity must be 1 or 2, got {connectivity!r}")
    if polarity not in POLARITIES:
        raise ConfigError(f"segment: polarity must be one of {POLARITIES}, got {polarity!r}")
    in_memory = isinstance(image, np.ndarray)
    if in_memory:
        check_2d(image, "segment")
    structure = ndi.generate_binary_structure(2, connectivity)
    if isinstance(model, str) and model == "otsu":
        if tta:
            raise ConfigError("segment: tta averages a model's windows; model='otsu' has none")
        if in_memory:
            return _otsu_numpy(image, float(sigma), polarity, nbins, structure)
        out = _otsu_dask(as_dask(image), float(sigma), polarity, nbins, connectivity)
        return _like(image, out)
    ckpt = load_model(model)
    if not ckpt.is_instance_model:
        raise CheckpointError(
            f"segment: {ckpt.path} is a {ckpt.meta.classes}-class {ckpt.meta.arch} model, not an "
            "instance model (background/interior/contact) written by mosaicflow train"
        )
    fg_t = ckpt.threshold if foreground_threshold is None else float(foreground_threshold)
    seed_t = ckpt.seed_threshold if seed_threshold is None else float(seed_threshold)
    for what, v in (("foreground_threshold", fg_t), ("seed_threshold", seed_t)):
        if v is None or not 0 < v <= 1:
            raise ConfigError(f"segment: {what} must be in (0, 1], got {v!r}")
    min_seed = ckpt.min_seed_px if min_seed_px is None else int(min_seed_px)
    options = {"window": window, "overlap": overlap, "batch_size": batch_size, "runtime": runtime}
    options["tta"] = bool(tta)
    options["pad_small"] = True
    if in_memory:
        with dask.config.set(scheduler="threads"):
            low, high = percentiles(image, input_scale(ckpt.meta))
            fg, interior = model_probabilities(
                da.from_array(image, chunks=-1), ckpt, low=low, high=high, **options
            )
            fg_np, int_np = dask.compute(fg, interior)
        return instances_from_probability(
            fg_np,
            int_np,
            foreground_threshold=fg_t,
            seed_threshold=seed_t,
            connectivity=connectivity,
            min_seed_px=min_seed,
        )
    from mosaicflow.measure import label

    data = as_dask(image)
    low, high = percentiles(data, input_scale(ckpt.meta))
    fg, interior = model_probabilities(data, ckpt, low=low, high=high, **options)
    seeds = label(interior >= u8_threshold(seed_t), connectivity=connectivity)
    out = grow_chunked(
        as_dask(seeds),
        interior,
        fg,
        foreground_threshold=fg_t,
        connectivity=connectivity,
        max_particle_px=max_particle_px,
        min_seed_px=min_seed,
    )
    return _like(image, out)


def _like(image: Any, out: da.Array) -> Any:
    if isinstance(image, xr.DataArray):
        return like_input(image, out, name="labels")
    return out


__all__ = ["load_model", "model_probabilities", "probabilities_u8", "segment"]
