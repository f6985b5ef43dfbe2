"""Particle-table rows for hand-picked crops, measured by the pipeline's own code.

Training examples often come as crops (a particle cut out of an image, with its mask) or as
annotated images (one label image per micrograph). Measuring them with
:func:`mosaicflow.measure.regionprops_table`, the function that makes the pipeline's table,
guarantees that a classifier is trained on exactly the features it will later read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError


def features_from_crops(
    images: Sequence[Any],
    masks: Sequence[Any],
    *,
    spacing: float | Sequence[float] | None = None,
) -> pd.DataFrame:
    """One particle-table row per particle of each crop.

    Parameters
    ----------
    images : sequence of 2-D arrays
        Intensity of each crop (any real dtype; greyscale).
    masks : sequence of 2-D arrays, same shapes
        Boolean: one particle per crop (its pixels, connected or not). Integer: a label
        image, 0 = background, one particle per positive value (e.g. every annotated
        particle of a whole micrograph, which keeps neighbours and background in context).
    spacing : float or (float, float), optional, keyword-only
        Pixel size (nm per pixel); lengths are in nm and areas in nm^2 when given, else px.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`mosaicflow.measure.regionprops_table`, plus ``crop`` (the
        index of the crop in ``images``), first. ``label`` is the particle's value in its
        mask (1 for boolean masks). Rows are ordered by crop, then label.

    Raises
    ------
    ConfigError
        Different numbers of images and masks, shapes that differ, an image that is not 2-D,
        a mask with no particle, or a negative label.

    Notes
    -----
    Particles cut by the crop's border are measured as they are (``touches_edge`` is true):
    their outline features describe the cut, so crop generously.
    """
    from mosaicflow.measure import regionprops_table

    if len(images) != len(masks):
        raise ConfigError(f"features_from_crops: {len(images)} images but {len(masks)} masks")
    tables = []
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        image = np.asarray(image)
        mask = np.asarray(mask)
        if image.ndim != 2:
            raise ConfigError(
                f"features_from_crops: crop {i}: image must be 2-D (greyscale), got shape "
                f"{image.shape}"
            )
        if mask.shape != image.shape:
            raise ConfigError(
                f"features_from_crops: crop {i}: mask shape {mask.shape} != image shape "
                f"{image.shape}"
            )
        if mask.dtype == bool:
            label_image = mask.astype(np.uint32)
        elif np.issubdtype(mask.dtype, np.integer):
            if mask.size and mask.min() < 0:
                raise ConfigError(f"features_from_crops: crop {i}: negative label values")
            label_image = mask.astype(np.uint32)
        else:
            raise ConfigError(
                f"features_from_crops: crop {i}: mask must be boolean or integer labels, got "
                f"{mask.dtype}"
            )
        if not label_image.any():
            raise ConfigError(f"features_from_crops: crop {i}: the mask holds no particle")
        table = regionprops_table(label_image, image, spacing=spacing)
        if not isinstance(table, pd.DataFrame):  # a lazy table (Delayed / Dask DataFrame)
            table = table.compute()
        table.insert(0, "crop", np.full(len(table), i, dtype=np.int64))
        tables.append(table)
    if not tables:
        raise ConfigError("features_from_crops: no crops given")
    return pd.concat(tables, ignore_index=True)


__all__ = ["features_from_crops"]
