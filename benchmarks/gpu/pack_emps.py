"""The EMPS training split in a form that fits a GPU node's calls, and back.

    python benchmarks/gpu/pack_emps.py pack [--data DIR] OUT1 OUT2     # here
    python3 benchmarks/gpu/pack_emps.py unpack SRC DST                 # on the node, per half

``pack`` writes the images of ``train.csv`` (RGB PNGs whose three channels are equal, 86 MB as
stored) as lossless one-channel WebP, alternately into ``OUT1/images`` and ``OUT2/images``
(25 and 28 MB with the masks), and the masks and ``train.csv`` into ``OUT2``. Each image is
read back and compared with the original's pixels before the next. The folders must not exist
yet (nothing is overwritten). ``unpack`` turns one half back into one-channel PNGs under
``DST/images`` (``mosaicflow.segmentation.datasets.read_grey`` reads the same pixels as from
the originals) and copies its masks and ``train.csv``. How the halves travel:
``benchmarks/gpu/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent.parent / "shared" / "data" / "real" / "emps_particles"


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise SystemExit(f"{path}: the colour channels differ; this packer keeps one")
        a = a[..., 0]
    return np.ascontiguousarray(a)


def _pack_one(job: tuple[Path, Path]) -> int:
    src, dest = job
    grey = _grey(src)
    Image.fromarray(grey).save(dest, "WEBP", lossless=True, quality=100, method=4)
    if not np.array_equal(_grey(dest), grey):
        raise SystemExit(f"{dest}: does not read back to the pixels of {src}")
    return dest.stat().st_size


def pack(data: Path, halves: tuple[Path, Path]) -> None:
    from mosaicflow.segmentation import datasets

    for h in halves:
        if h.exists():
            raise SystemExit(f"{h} exists: give new folders")
    names = datasets.read_names(data / "train.csv")
    pairs = datasets.pair_paths(data / "images", data / "segmaps", names)
    for h in halves:
        (h / "images").mkdir(parents=True)
    (halves[1] / "segmaps").mkdir()
    jobs = []
    for k, (stem, image, mask) in enumerate(pairs):
        jobs.append((image, halves[k % 2] / "images" / f"{stem}.webp"))
        shutil.copy(mask, halves[1] / "segmaps" / mask.name)
    shutil.copy(data / "train.csv", halves[1] / "train.csv")
    with ProcessPoolExecutor() as ex:
        size = sum(ex.map(_pack_one, jobs, chunksize=4))
    print(f"packed {len(jobs)} images ({size / 1e6:.1f} MB of WebP) into {halves[0]}, {halves[1]}")


def _unpack_one(job: tuple[Path, Path]) -> int:
    src, dest = job
    Image.fromarray(_grey(src)).save(dest, compress_level=1)
    return 1


def unpack(src: Path, dst: Path) -> None:
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "segmaps").mkdir(exist_ok=True)
    jobs = [(p, dst / "images" / f"{p.stem}.png") for p in sorted((src / "images").glob("*.webp"))]
    with ProcessPoolExecutor() as ex:
        n = sum(ex.map(_unpack_one, jobs, chunksize=4))
    if (src / "segmaps").is_dir():
        for m in (src / "segmaps").iterdir():
            shutil.copy(m, dst / "segmaps" / m.name)
    if (src / "train.csv").is_file():
        shutil.copy(src / "train.csv", dst / "train.csv")
    print(f"unpacked {n} images from {src} into {dst}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--data", type=Path, default=REAL, help="the EMPS folder")
    a.add_argument("out", type=Path, nargs=2)
    b = sub.add_parser("unpack")
    b.add_argument("src", type=Path)
    b.add_argument("dst", type=Path)
    args = p.parse_args(argv)
    if args.verb == "pack":
        pack(args.data, tuple(args.out))
    else:
        unpack(args.src, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
