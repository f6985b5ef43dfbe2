"""Training data for instance models: image/mask pairs from folders, synthetic fields, and the
random crops and augmentations a training batch is drawn with.

Images are read as grey (an RGB figure panel is averaged over its channels), any integer or
float dtype, and scaled by their own percentiles (:func:`normalise`), as
:func:`mosaicflow.segmentation.segment` scales an image before inference. Masks are instance maps
(0 = background; the EMPS ``segmaps`` layout) or binary masks, whose connected components become
the instances. Targets are the three classes of :mod:`mosaicflow.segmentation.targets`.

NumPy/SciPy/Pillow/tifffile only; torch stays in :mod:`mosaicflow.segmentation.train`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from mosaicflow.errors import ConfigError
from mosaicflow.segmentation.targets import instance_classes

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: Percentiles an image is scaled by: these map to 0 and 1.
PERCENTILES = (0.5, 99.5)


@dataclass
class Sample:
    """One training image (normalised float32) with its instance map."""

    name: str
    image: np.ndarray
    labels: np.ndarray


def read_grey(path: str | os.PathLike[str]) -> np.ndarray:
    """A 2-D grey image from a file: RGB(A) averaged over the colour channels, dtype kept for
    grey files (float32 for colour)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = np.asarray(tifffile.imread(path))
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float32).mean(axis=-1)
    if arr.ndim != 2:
        raise ConfigError(f"{path}: expected a 2-D grey or RGB image, got shape {arr.shape}")
    return arr


def normalise(image: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """``(image - low) / (high - low)`` as float32; ``low``/``high`` default to the image's own
    :data:`PERCENTILES`."""
    img = np.asarray(image, dtype=np.float32)
    if low is None or high is None:
        low, high = (float(v) for v in np.percentile(img, PERCENTILES))
    return (img - low) / max(high - low, 1e-6)


def as_instances(mask: np.ndarray) -> np.ndarray:
    """An instance map from a mask file's array: an instance map stays as it is; a binary mask
    (two values) becomes its 8-connected components."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    values = np.unique(m)
    if len(values) <= 2:
        lab, _ = ndi.label(m > values.min() if len(values) == 2 else m > 0, np.ones((3, 3)))
        return lab.astype(np.uint32)
    return m.astype(np.uint32)


def _stems(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    return {
        p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes
    }


def pair_paths(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    truth: str = "mask",
    truth_suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
) -> list[tuple[str, Path, Path]]:
    """``(stem, image path, mask path)`` for every image with a mask of the same stem.

    Parameters
    ----------
    images, masks : path
        Folders; files are paired by name without suffix.
    names : sequence of str, optional
        Only these stems (e.g. the lines of EMPS ``train.csv``).
    truth, truth_suffixes
        What the second folder holds, for the messages (``"mask"``, ``"box file"``), and the
        suffixes of its files.

    Raises
    ------
    ConfigError
        A folder missing or empty, images without masks or masks without images (named),
        ``names`` not all present.
    """
    img_dir, mask_dir = Path(images), Path(masks)
    for what, folder in (("images", img_dir), ("masks", mask_dir)):
        if not folder.is_dir():
            raise ConfigError(f"--{what}: {folder} is not a folder")
    imgs, msks = _stems(img_dir), _stems(mask_dir, truth_suffixes)
    if not imgs:
        raise ConfigError(f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    if not msks:
        raise ConfigError(
            f"--masks: no {truth} files in {mask_dir}: the {truth.split()[0]} set is empty"
        )
    wanted = list(names) if names is not None else sorted(imgs)
    missing_img = [n for n in wanted if n not in imgs]
    if missing_img:
        raise ConfigError(
            f"{len(missing_img)} listed name(s) have no image in {img_dir}: {missing_img[:5]}"
        )
    no_mask = [n for n in wanted if n not in msks]
    if no_mask:
        raise ConfigError(
            f"{len(no_mask)} image(s) in {img_dir} have no {truth} of the same name in "
            f"{mask_dir}: {no_mask[:5]}; {truth}s are paired with images by file name without "
            "suffix"
        )
    if names is None:
        orphans = sorted(set(msks) - set(imgs))
        if orphans:
            raise ConfigError(
                f"{len(orphans)} {truth}(s) in {mask_dir} have no image in {img_dir}: {orphans[:5]}"
            )
    return [(n, imgs[n], msks[n]) for n in wanted]


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """Stems listed one per line (a header-less CSV such as EMPS ``train.csv``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--names: {p} is not a file")
    return [ln.split(",")[0].strip() for ln in p.read_text().splitlines() if ln.strip()]


def load_pairs(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    names: Sequence[str] | None = None,
) -> list[Sample]:
    """Read every pair of :func:`pair_paths`: normalised image and instance map.

    Raises
    ------
    ConfigError
        As :func:`pair_paths`; a mask whose shape differs from its image (both named).
    """
    out = []
    for stem, ip, mp in pair_paths(images, masks, names):
        img = read_grey(ip)
        if mp.suffix.lower() in (".jpg", ".jpeg"):
            # JPEG is lossy: only a binary mask survives it, and only once thresholded half-way
            grey = read_grey(mp)
            lab = as_instances(grey > (float(grey.min()) + float(grey.max())) / 2)
        else:
            lab = as_instances(_raw(mp))
        if lab.shape != img.shape:
            raise ConfigError(
                f"mask {mp} is {lab.shape[0]}x{lab.shape[1]} px but its image {ip} is "
                f"{img.shape[0]}x{img.shape[1]} px"
            )
        out.append(Sample(stem, normalise(img), lab))
    return out


def _raw(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def synthetic_samples(
    n: int, *, size: int = 384, seed: int = 0, rafts: float = 0.0, supported: float = 0.0
) -> list[Sample]:
    """``n`` synthetic SEM fields (:func:`mosaicflow.synth.synth_field`) with many touching
    pairs and agglomerates, pixel sizes 1-8 nm, SNR inf / 15 / 7.5, either polarity.

    A share ``rafts`` of them (drawn per field, from a stream of its own, so the other fields
    are those of ``rafts=0``) are dense monolayers of near-equal spheres touching at points
    (:func:`mosaicflow.synth.sem_rafts.make_raft`), 8-40 px across. A share ``supported``
    (again a stream of its own) are particles 3-40 px across on the grainy support of a
    catalyst (:func:`mosaicflow.synth.supported.supported_field`), only the particles labelled;
    a field is a raft or supported, never both (the raft draw comes first).
    """
    from mosaicflow.synth.sem import synth_field
    from mosaicflow.synth.sem_rafts import make_raft
    from mosaicflow.synth.supported import supported_field

    if not 0.0 <= rafts <= 1.0:
        raise ConfigError(f"--rafts (the share of raft fields) must be in [0, 1], got {rafts}")
    if not 0.0 <= supported <= 1.0:
        raise ConfigError(
            "--supported (the share of supported-catalyst fields) must be in [0, 1], "
            f"got {supported}"
        )
    if rafts + supported > 1.0:
        raise ConfigError(f"--rafts {rafts} and --supported {supported} add up to more than 1")
    rng = np.random.default_rng(seed)
    raft_rng = np.random.default_rng([seed, 1])
    supported_rng = np.random.default_rng([seed, 2])
    out = []
    for i in range(n):
        snr = [None, 15.0, 7.5][i % 3]
        px = float(rng.choice([1.0, 2.0, 4.0, 8.0]))
        field_seed = int(rng.integers(2**31))
        density = float(rng.uniform(5, 25)) * (2.0 / px) ** 2
        raft = raft_rng.uniform() < rafts
        # drawn for every field, so the rafts and plain fields are those of supported=0
        on_support = supported_rng.uniform() < supported / max(1e-12, 1.0 - rafts)
        if raft:
            catalogue = make_raft((size, size), seed=field_seed)
            img, lab, _ = synth_field((size, size), snr=snr, seed=field_seed, particles=catalogue)
        elif on_support:
            img, lab = supported_field((size, size), seed=field_seed, snr=snr)
        else:
            img, lab, _ = synth_field(
                (size, size),
                snr=snr,
                seed=field_seed,
                pixel_size_nm=px,
                touching_fraction=0.3,
                agglomerate_fraction=0.05,
                density=density,
            )
        image = normalise(img)
        if i % 2:
            image = 1.0 - image
        out.append(Sample(f"synth-{i:04d}", image, lab.astype(np.uint32)))
    return out


def random_crop(
    sample: Sample,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.5, 2.0),
    invert: float = 0.5,
    rim: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop at a random scale with random rot90/flip, intensity, gamma,
    contrast inversion (probability ``invert``), blur and noise; returns ``(image float32,
    classes uint8)``, the classes of the crop at its own scale (``rim``: see
    :func:`~mosaicflow.segmentation.targets.instance_classes`).

    There is no gain/offset jitter: images are scaled by their own percentiles in training and
    inference alike, which removes a gain and an offset exactly (and such jitter on top of the
    noise kept the model at chance on EMPS in 100-step trials)."""
    s = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
    src = max(8, round(size / s))
    img, lab = sample.image, sample.labels
    h, w = img.shape
    if h < src or w < src:
        ph, pw = max(0, src - h), max(0, src - w)
        img = np.pad(img, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
        lab = np.pad(lab, ((0, ph), (0, pw)), mode="constant")
        h, w = img.shape
    y = int(rng.integers(0, h - src + 1))
    x = int(rng.integers(0, w - src + 1))
    ci = img[y : y + src, x : x + src]
    cl = lab[y : y + src, x : x + src]
    if src != size:
        f = size / src
        ci = ndi.zoom(ci, f, order=1, grid_mode=True, mode="nearest")[:size, :size]
        cl = ndi.zoom(cl, f, order=0, grid_mode=True, mode="nearest")[:size, :size]
    k = int(rng.integers(4))
    ci, cl = np.rot90(ci, k), np.rot90(cl, k)
    if rng.random() < 0.5:
        ci, cl = ci[:, ::-1], cl[:, ::-1]
    ci = np.ascontiguousarray(ci, dtype=np.float32)
    classes = instance_classes(np.ascontiguousarray(cl), rim=rim)
    # intensity: contrast inversion, gamma, blur, noise
    if rng.random() < invert:
        ci = 1.0 - ci
    if rng.random() < 0.5:
        g = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        ci = np.clip(ci, 0, None) ** g
    if rng.random() < 0.3:
        ci = ndi.gaussian_filter(ci, float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.3:
        ci = ci + rng.normal(0, float(rng.uniform(0.01, 0.06)), ci.shape).astype(np.float32)
    return ci.astype(np.float32), classes
