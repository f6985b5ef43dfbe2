"""``mosaicflow evaluate``: score a segmenter (the default model, a checkpoint, the Otsu or the
Fourier baseline) on a folder of images with ground-truth masks or YOLO boxes."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mosaicflow.errors import ConfigError

JSON_NAME = "evaluation.json"
MARKDOWN_NAME = "evaluation.md"

#: Scores shown in the tables: key, heading, format.
COLUMNS = (
    ("true_particles", "true", "d"),
    ("predicted_particles", "found", "d"),
    ("matched", "matched", "d"),
    ("precision", "precision", ".3f"),
    ("recall", "recall", ".3f"),
    ("f1", "F1", ".3f"),
    ("mean_matched_iou", "mean IoU", ".3f"),
    ("pixel_dice", "pixel Dice", ".3f"),
    ("pixel_iou", "pixel IoU", ".3f"),
    ("median_ecd_ratio", "ECD ratio", ".3f"),
    ("size_distance", "size dist.", ".3f"),
    ("empty_boxes", "empty true boxes", "d"),
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "evaluate",
        help="score a segmenter on images with ground-truth masks or YOLO boxes",
        description=__doc__,
    )
    p.add_argument("images", help="folder of images (png, tif, jpg, bmp; RGB is averaged)")
    p.add_argument(
        "masks",
        help="folder of ground truth of the same file names: instance maps (0 = background), "
        "binary masks, or with --boxes YOLO box files <name>.txt",
    )
    p.add_argument(
        "--model",
        default="default",
        help="default (the shipped model), a checkpoint path, otsu or fourier (default: default)",
    )
    p.add_argument("--names", help="a file listing the image names to use, one per line")
    p.add_argument(
        "--boxes", action="store_true", help="score bounding boxes against YOLO box files"
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="instance models: average the 8 flips and quarter turns of each window (8x the "
        "inference time)",
    )
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--per-image", action="store_true", help="also print one row per image")
    p.add_argument(
        "--out",
        help=f"folder to write {JSON_NAME} and {MARKDOWN_NAME} into (made if missing; an "
        "existing folder must be empty or hold an earlier evaluation)",
    )
    p.set_defaults(func=main)
    return p


def check_out(out: str | Path) -> Path:
    """The ``--out`` folder, refused unless mosaicflow may write there.

    It may be missing, empty, or a folder holding an earlier ``evaluation.json`` of this
    command; anything else is somebody else's.

    Raises
    ------
    ConfigError
        ``out`` is a file, or a non-empty folder without an evaluation of this command.
    """
    from mosaicflow.segmentation.evaluation import FORMAT

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out: {folder} is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        marker = folder / JSON_NAME
        try:
            ours = json.loads(marker.read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ConfigError(
                f"--out: {folder} is not empty and holds no {JSON_NAME} written by mosaicflow "
                "evaluate; give a new or empty folder"
            )
    return folder


def main(args: argparse.Namespace, console: Console) -> int:
    """Run ``mosaicflow evaluate``: segment, score, print, and write the files.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``evaluate`` arguments.
    console : rich.console.Console
        Where the tables go.

    Returns
    -------
    int
        Exit status 0; errors raise ``ConfigError`` or ``CheckpointError``.
    """
    from mosaicflow.segmentation import datasets
    from mosaicflow.segmentation.evaluation import evaluate

    out = check_out(args.out) if args.out else None
    names = datasets.read_names(args.names) if args.names else None
    progress = Progress(
        TextColumn("segmenting"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.description}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("", total=None)

        def on_image(done: int, total: int, row: dict[str, Any]) -> None:
            progress.update(task, completed=done, total=total, description=row["name"])

        result = evaluate(
            args.images,
            args.masks,
            model=args.model,
            names=names,
            boxes=args.boxes,
            limit=args.limit,
            on_image=on_image,
            **({"tta": True} if args.tta else {}),
        )
    console.print(score_table(result))
    if args.per_image:
        console.print(image_table(result))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / JSON_NAME).write_text(json.dumps(_json_safe(result), indent=2) + "\n")
        (out / MARKDOWN_NAME).write_text(markdown(result))
        console.print(f"wrote {out / JSON_NAME} and {out / MARKDOWN_NAME}", soft_wrap=True)
    return 0


def _columns(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [c for c in COLUMNS if c[0] in result["scores"]]


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _title(result: dict[str, Any]) -> str:
    tta = " with TTA" if result.get("options", {}).get("tta") else ""
    return f"{result['model']}{tta}: {result['scores']['images']} image(s)"


def _caption(result: dict[str, Any]) -> str:
    return f"{'boxes' if result['boxes'] else 'instances'} matched at IoU >= 0.5"


def score_table(result: dict[str, Any]) -> Table:
    """The set's summed scores as a rich table (one row per score)."""
    table = Table(title=_title(result), caption=_caption(result), show_header=False, min_width=40)
    table.add_column("score")
    table.add_column("value", justify="right")
    for key, heading, spec in _columns(result):
        table.add_row(heading, _fmt(result["scores"][key], spec))
    table.add_row("seconds per image", _fmt(result["seconds_per_image"], ".2f"))
    return table


def image_table(result: dict[str, Any]) -> Table:
    """One row per image with its scores, as a rich table."""
    table = Table(title="each image", caption=_caption(result))
    table.add_column("image")
    cols = _columns(result)
    for _, heading, _ in cols:
        table.add_column(heading, justify="right")
    table.add_column("s", justify="right")
    for row in result["rows"]:
        cells = [_fmt(row[k], spec) for k, _, spec in cols]
        table.add_row(row["name"], *cells, _fmt(row["seconds"], ".2f"))
    return table


def markdown(result: dict[str, Any]) -> str:
    """The evaluation as a Markdown page: settings, summed scores, one row per image."""
    cols = _columns(result)
    truth = "YOLO boxes" if result["boxes"] else "masks"
    lines = [
        "# Segmentation evaluation",
        "",
        f"- model: `{result['model']}`",
        f"- images: `{result['images_folder']}`",
        f"- ground truth: `{result['masks_folder']}` ({truth})",
        "- matching: one-to-one at IoU >= 0.5; sums are micro-averages over the images",
        f"- seconds per image (segmentation): {_fmt(result['seconds_per_image'], '.2f')}",
        "",
        "## Scores over the set",
        "",
        "| score | value |",
        "|---|---:|",
        *(f"| {h} | {_fmt(result['scores'][k], s)} |" for k, h, s in cols),
        "",
        "## Per image",
        "",
        "| image | " + " | ".join(h for _, h, _ in cols) + " | s |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for row in result["rows"]:
        cells = " | ".join(_fmt(row[k], s) for k, _, s in cols)
        lines.append(f"| {row['name']} | {cells} | {_fmt(row['seconds'], '.2f')} |")
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN and infinities as ``null`` (JSON has neither), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


__all__ = ["add_parser", "check_out", "image_table", "main", "markdown", "score_table"]
