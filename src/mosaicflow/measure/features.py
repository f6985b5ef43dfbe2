"""Per-particle Fourier features (Groschner et al. 2021), the kernel the particle table calls.

A particle crop is the intensity image over the particle's bounding box. Its pixels outside the
particle are set to the particle's mean intensity, so the mask outline adds little to the
spectrum; the crop is zero-mean, zero-padded to a square of side ``n`` and transformed. The
radially integrated amplitude spectrum ``P(k)`` (one value per integer radius ``k = 0 .. n//2``,
mean of ``|F|`` over the ring, summed with ``np.bincount``) gives three features:

* ``fft_mean``, ``fft_std``: mean and standard deviation of ``P`` over ``k = 1 .. n//2``,
  divided by the number of particle pixels (so that they do not grow with the crop);
* ``fft_com``: centre of mass of ``P`` over ``k = 1 .. n//2``, as a spatial frequency in cycles
  per pixel (``k / n``); lattice fringes pull it towards the fringe frequency.

and the real-space pair ``real_mean``, ``real_std`` (mean and standard deviation of the
intensity over the particle's pixels). Radial integration forgets direction, so these features
cannot tell a particle from its mirror image; the table's ``moments_hu-6`` (Hu's seventh
invariant, which changes sign under reflection) is the mirror-sensitive feature.

The particle table stores the three Fourier columns (:data:`FOURIER_COLUMNS`) only: the
real-space pair is the table's ``intensity_mean`` / ``intensity_std`` of the same image, and
the classifier derives ``real_mean`` / ``real_std`` from those
(``mosaicflow.classify.model.DERIVED_FEATURES``).

Units: ``fft_mean`` and ``fft_std`` are grey levels (a DFT amplitude sums grey levels over the
crop's pixels; it is divided by the number of particle pixels), ``fft_com`` is cycles per pixel
whatever the pixel size.
"""

from __future__ import annotations

import functools

import numpy as np

from mosaicflow.errors import ConfigError

#: The Fourier features the particle table stores.
FOURIER_COLUMNS: tuple[str, ...] = ("fft_mean", "fft_std", "fft_com")
#: Groschner et al.'s real-space pair: the table's ``intensity_mean`` / ``intensity_std``.
REAL_SPACE_FEATURES: tuple[str, ...] = ("real_mean", "real_std")
#: Pixels of the padded squares transformed together (complex128: 16 bytes each).
_BATCH_PIXELS = 1 << 21
#: Groschner et al.'s five features, as :func:`fourier_features` returns them.
GROSCHNER_FEATURES: tuple[str, ...] = (*FOURIER_COLUMNS, *REAL_SPACE_FEATURES)


def radial_profile(image: np.ndarray) -> np.ndarray:
    """Mean of ``image`` over rings of integer radius around ``(h // 2, w // 2)``.

    ``np.bincount`` over the rounded radius of every pixel: one pass, no Python loop.
    Returns ``profile[k]`` for ``k = 0 .. max radius``.
    """
    r = _rings(*image.shape).ravel()
    total = np.bincount(r, weights=image.ravel().astype(np.float64))
    count = np.bincount(r)
    return total / np.maximum(count, 1)


def fourier_features(
    crop: np.ndarray, mask: np.ndarray
) -> tuple[float, float, float, float, float]:
    """Groschner et al.'s five features of one particle: see the module docstring.

    Parameters
    ----------
    crop : ndarray, 2-D
        Intensities over the particle's bounding box.
    mask : ndarray of bool, same shape
        The particle's pixels.

    Returns
    -------
    tuple of float
        ``(fft_mean, fft_std, fft_com, real_mean, real_std)`` (:data:`GROSCHNER_FEATURES`);
        all NaN for an empty mask.

    Raises
    ------
    ConfigError
        ``crop`` is not 2-D or differs in shape from ``mask``.
    """
    crop = np.asarray(crop, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if crop.shape != mask.shape or crop.ndim != 2:
        raise ConfigError(f"fourier_features: crop {crop.shape} and mask {mask.shape} differ")
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        nan = float("nan")
        return (nan, nan, nan, nan, nan)
    values = crop[ys, xs]
    mean = float(values.mean())
    std = float(values.std())
    pid = np.zeros(ys.size, dtype=np.int64)
    fft = fourier_table(pid, ys, xs, values, np.array([max(crop.shape)]), np.array([mean]))
    return (*(float(v) for v in fft[0]), mean, std)


def fourier_table(
    pid: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    values: np.ndarray,
    side: np.ndarray,
    mean: np.ndarray,
) -> np.ndarray:
    """The three Fourier features (:data:`FOURIER_COLUMNS`) of many particles at once.

    Particles whose padded squares have the same side are transformed together, each square
    holding its particle's pixels less its mean intensity and zeros elsewhere.

    Parameters
    ----------
    pid : ndarray of int
        Each pixel's particle, ``0 .. n-1``.
    ys, xs : ndarray of int
        Each pixel's row and column within its particle's bounding box.
    values : ndarray
        Each pixel's intensity.
    side : ndarray of int
        Each particle's square side: the larger side of its bounding box.
    mean : ndarray of float
        Each particle's mean intensity.

    Returns
    -------
    ndarray, shape (n, 3)
    """
    n = len(side)
    out = np.zeros((n, len(FOURIER_COLUMNS)))
    count = np.bincount(pid, minlength=n).astype(np.float64)
    # particles by side, then in batches whose squares hold at most _BATCH_PIXELS pixels
    by_side = np.argsort(side, kind="stable")
    batch = np.zeros(n, dtype=np.int64)
    sizes, sides, first = [], [], 0
    for s, m in zip(*np.unique(side[by_side], return_counts=True), strict=True):
        per = max(1, _BATCH_PIXELS // int(s) ** 2)
        for i in range(0, int(m), per):
            batch[by_side[first + i : first + min(int(m), i + per)]] = len(sizes)
            sizes.append(min(int(m), i + per) - i)
            sides.append(int(s))
        first += int(m)
    # each particle's slot in its batch, and the pixels grouped by batch
    slot = np.empty(n, dtype=np.int64)
    slot[by_side] = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    order = np.argsort(batch[pid], kind="stable")
    bounds = np.searchsorted(batch[pid][order], np.arange(len(sizes) + 1))
    for b, s in enumerate(sides):
        sel = order[bounds[b] : bounds[b + 1]]
        members = by_side[np.cumsum(sizes)[b] - sizes[b] : np.cumsum(sizes)[b]]
        padded = np.zeros((len(members), s, s))
        padded[slot[pid[sel]], ys[sel], xs[sel]] = values[sel] - mean[pid[sel]]
        amplitude = np.abs(np.fft.fftshift(np.fft.fft2(padded), axes=(1, 2)))
        ring, per_ring = _square_rings(s)
        nbins = len(per_ring)
        total = np.bincount(
            (np.arange(len(members))[:, None] * nbins + ring[None, :]).ravel(),
            weights=amplitude.reshape(len(members), -1).ravel(),
            minlength=len(members) * nbins,
        ).reshape(len(members), nbins)
        profile = (total / per_ring)[:, 1 : s // 2 + 1]
        if profile.shape[1] == 0:
            continue  # a 1 px square has no ring beyond the centre: all three are 0
        freq = np.arange(1, profile.shape[1] + 1) / s
        pixels = count[members]
        summed = profile.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            com = np.where(summed > 0, (freq * profile).sum(axis=1) / summed, 0.0)
        out[members, 0] = profile.mean(axis=1) / pixels
        out[members, 1] = profile.std(axis=1) / pixels
        out[members, 2] = com
    return out


@functools.lru_cache(maxsize=512)
def _square_rings(side: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_rings` of a square, flattened, and the pixels of each ring (at least 1)."""
    ring = _rings(side, side).ravel()
    per_ring = np.maximum(np.bincount(ring), 1)
    ring.setflags(write=False)  # shared by every call
    per_ring.setflags(write=False)
    return ring, per_ring


def _rings(h: int, w: int) -> np.ndarray:
    """Each pixel's rounded radius from ``(h // 2, w // 2)`` in an image of ``h x w``."""
    yy, xx = np.indices((h, w))
    return np.rint(np.hypot(yy - h // 2, xx - w // 2)).astype(np.intp)


__all__ = [
    "FOURIER_COLUMNS",
    "GROSCHNER_FEATURES",
    "REAL_SPACE_FEATURES",
    "fourier_features",
    "fourier_table",
    "radial_profile",
]
