"""Instance targets and their inverse: an instance map as the three classes a model learns
(background, interior, contact), and instances grown back from the two probabilities it
predicts.

The *contact* class marks the pixels of a particle that lie within ``contact_px`` of a pixel of
another particle, on both sides of the contact. A particle alone on its support has no contact
pixels at all, so however small it is its interior is its seed; two touching particles are
split by a band the model learns to see. Instances come back by a marker watershed: seeds are
the connected components of ``interior >= seed threshold`` and they grow over ``255 -
interior`` within the foreground (``1 - background >= foreground threshold``). Both
probabilities are taken as the pipeline stores them, ``uint8`` (``round(p * 255)``), so the
whole-image function here is the exact oracle of the chunked stage
(:mod:`mosaicflow.segmentation.instances`).

Pure NumPy/SciPy/scikit-image kernels: no Dask, no torch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Class indices of a three-class instance model (the order of its output channels).
BACKGROUND, INTERIOR, CONTACT = 0, 1, 2
CLASS_NAMES = ("background", "interior", "contact")
#: Half-width of the contact band, in pixels, on each side of a contact.
CONTACT_PX = 2
#: The widest rim :func:`instance_classes` marks as contact, in pixels.
MAX_RIM_PX = 8.0


def instance_classes(
    labels: np.ndarray,
    contact_px: int = CONTACT_PX,
    *,
    rim: float = 0.0,
    max_rim_px: float = MAX_RIM_PX,
) -> np.ndarray:
    """The class map of an instance map: 0 background, 1 interior, 2 contact.

    Parameters
    ----------
    labels : ndarray of int
        2-D instance map, 0 = background.
    contact_px : int
        A particle's pixel is *contact* when a pixel of another particle lies within this
        Chebyshev distance.
    rim : float, keyword-only
        Also *contact*: every particle's rim, the pixels whose Euclidean distance to the
        particle's own edge (:func:`edge_distance`) is below ``rim`` times the largest such
        distance in the particle, capped at ``max_rim_px``. 0 (no rim) leaves isolated
        particles wholly interior. With a rim, the interiors of small round particles packed
        edge to edge stay apart, where the contact band alone leaves them joined beside each
        point of contact.
    max_rim_px : float, keyword-only
        The widest rim, in pixels.

    Returns
    -------
    ndarray of uint8
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"instance_classes: expected a 2-D instance map, got shape {lab.shape}")
    if not 0 <= rim < 1:
        raise ValueError(f"instance_classes: rim must be in [0, 1), got {rim!r}")
    lab = lab.astype(np.int64, copy=False)
    size = 2 * int(contact_px) + 1
    # SciPy's rank filters pass through float64: a sentinel must stay exact there, so the
    # largest id + 1, not iinfo(int64).max (which comes back as int64 min).
    big = int(lab.max(initial=0)) + 1
    highest = ndi.maximum_filter(lab, size=size, mode="nearest")
    lowest = ndi.minimum_filter(np.where(lab > 0, lab, big), size=size, mode="nearest")
    fg = lab > 0
    contact = fg & ((highest != lab) | (lowest != lab))
    if rim > 0 and fg.any():
        dist = edge_distance(lab)[fg]
        _, which = np.unique(lab[fg], return_inverse=True)
        deepest = np.zeros(which.max() + 1)
        np.maximum.at(deepest, which, dist)
        width = np.minimum(rim * deepest, float(max_rim_px))[which]
        contact[fg] |= dist < width
    out = np.zeros(lab.shape, np.uint8)
    out[fg] = INTERIOR
    out[contact] = CONTACT
    return out


def edge_distance(labels: np.ndarray) -> np.ndarray:
    """Per particle pixel, the Euclidean distance to the particle's own edge: 0 on its edge
    pixels (those with a 4-neighbour of another id or background; the image border is not an
    edge), else the distance to the nearest pixel that is background or an edge pixel (of
    this particle, in practice: its edge lies in between). 0 on the background, and everywhere
    when one particle fills the image."""
    lab = np.asarray(labels)
    inside = lab > 0
    same_v = lab[1:] == lab[:-1]
    same_h = lab[:, 1:] == lab[:, :-1]
    inside[1:] &= same_v
    inside[:-1] &= same_v
    inside[:, 1:] &= same_h
    inside[:, :-1] &= same_h
    if inside.all():  # one particle fills the image: it has no edge, so no depth either
        return np.zeros(lab.shape)
    return ndi.distance_transform_edt(inside)


def to_u8(probability: np.ndarray) -> np.ndarray:
    """``round(p * 255)`` as uint8, as the pipeline stores a probability."""
    p = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)
    return np.rint(p * 255.0).astype(np.uint8)


def u8_threshold(threshold: float) -> int:
    """A probability threshold on the uint8 scale (at least 1, so 0 is never foreground)."""
    return max(1, round(float(threshold) * 255))


def seed_mask(interior_u8: np.ndarray, seed_threshold: float) -> np.ndarray:
    """Pixels whose interior probability reaches ``seed_threshold``."""
    return np.asarray(interior_u8) >= u8_threshold(seed_threshold)


def foreground_mask(
    foreground_u8: np.ndarray, seeds: np.ndarray, foreground_threshold: float
) -> np.ndarray:
    """Pixels a seed may grow over: foreground probability at the threshold, or a seed."""
    return (np.asarray(foreground_u8) >= u8_threshold(foreground_threshold)) | (seeds > 0)


def elevation(
    seeds: np.ndarray, interior_u8: np.ndarray, origin: tuple[int, int], width: int
) -> np.ndarray:
    """What :func:`grow` floods: ``255 - interior``, with each seed pixel lowered by 0.5 plus
    ``1e-12`` times its raster index in the whole image (``origin`` is the array's top-left
    pixel there, ``width`` the image's width).

    scikit-image queues every seed pixel with the same age, so seed pixels of equal level would
    leave the queue in an order that depends on everything else queued; the raster term makes
    that order the seeds' own (so a window's result equals the whole image's), and the 0.5
    keeps seeds ahead of the other pixels of their level, as the ages did.
    """
    elev = 255.0 - np.asarray(interior_u8, dtype=np.float64)
    ys, xs = np.nonzero(seeds)
    rank = (ys + int(origin[0])).astype(np.float64) * float(width) + (xs + int(origin[1]))
    elev[ys, xs] -= 0.5 - rank * 1e-12
    return elev


def grow(
    seeds: np.ndarray,
    interior_u8: np.ndarray,
    foreground: np.ndarray,
    connectivity: int = 2,
    *,
    origin: tuple[int, int] = (0, 0),
    width: int | None = None,
    min_seed_px: int = 0,
) -> np.ndarray:
    """Grow labelled seeds over :func:`elevation` within ``foreground`` (marker watershed).

    Within one connected component of ``foreground`` the result depends only on that
    component's pixels: flooding cannot cross the background, the other pixels' queue order is
    fixed by their levels and ages (given in the order they were queued), and the seeds' by
    their raster index. The chunked stage relies on this.

    Parameters
    ----------
    seeds : ndarray of uint32
        Labelled seeds (0 = none); every seed pixel must lie in ``foreground``.
    interior_u8 : ndarray of uint8
        Interior probability.
    foreground : ndarray of bool
    connectivity : int
        1 (4-neighbours) or 2 (8-neighbours), for the flooding.
    origin, width
        Where this array sits in the whole image (its top-left pixel) and the image's width:
        a window passes these so that its result equals the whole image's.
    min_seed_px : int
        Seeds of fewer pixels are dropped before growing (a speck of interior probability
        inside a particle would otherwise split it); their ids stay unused.

    Returns
    -------
    ndarray of uint32
        Seeds grown; foreground pixels that no seed reaches stay 0.
    """
    from skimage.segmentation import watershed

    if min_seed_px > 1 and seeds.any():
        ids, counts = np.unique(seeds[seeds > 0], return_counts=True)
        small = ids[counts < min_seed_px]
        if len(small):
            seeds = np.where(np.isin(seeds, small), 0, seeds)
    if not seeds.any():
        return np.zeros(seeds.shape, np.uint32)
    elev = elevation(seeds, interior_u8, origin, width if width is not None else seeds.shape[1])
    out = watershed(elev, markers=seeds, mask=foreground, connectivity=connectivity)
    return out.astype(np.uint32, copy=False)


def instances_from_probability(
    foreground_u8: np.ndarray,
    interior_u8: np.ndarray,
    *,
    foreground_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    connectivity: int = 2,
    min_seed_px: int = 0,
) -> np.ndarray:
    """Instance labels of a whole image from its stored probabilities (the oracle).

    Seeds are labelled by first raster pixel (``scipy.ndimage.label``, then ordered), as
    :func:`mosaicflow.measure.label` numbers them, and grown by :func:`grow`.

    Parameters
    ----------
    foreground_u8, interior_u8 : ndarray of uint8
        ``round(255 * (1 - p_background))`` and ``round(255 * p_interior)``.
    foreground_threshold, seed_threshold : float
        Probability thresholds in (0, 1].
    connectivity : int
        1 or 2, for seeds and flooding alike.
    min_seed_px : int
        Seeds smaller than this are dropped (see :func:`grow`).

    Returns
    -------
    ndarray of uint32
    """
    seeds_mask = seed_mask(interior_u8, seed_threshold)
    structure = ndi.generate_binary_structure(2, connectivity)
    seeds, _ = ndi.label(seeds_mask, structure=structure)
    seeds = seeds.astype(np.uint32)
    fg = foreground_mask(foreground_u8, seeds, foreground_threshold)
    return grow(seeds, interior_u8, fg, connectivity, min_seed_px=min_seed_px)


def probabilities_u8(softmax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(foreground_u8, interior_u8)`` from a ``(3, y, x)`` softmax output."""
    p = np.asarray(softmax, dtype=np.float32)
    return to_u8(1.0 - p[BACKGROUND]), to_u8(p[INTERIOR])
