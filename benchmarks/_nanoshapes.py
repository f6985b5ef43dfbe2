"""NanoShapes (bright-field TEM nanocrystals, Roboflow export, CC BY 4.0) as a folder pair that
``mosaicflow train`` and ``mosaicflow.segmentation.evaluation.evaluate`` read, with a seeded
split of its unique source images into a fine-tuning pool, a validation image and a test set.

    from _nanoshapes import export
    info = export("work/nanoshapes", seed=0)

Source: ``../shared/data/real/tem_nanoshapes_coco/`` (README row in ``../shared/data/real/
README.md``): ``<split>/_annotations.coco.json`` and the JPEGs beside it, for every split
folder present (``train``, ``valid``, ``test``; the stored copy has ``train`` with 93 images
and ``test`` with 4). Every image is 416 px on its long side (a few are 414 or 415 px on the
other).

**One copy per source image.** File names are ``<source>_<ext>.rf.<hash>.jpg``; the source is
the part before ``_jpg.rf.`` / ``_png.rf.``: 35 sources (31 with three copies in ``train``, 4
with one copy in ``test``). Of the three copies of a training source only one is the source
image itself; the other two are Roboflow augmentations, and not only rotation, blur and salt-
and-pepper noise as the export's README says: they are *mosaics* of four crops, three of them
from other source images (test sources included). They are never used. The un-augmented copy
is the one without a mosaic seam: :func:`seam_score` is the largest fraction of a row (or a
column) boundary, 10 px or more from the image's edge, across which the 3x3-median-filtered
image steps by more than 12 grey levels; a mosaic's quadrant borders run straight across the
whole image and score 0.53-1.0, the 35 originals 0.19-0.46 (checked by eye on all 35 sources
of the stored copy; salt-and-pepper counts do not separate them, some mosaics have none). The
lowest score is taken; ``manifest.json`` keeps every copy's score and flags a source whose two
lowest scores are within 0.1 (``ambiguous``; none in the stored copy).

**Masks.** Every annotation of the chosen copy is a particle (category: Cube / Octahedron /
Sphere; category 0 is an unused super-category), rasterised from its COCO polygon(s) with
``skimage.draw.polygon`` at pixel centres (COCO vertex coordinates run from the pixel's corner,
so 0.5 is taken off each), numbered 1..n in the JSON's order into a uint16 instance map.
Overlapping polygons: **the later annotation wins** the shared pixels; the manifest counts the
pixels overwritten (``overlap_px``) and annotations left with no pixel (``hidden``). Images are
written as 8-bit grey PNG (the JPEG's three channels averaged and rounded), masks as 16-bit
PNG, both ``<source>.png``. An annotation more than 20 times the median area of its image's
annotations is the outline of a region, not a particle, and is left out (:func:`outliers`; one
in the stored copy, a 146x416 px band of background down the left of ``Picture_1``, that would
otherwise mark background as particle); its id is kept in the manifest (``dropped``).

**Split** (seeded, of the 35 sources, never one source in two sets): the sources are shuffled
with ``numpy.random.default_rng(seed)``; the first with at least ``min_val_particles``
particles is the one validation image (``validation.txt``; it drives early stopping and the
threshold sweep of every fine-tuning run, so runs with 1..n images are compared on the same
validation), the next ``pool`` sources in that order are the fine-tuning pool
(``finetune_pool.txt``, in draw order: the first n lines are the n-image training set, so the
sets are nested), the rest is the test set (``test.txt``, sorted). The unit is the source
image, not the specimen: names sharing a prefix (``LZCu52_0002``, ``LZCu52_0004``, ...) are
other micrographs of what is likely the same sample and may fall on both sides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1] / "shared" / "data" / "real" / "tem_nanoshapes_coco"
SPLITS = ("train", "valid", "test")
ANNOTATIONS = "_annotations.coco.json"
_RF = re.compile(r"_(?:jpe?g|png|tiff?|bmp)\.rf\.", re.IGNORECASE)
#: Grey-level step across a row/column boundary that counts towards a seam.
SEAM_STEP = 12
#: Rows/columns this close to the edge are left out of the seam search (frames, borders).
SEAM_MARGIN = 10
#: An annotation more than this many times its image's median annotation area is dropped.
OUTLIER_AREA = 20.0
#: Two copies' seam scores closer than this flag the source as ambiguous.
AMBIGUOUS = 0.1


@dataclass
class Copy:
    """One image file of the export and its annotations."""

    split: str
    file_name: str
    path: Path
    height: int
    width: int
    annotations: list[dict[str, Any]] = field(default_factory=list)


def source_stem(file_name: str) -> str:
    """The source image's name: the file name before ``_jpg.rf.`` / ``_png.rf.``."""
    parts = _RF.split(file_name, maxsplit=1)
    return parts[0] if len(parts) == 2 else Path(file_name).stem


def read_copies(root: str | Path = ROOT) -> dict[str, list[Copy]]:
    """Every copy of every source image, by source, over the split folders present.

    Raises
    ------
    FileNotFoundError
        No split folder with an annotation file under ``root``.
    """
    root = Path(root)
    found = [s for s in SPLITS if (root / s / ANNOTATIONS).is_file()]
    if not found:
        raise FileNotFoundError(f"NanoShapes: no {'/'.join(SPLITS)}/{ANNOTATIONS} under {root}")
    out: dict[str, list[Copy]] = {}
    for split in found:
        coco = json.loads((root / split / ANNOTATIONS).read_text())
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in coco["annotations"]:  # file order: the later annotation wins overlaps
            by_image.setdefault(ann["image_id"], []).append(ann)
        for im in coco["images"]:
            c = Copy(
                split,
                im["file_name"],
                root / split / im["file_name"],
                int(im["height"]),
                int(im["width"]),
                by_image.get(im["id"], []),
            )
            out.setdefault(source_stem(im["file_name"]), []).append(c)
    for copies in out.values():
        copies.sort(key=lambda c: (c.split, c.file_name))
    return dict(sorted(out.items()))


def read_grey_u8(path: str | Path) -> np.ndarray:
    """The image as 8-bit grey: colour channels averaged and rounded."""
    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        a = np.rint(a[..., :3].astype(np.float32).mean(axis=2))
    return np.clip(a, 0, 255).astype(np.uint8)


def seam_score(grey: np.ndarray) -> float:
    """The largest fraction of one row (or column) boundary across which the median-filtered
    image steps by more than :data:`SEAM_STEP`: near 1 for a Roboflow mosaic's quadrant
    border, below 0.5 for a single micrograph."""
    m = ndi.median_filter(np.asarray(grey), 3).astype(np.float32)
    best = 0.0
    for axis in (0, 1):
        steps = np.abs(np.diff(m, axis=axis)) > SEAM_STEP
        profile = steps.mean(axis=1 - axis)[SEAM_MARGIN:-SEAM_MARGIN]
        if profile.size:
            best = max(best, float(profile.max()))
    return best


def pick_original(copies: list[Copy]) -> tuple[Copy, list[float], bool]:
    """The un-augmented copy (lowest :func:`seam_score`), every copy's score, and whether the
    choice is ambiguous."""
    scores = [seam_score(read_grey_u8(c.path)) for c in copies]
    order = np.argsort(scores, kind="stable")
    ambiguous = len(copies) > 1 and scores[order[1]] - scores[order[0]] < AMBIGUOUS
    return copies[int(order[0])], scores, bool(ambiguous)


def _polygons(ann: dict[str, Any]) -> list[np.ndarray]:
    out = []
    for poly in ann["segmentation"]:
        xy = np.asarray(poly, np.float64).reshape(-1, 2)
        if len(xy) >= 3:
            out.append(xy)
    return out


def polygon_area(ann: dict[str, Any]) -> float:
    """The summed shoelace area of an annotation's polygons, px^2."""
    total = 0.0
    for xy in _polygons(ann):
        x, y = xy[:, 0], xy[:, 1]
        total += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return total


def outliers(annotations: list[dict[str, Any]], factor: float = OUTLIER_AREA) -> set[int]:
    """Indices of annotations more than ``factor`` times the median area of the image's
    annotations (images with at least 5): outlines of a region, not particles (one in the
    stored copy: the last annotation of ``Picture_1``, 60,840 px^2 against a median of 255, a
    146x416 px band of background and scale bar down the image's left side; every other
    annotation of the data set is within 8 times its image's median)."""
    if len(annotations) < 5:
        return set()
    areas = np.asarray([polygon_area(a) for a in annotations])
    limit = factor * float(np.median(areas))
    return {i for i, a in enumerate(areas) if a > limit}


def rasterise(annotations: list[dict[str, Any]], shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """A uint16 instance map of COCO polygon annotations, numbered 1..n in order (a number
    stays unused where a polygon covers no pixel centre); a later annotation overwrites an
    earlier one where they overlap; :func:`outliers` are left out.

    Returns
    -------
    labels : ndarray of uint16
    stats : dict
        ``particles`` (annotations drawn), ``dropped`` (ids of the outliers left out),
        ``overlap_px`` (pixels drawn more than once), ``hidden`` (drawn annotations with no
        pixel left), ``empty`` (annotations that cover no pixel centre at all),
        ``categories`` (annotations drawn per category id).

    Raises
    ------
    ValueError
        An RLE (crowd) annotation, or more than 65535 annotations.
    """
    from skimage.draw import polygon

    if len(annotations) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(annotations)} annotations do not fit a uint16 map")
    for ann in annotations:
        if not isinstance(ann.get("segmentation"), list):
            raise ValueError(f"annotation {ann.get('id')}: RLE segmentation is not supported")
    dropped = outliers(annotations)
    labels = np.zeros(shape, np.uint16)
    drawn = np.zeros(shape, np.uint8)
    empty = 0
    categories: dict[str, int] = {}
    k = 0
    for i, ann in enumerate(annotations):
        if i in dropped:
            continue
        k += 1
        cat = str(ann.get("category_id"))
        categories[cat] = categories.get(cat, 0) + 1
        mask = np.zeros(shape, bool)
        for xy in _polygons(ann):
            rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
            mask[rr, cc] = True
        if not mask.any():
            empty += 1
            continue
        labels[mask] = k
        drawn[mask] = np.minimum(drawn[mask].astype(np.int32) + 1, 255).astype(np.uint8)
    present = np.unique(labels[labels > 0])
    stats = {
        "particles": k,
        "dropped": [annotations[i].get("id") for i in sorted(dropped)],
        "overlap_px": int(np.count_nonzero(drawn > 1)),
        "hidden": k - empty - len(present),
        "empty": empty,
        "categories": categories,
    }
    return labels, stats


def _split(
    names: list[str], particles: dict[str, int], seed: int, pool: int, min_val_particles: int
) -> tuple[list[str], list[str], list[str]]:
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    val = next((n for n in order if particles[n] >= min_val_particles), order[0])
    rest = [n for n in order if n != val]
    if pool < 1 or pool > len(rest) - 1:
        raise ValueError(f"pool must be 1..{len(rest) - 1} (leaving a test set), got {pool}")
    return rest[:pool], [val], sorted(rest[pool:])


def export(
    out_dir: str | Path,
    seed: int = 0,
    *,
    root: str | Path = ROOT,
    pool: int = 11,
    min_val_particles: int = 30,
) -> dict[str, Any]:
    """Write one image and mask per NanoShapes source image and the split files.

    Parameters
    ----------
    out_dir : path
        Gets ``images/<source>.png`` (uint8 grey), ``masks/<source>.png`` (uint16 instances),
        ``finetune_pool.txt``, ``validation.txt``, ``test.txt`` and ``manifest.json``.
    seed : int
        Seeds the split.
    root : path
        The ``tem_nanoshapes_coco`` folder.
    pool : int
        Sources in the fine-tuning pool (11: training sets of up to 11 images).
    min_val_particles : int
        The validation image is the first source in the seeded order with this many particles.

    Returns
    -------
    dict
        ``out_dir``, ``images``, ``masks``, ``finetune_pool``, ``validation``, ``test`` (lists of
        names), ``sources`` (per source: the copy used, the seam scores of all its copies,
        ``ambiguous``, and the :func:`rasterise` stats), ``totals`` and the settings; also
        written as ``manifest.json``.
    """
    out = Path(out_dir)
    img_dir, mask_dir = out / "images", out / "masks"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    copies = read_copies(root)
    sources: dict[str, Any] = {}
    for name, cs in copies.items():
        chosen, scores, ambiguous = pick_original(cs)
        grey = read_grey_u8(chosen.path)
        if grey.shape != (chosen.height, chosen.width):
            raise ValueError(
                f"{chosen.path}: image {grey.shape} vs COCO {chosen.height}x{chosen.width}"
            )
        labels, stats = rasterise(chosen.annotations, grey.shape)
        Image.fromarray(grey).save(img_dir / f"{name}.png")
        Image.fromarray(labels).save(mask_dir / f"{name}.png")
        sources[name] = {
            "file": f"{chosen.split}/{chosen.file_name}",
            "shape": list(grey.shape),
            "copies": {
                f"{c.split}/{c.file_name}": round(s, 4) for c, s in zip(cs, scores, strict=True)
            },
            "ambiguous": ambiguous,
            **stats,
        }
    particles = {n: s["particles"] for n, s in sources.items()}
    train, val, test = _split(list(sources), particles, seed, pool, min_val_particles)
    for fname, names in (
        ("finetune_pool.txt", train),
        ("validation.txt", val),
        ("test.txt", test),
    ):
        (out / fname).write_text("".join(f"{n}\n" for n in names))
    info = {
        "root": str(Path(root)),
        "out_dir": str(out),
        "images": str(img_dir),
        "masks": str(mask_dir),
        "seed": seed,
        "pool": pool,
        "min_val_particles": min_val_particles,
        "finetune_pool": train,
        "validation": val,
        "test": test,
        "totals": {
            "sources": len(sources),
            "copies": sum(len(c) for c in copies.values()),
            "particles": sum(particles.values()),
            "test_particles": sum(particles[n] for n in test),
            "overlap_px": sum(s["overlap_px"] for s in sources.values()),
            "hidden": sum(s["hidden"] for s in sources.values()),
            "ambiguous": [n for n, s in sources.items() if s["ambiguous"]],
        },
        "sources": sources,
        "overlaps": "later annotation (JSON order) wins the shared pixels",
    }
    (out / "manifest.json").write_text(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="export NanoShapes as image/mask folders + split")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", type=Path, default=ROOT)
    p.add_argument("--pool", type=int, default=11)
    a = p.parse_args()
    i = export(a.out, a.seed, root=a.root, pool=a.pool)
    keys = ("finetune_pool", "validation", "test", "totals")
    print(json.dumps({k: i[k] for k in keys}, indent=1))
