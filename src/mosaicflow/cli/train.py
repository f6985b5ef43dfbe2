"""``mosaicflow train``: train (or fine-tune) a three-class instance model from image/mask
folders and synthetic fields, or cross-validate the recipe with ``--folds K``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from mosaicflow.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune an instance segmentation model (background/interior/contact)",
        description=__doc__,
    )
    p.add_argument("--images", help="folder of images (png, tif, jpg, bmp; RGB is averaged)")
    p.add_argument(
        "--masks",
        help="folder of masks of the same file names: instance maps (0 = background) or binary",
    )
    p.add_argument("--names", help="a file listing the image names to use, one per line")
    p.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="add N synthetic SEM fields (touching pairs, agglomerates, SNR inf/15/7.5)",
    )
    p.add_argument(
        "--rafts",
        type=float,
        default=0.0,
        metavar="F",
        help="share of the synthetic fields that are dense monolayers of touching spheres (0)",
    )
    p.add_argument(
        "--supported",
        type=float,
        default=0.0,
        metavar="F",
        help="share of the synthetic fields that are small particles on a catalyst's grainy "
        "support, only the particles labelled (0)",
    )
    p.add_argument("--out", default="model.safetensors", help="checkpoint to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.add_argument("--init", help="start from these weights: 'default' or a checkpoint")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share (0.1)")
    p.add_argument("--epochs", type=int, default=60, help="most epochs (60)")
    p.add_argument("--steps-per-epoch", type=int, default=50, help="batches per epoch (50)")
    p.add_argument("--batch", type=int, default=8, help="crops per batch (8)")
    p.add_argument("--crop", type=int, default=256, help="crop side in px, a multiple of 32")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (2e-3)")
    p.add_argument("--patience", type=int, default=10, help="epochs without improvement (10)")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="stop before an epoch that would end past this many minutes (judged by the slowest "
        "epoch so far; the threshold sweep follows)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the split, crops and weights")
    p.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(0.3, 1.5),
        metavar=("LOW", "HIGH"),
        help="scale jitter of the crops (0.3 1.5: a crop sees 0.67x to 3.3x its side)",
    )
    p.add_argument(
        "--invert",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of inverting a crop's contrast (0: the data's own polarities)",
    )
    p.add_argument(
        "--select",
        choices=("points", "fixed"),
        default="points",
        help="rank epochs by validation F1 at the best of six operating points (points, the "
        "default) or at foreground 0.5 / seed 0.5 / no smallest seed (fixed: how the shipped "
        "model was trained)",
    )
    p.add_argument(
        "--rim",
        type=float,
        default=0.0,
        metavar="F",
        help="also teach each particle's rim as contact, F (0 to <1) of its inscribed radius "
        "and at most 8 px, to keep packed small particles apart (default 0: contact only "
        "where particles touch)",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--arch", default="unet", choices=["unet", "fpn"])
    p.add_argument("--encoder", default="resnet18", help="smp encoder, no hub weights")
    p.add_argument("--folds", type=int, help="cross-validate the recipe with K folds instead")
    p.add_argument(
        "--fold",
        type=int,
        action="append",
        metavar="N",
        help="with --folds: run only fold N (repeatable), to spread the folds over processes",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="train on cpu, cuda or cuda:N (default auto: the GPU where torch sees one)",
    )
    p.add_argument(
        "--loaders",
        type=int,
        default=0,
        metavar="N",
        help="draw the crops in N worker processes (default 0: in the training process); "
        "a GPU outpaces one core. The model then depends on the seed, not on N",
    )
    p.add_argument(
        "--retune",
        action="store_true",
        help="with --init: no training; sweep the thresholds again on this run's validation "
        "images and write --out",
    )
    p.add_argument("--report", help="write the run's record (history or folds) as JSON here")
    p.set_defaults(func=main)
    return p


def _settings(args: argparse.Namespace) -> Any:
    from mosaicflow.segmentation.train import TrainSettings, training_device

    s = TrainSettings(
        arch=args.arch,
        encoder=args.encoder,
        crop=args.crop,
        batch=args.batch,
        lr=args.lr,
        max_epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        patience=args.patience,
        max_minutes=args.max_minutes,
        seed=args.seed,
        threads=args.threads,
        scale=tuple(args.scale),
        invert=args.invert,
        rim=args.rim,
        select=args.select,
        device=args.device,
        loaders=args.loaders,
    )
    s.check()
    training_device(s.device)  # a CUDA device that is not there is refused before any work
    return s


def _check_out(args: argparse.Namespace) -> Path:
    from mosaicflow.segmentation.models import read_checkpoint_metadata

    out = Path(args.out)
    if not out.parent.is_dir():
        raise ConfigError(f"--out: the folder {out.parent} does not exist")
    if out.exists():
        if not args.overwrite:
            raise ConfigError(f"--out: {out} exists; pass --overwrite to replace it")
        read_checkpoint_metadata(out)  # only a mosaicflow checkpoint is ever replaced
    return out


def _warn_if_validation_seen(
    init: str, names: list[str], val_names: list[str], console: Console
) -> None:
    """Warn when ``--init`` was validated on other images of this same set: then some of this
    run's validation images were its training images, and the figures are not held out."""
    from mosaicflow.segmentation.default import resolve_model_path
    from mosaicflow.segmentation.models import read_checkpoint_metadata

    meta = read_checkpoint_metadata(resolve_model_path(init, what="--init"))
    training = meta.extra.get("training", {})
    kept_out = set(training.get("data", {}).get("validation", []))
    if not kept_out or not kept_out <= set(names) or kept_out == set(val_names):
        return
    seed = training.get("settings", {}).get("seed")
    console.print(
        f"[yellow]warning:[/] --init {init} was validated on {len(kept_out)} other images of "
        f"this set, so {len(set(val_names) - kept_out)} of this run's {len(val_names)} "
        "validation images were its training images: the validation figures are not held out"
        + (f" (its split: --seed {seed} and the same --val-fraction)" if seed is not None else ""),
        soft_wrap=True,
    )


def main(args: argparse.Namespace, console: Console) -> int:
    """Run ``mosaicflow train``; returns the exit status."""
    from mosaicflow.segmentation import datasets
    from mosaicflow.segmentation.folds import cross_validate, split
    from mosaicflow.segmentation.train import retune, train

    settings = _settings(args)
    if args.fold and not args.folds:
        raise ConfigError("--fold picks folds of --folds K, which is not given")
    if args.fold and not all(1 <= f <= args.folds for f in args.fold):
        raise ConfigError(f"--fold: fold numbers go from 1 to {args.folds}, got {args.fold}")
    if (args.images is None) != (args.masks is None):
        raise ConfigError("--images and --masks go together")
    if args.names is not None and args.images is None:
        raise ConfigError("--names: it selects among the --images, which are not given")
    if args.images is None and args.synthetic <= 0:
        raise ConfigError("nothing to train on: give --images and --masks, or --synthetic N")
    if args.init is not None:
        from mosaicflow.segmentation.default import resolve_model_path

        resolve_model_path(args.init, what="--init")
    out = None if args.folds else _check_out(args)
    names = datasets.read_names(args.names) if args.names else None
    # the synthetic fields first: their options are checked before any image is read
    synth = (
        datasets.synthetic_samples(
            args.synthetic, seed=args.seed, rafts=args.rafts, supported=args.supported
        )
        if args.synthetic
        else []
    )
    real = datasets.load_pairs(args.images, args.masks, names) if args.images else []
    console.print(f"training data: {len(real)} labelled image(s), {len(synth)} synthetic field(s)")
    record: dict[str, Any] = {"command": "mosaicflow train", "settings": vars(args).copy()}
    record["settings"].pop("func", None)
    started = time.perf_counter()

    def show_epoch(r: dict[str, Any]) -> None:
        mark = " *" if r.get("best") else ""
        console.print(
            f"epoch {r['epoch']:3d}  loss {r['loss']:.4f}  val F1 {r['val_f1']:.3f}  "
            f"val Dice {r['val_dice']:.3f}  {r['seconds']:.0f} s{mark}"
        )

    if args.retune:
        if args.init is None:
            raise ConfigError("--retune needs --init (the checkpoint to retune)")
        _, va = split(real or synth, args.val_fraction, args.seed)
        result = retune(args.init, va, out)
        v = result.validation
        console.print(
            f"retuned on {len(va)} validation image(s): foreground {result.foreground_threshold}"
            f", seed {result.seed_threshold}, smallest seed {result.min_seed_px} px; F1 "
            f"{v['f1']:.3f}, Dice {v['pixel_dice']:.3f}; wrote {result.path}",
            soft_wrap=True,
        )
        record.update(validation=v, checkpoint=str(result.path))
    elif args.folds:
        result = cross_validate(
            real or synth,
            args.folds,
            settings,
            val_fraction=args.val_fraction,
            extra_train=synth if real else (),
            init=args.init,
            only=args.fold,
            on_epoch=show_epoch,
            on_fold=lambda k, r: console.print(
                f"fold {k}: F1 {r['f1']:.3f}  P {r['precision']:.3f}  R {r['recall']:.3f}  "
                f"Dice {r['pixel_dice']:.3f}  ({r['images']} images)"
            ),
        )
        for key, v in result["summary"].items():
            console.print(f"{key}: {v['mean']:.3f} +- {v['std']:.3f}")
        record.update(result)
    else:
        pool = real or synth
        tr, va = split(pool, args.val_fraction, args.seed)
        if args.init is not None:
            seen = [s.name for s in pool], [s.name for s in va]
            _warn_if_validation_seen(args.init, *seen, console)
        if real:
            tr = tr + synth
        progress = Progress(
            TextColumn("epoch steps"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        with progress:
            task = progress.add_task("steps", total=settings.steps_per_epoch)

            def on_step(i: int, n: int) -> None:
                progress.update(task, completed=i % n)

            def on_epoch(r: dict[str, Any]) -> None:
                progress.console.print(
                    f"epoch {r['epoch']:3d}  loss {r['loss']:.4f}  val F1 {r['val_f1']:.3f}  "
                    f"val Dice {r['val_dice']:.3f}  {r['seconds']:.0f} s"
                    + (" *" if r.get("best") else "")
                )

            result = train(
                tr,
                va,
                settings,
                out,
                init=args.init,
                on_epoch=on_epoch,
                on_step=on_step,
                provenance={
                    "data": {
                        "real": len(real),
                        "synthetic": len(synth),
                        "validation": [s.name for s in va],
                    }
                },
            )
        v = result.validation
        console.print(
            f"best epoch {result.best_epoch} of {result.epochs}; thresholds foreground "
            f"{result.foreground_threshold}, seed {result.seed_threshold}, smallest seed "
            f"{result.min_seed_px} px; validation F1 "
            f"{v['f1']:.3f}, Dice {v['pixel_dice']:.3f}; wrote {result.path}",
            soft_wrap=True,
        )
        record.update(
            best_epoch=result.best_epoch,
            history=result.history,
            validation=v,
            foreground_threshold=result.foreground_threshold,
            seed_threshold=result.seed_threshold,
            checkpoint=str(result.path),
        )
    record["seconds"] = round(time.perf_counter() - started, 1)
    if args.report:
        Path(args.report).write_text(json.dumps(record, indent=2, default=str))
    return 0
