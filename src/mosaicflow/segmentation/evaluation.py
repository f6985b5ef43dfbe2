"""Scoring a segmenter on a labelled folder pair: each image segmented whole and compared with
its instance mask (or its YOLO boxes), per image and summed over the set.

The segmenter is the shipped model, a checkpoint, the Otsu baseline of
:func:`mosaicflow.segmentation.segment`, the Fourier baseline of
:func:`mosaicflow.segmentation.baselines.fourier_instances`, or any callable returning instance
labels. Scores are those of :mod:`mosaicflow.segmentation.metrics`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mosaicflow.errors import ConfigError
from mosaicflow.segmentation import datasets, metrics
from mosaicflow.segmentation.baselines import fourier_instances
from mosaicflow.segmentation.default import resolve_model_path
from mosaicflow.segmentation.models import Checkpoint
from mosaicflow.segmentation.segmenter import load_model, segment

#: Model names that are not checkpoint paths.
MODEL_NAMES = ("default", "otsu", "fourier")
#: Suffixes that make a model string a checkpoint path even when no such file exists.
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
#: Scores that boxes cannot give (no pixels, no sizes); left out of a box evaluation.
PIXEL_SCORES = (
    "pixel_dice",
    "pixel_iou",
    "pixel_precision",
    "pixel_recall",
    "median_ecd_ratio",
    "size_distance",
)
FORMAT = "mosaicflow-evaluation/1"

Segmenter = Callable[..., np.ndarray]
OnImage = Callable[[int, int, dict[str, Any]], None]


def evaluate(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | Checkpoint | Segmenter = "default",
    names: Sequence[str] | None = None,
    boxes: bool = False,
    limit: int | None = None,
    on_image: OnImage | None = None,
    **segment_options: Any,
) -> dict[str, Any]:
    """Segment every image of a folder pair and score it against its ground truth.

    Parameters
    ----------
    images : path
        Folder of images (PNG, TIFF, JPEG, BMP; colour is averaged to grey).
    masks : path
        Folder of ground truth with the same file names (without suffix): instance maps
        (0 = background) or binary masks, whose connected components are the particles; with
        ``boxes=True``, YOLO box files ``<name>.txt`` (lines ``class cx cy w h``, normalised to
        the image's width and height).
    model : {"default", "otsu", "fourier"}, path, Checkpoint or callable
        ``"default"``: the shipped model; a path or a loaded
        :class:`~mosaicflow.segmentation.models.Checkpoint`: an instance model; ``"otsu"``:
        the threshold baseline (all three by :func:`mosaicflow.segmentation.segment`);
        ``"fourier"``: :func:`~mosaicflow.segmentation.baselines.fourier_instances`; a
        callable: ``model(image, **segment_options)`` returning a 2-D integer label image of
        the image's shape.
    names : sequence of str, optional
        Only these names (file names without suffix), in this order.
    boxes : bool
        Score boxes: each predicted particle's bounding box against the true boxes
        (:func:`~mosaicflow.segmentation.metrics.box_tally`); pixel and size scores are left out,
        and true boxes of zero width or height are left out and counted (``empty_boxes``).
    limit : int, optional
        Only the first ``limit`` images (by name, or in the order of ``names``).
    on_image : callable, optional
        Called as ``on_image(done, total, row)`` after each image (a progress bar).
    **segment_options
        Passed to the segmenter.

    Returns
    -------
    dict
        ``format``, ``model`` (what segmented), ``images_folder``, ``masks_folder``, ``boxes``,
        ``options``; ``scores``: the scores summed over the set
        (:meth:`~mosaicflow.segmentation.metrics.Tally.scores`, micro-averaged);
        ``seconds_per_image`` (segmentation only, mean), ``seconds`` (the whole evaluation);
        ``rows``: one dict per image with ``name``, ``image``, ``truth``, ``height``, ``width``,
        ``seconds`` and that image's scores.

    Raises
    ------
    ConfigError
        A folder missing or empty, images and ground truth whose names do not pair (as
        :func:`~mosaicflow.segmentation.datasets.pair_paths`), a mask of another size than its
        image (both named), a malformed box line (file and line number), an unknown model name,
        a ``limit`` below 1, a segmenter returning labels of the wrong shape.
    CheckpointError
        ``model`` names a checkpoint file that does not exist or is not an instance model (or
        the shipped weights are missing).

    Examples
    --------
    >>> result = evaluate("emps/images", "emps/segmaps", model="otsu")  # doctest: +SKIP
    >>> result["scores"]["f1"]  # doctest: +SKIP
    """
    started = time.perf_counter()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit must be a positive integer, got {limit!r}")
    pairs = box_paths(images, masks, names) if boxes else datasets.pair_paths(images, masks, names)
    if limit is not None:
        pairs = pairs[:limit]
    true_boxes = _preflight(pairs, boxes)
    segmenter, described = resolve_segmenter(model, segment_options)  # loads a checkpoint
    total_tally = metrics.Tally()
    rows: list[dict[str, Any]] = []
    seconds = 0.0
    empty_boxes = 0
    for i, (name, image_path, truth_path) in enumerate(pairs):
        image = datasets.read_grey(image_path)
        t0 = time.perf_counter()
        labels = _check_labels(segmenter(image), image.shape, image_path, described)
        dt = time.perf_counter() - t0
        extra: dict[str, int] = {}
        if boxes:
            kept = true_boxes[i][_areas(true_boxes[i]) > 0]
            extra["empty_boxes"] = len(true_boxes[i]) - len(kept)
            empty_boxes += extra["empty_boxes"]
            one = metrics.box_tally(kept, metrics.label_boxes(labels))
        else:
            one = metrics.tally(read_mask(truth_path, image_path, image.shape), labels)
        total_tally = total_tally + one
        seconds += dt
        row = {
            "name": name,
            "image": str(image_path),
            "truth": str(truth_path),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "seconds": dt,
            **_scores(one, boxes),
            **extra,
        }
        rows.append(row)
        if on_image is not None:
            on_image(i + 1, len(pairs), row)
    return {
        "format": FORMAT,
        "model": described,
        "images_folder": str(images),
        "masks_folder": str(masks),
        "boxes": bool(boxes),
        "options": dict(segment_options),
        "scores": {
            **_scores(total_tally, boxes),
            **({"empty_boxes": empty_boxes} if boxes else {}),
        },
        "seconds_per_image": seconds / len(rows) if rows else math.nan,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }


def resolve_segmenter(
    model: str | os.PathLike[str] | Checkpoint | Segmenter, options: dict[str, Any]
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The function that segments one image for ``model``, and how to name it in a report.

    A checkpoint's existence is checked here, before any image is read.

    Raises
    ------
    ConfigError
        ``model`` is a word that is neither a model name nor a file.
    CheckpointError
        ``model`` names a checkpoint file that does not exist or cannot be read.
    """
    if callable(model):
        name = getattr(model, "__name__", type(model).__name__)
        return (lambda image: model(image, **options)), f"callable {name}"
    if isinstance(model, Checkpoint):
        _check_options(segment, options, str(model.path))
        return (lambda image: segment(image, model, **options)), str(model.path)
    if not isinstance(model, str | os.PathLike):
        raise ConfigError(
            f"--model must be one of {', '.join(MODEL_NAMES)}, a checkpoint path or a callable, "
            f"got {model!r}"
        )
    if model == "fourier":
        _check_options(fourier_instances, options, "fourier")
        return (lambda image: fourier_instances(image, **options)), "fourier"
    _check_options(segment, options, str(model))
    if model == "otsu":
        return (lambda image: segment(image, model="otsu", **options)), "otsu"
    path = Path(model).expanduser()
    looks_like_path = (
        isinstance(model, os.PathLike)
        or os.sep in str(model)
        or (os.altsep is not None and os.altsep in str(model))
        or path.suffix.lower() in CHECKPOINT_SUFFIXES
        or path.exists()
    )
    if model != "default" and not looks_like_path:
        raise ConfigError(
            f"--model: unknown model {str(model)!r}; expected one of "
            f"{', '.join(MODEL_NAMES)} or a checkpoint file"
        )
    resolve_model_path(model, what="--model")  # names the option and the path if missing
    checkpoint = load_model(model)  # once, not per image
    return (lambda image: segment(image, checkpoint, **options)), str(model)


def box_paths(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    names: Sequence[str] | None = None,
) -> list[tuple[str, Path, Path]]:
    """``(name, image path, box file)`` for every image with a ``<name>.txt`` box file.

    Raises
    ------
    ConfigError
        As :func:`~mosaicflow.segmentation.datasets.pair_paths`, for box files.
    """
    return datasets.pair_paths(images, masks, names, truth="box file", truth_suffixes=(".txt",))


def read_mask(
    path: str | os.PathLike[str], image_path: str | os.PathLike[str], shape: tuple[int, ...]
) -> np.ndarray:
    """The instance map of a mask file (binary masks become their connected components).

    Raises
    ------
    ConfigError
        The mask's size differs from its image's (both files named).
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        raw = np.asarray(tifffile.imread(path))
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        raw = datasets.read_grey(path)  # lossy: only binary masks survive JPEG, read as grey
    else:
        from PIL import Image

        with Image.open(path) as im:
            raw = np.asarray(im)
    labels = datasets.as_instances(raw)
    if labels.shape != tuple(shape):
        raise ConfigError(
            f"mask {path} is {labels.shape[0]}x{labels.shape[1]} px but its image {image_path} "
            f"is {shape[0]}x{shape[1]} px"
        )
    return labels


def read_yolo_boxes(path: str | os.PathLike[str], shape: tuple[int, ...]) -> np.ndarray:
    """Boxes ``(y0, x0, y1, x1)`` in pixels (end exclusive) of a YOLO box file.

    Parameters
    ----------
    path : path
        Lines ``class cx cy w h``: centre, width and height as fractions of the image's width
        and height; blank lines are skipped.
    shape : tuple of int
        The image's ``(height, width)``.

    Returns
    -------
    ndarray of float64, shape ``(n, 4)``

    Raises
    ------
    ConfigError
        A line without exactly five numbers, or with a centre, width or height outside [0, 1]
        (file and line number named).

    Notes
    -----
    A box of zero width or height is returned as it is; :func:`evaluate` leaves such boxes out
    (a box without area can match nothing) and counts them as ``empty_boxes``.
    """
    path = Path(path)
    height, width = shape[:2]
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(fields) != 5 or len(values) != 5 or not all(map(math.isfinite, values)):
            raise ConfigError(
                f"box file {path}, line {number}: expected 'class cx cy w h' (five numbers), "
                f"got {line.strip()!r}"
            )
        _, cx, cy, w, h = values
        if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 <= w <= 1 and 0 <= h <= 1):
            raise ConfigError(
                f"box file {path}, line {number}: centre and size must be fractions of the "
                f"image (cx, cy, w, h in [0, 1]), got {line.strip()!r}"
            )
        rows.append(
            (
                (cy - h / 2) * height,
                (cx - w / 2) * width,
                (cy + h / 2) * height,
                (cx + w / 2) * width,
            )
        )
    return np.asarray(rows, np.float64).reshape(-1, 4)


def yolo_lines(labels: np.ndarray, cls: int = 0) -> list[str]:
    """YOLO box lines ``class cx cy w h`` of each instance of ``labels`` (the inverse of
    :func:`read_yolo_boxes` on :func:`~mosaicflow.segmentation.metrics.label_boxes`)."""
    height, width = np.asarray(labels).shape
    out = []
    for y0, x0, y1, x1 in metrics.label_boxes(labels):
        out.append(
            f"{cls} {(x0 + x1) / 2 / width:.8f} {(y0 + y1) / 2 / height:.8f} "
            f"{(x1 - x0) / width:.8f} {(y1 - y0) / height:.8f}"
        )
    return out


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image or mask file from its header, without decoding it."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return int(page.imagelength), int(page.imagewidth)
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
    return int(height), int(width)


def _preflight(pairs: list[tuple[str, Path, Path]], boxes: bool) -> list[np.ndarray]:
    """Every ground-truth file checked before anything is segmented: each mask's size against
    its image's (headers only), or each box file parsed (returned, in pixels; otherwise the
    list is empty)."""
    out: list[np.ndarray] = []
    for _, image_path, truth_path in pairs:
        shape = image_size(image_path)
        if boxes:
            out.append(read_yolo_boxes(truth_path, shape))
            continue
        mask_shape = image_size(truth_path)
        if mask_shape != shape:
            raise ConfigError(
                f"mask {truth_path} is {mask_shape[0]}x{mask_shape[1]} px but its image "
                f"{image_path} is {shape[0]}x{shape[1]} px"
            )
    return out


def _check_options(func: Callable[..., Any], options: dict[str, Any], model: str) -> None:
    """Refuse options the segmenter does not take, naming them and the ones it does."""
    import inspect

    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"model {model!r} takes no option(s) {unknown}; its options are {known}")


def _check_labels(
    labels: Any, shape: tuple[int, ...], image_path: Path, described: str
) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != tuple(shape):
        raise ConfigError(
            f"model {described} returned labels of shape {lab.shape} for {image_path} "
            f"({shape[0]}x{shape[1]} px)"
        )
    if not np.issubdtype(lab.dtype, np.integer):
        raise ConfigError(
            f"model {described} returned {lab.dtype} labels for {image_path}; expected integers"
        )
    return lab


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _scores(one: metrics.Tally, boxes: bool) -> dict[str, float | int]:
    scores = one.scores()
    if boxes:
        scores = {k: v for k, v in scores.items() if k not in PIXEL_SCORES}
    return scores


__all__ = [
    "FORMAT",
    "MODEL_NAMES",
    "box_paths",
    "evaluate",
    "read_mask",
    "read_yolo_boxes",
    "resolve_segmenter",
    "yolo_lines",
]
