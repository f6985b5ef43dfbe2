"""``mosaicflow synth``: a synthetic Maps-like tile grid with exact ground truth.

``--mode sem`` (the default) writes SEM/HAADF particles; ``--mode hrtem`` writes bright-field
HRTEM particles with lattice fringes in five classes. Options shared by both modes whose default
depends on the mode (``--pixel-size``, ``--snr``) are resolved here, once.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from rich.console import Console

from mosaicflow.errors import ConfigError

MODES = ("sem", "hrtem")
_HRTEM_ONLY = ("n_particles", "density", "class_weights")


def mode_defaults(mode: str) -> dict[str, float]:
    """Defaults of the options whose value depends on the mode (from where each mode keeps them)."""
    if mode == "sem":
        from mosaicflow.config import SynthConfig

        sem = SynthConfig()
        return {"pixel_size": sem.pixel_size_nm, "snr": sem.snr}
    from mosaicflow.synth import hrtem_model  # the defaults alone, not the HRTEM renderer

    return {"pixel_size": hrtem_model.DEFAULT_PIXEL_SIZE_NM, "snr": hrtem_model.DEFAULT_SNR}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand to an ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "synth", help="write a synthetic Maps-like tile grid with ground truth"
    )
    p.add_argument("out", help="output folder")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="sem",
        help="sem: SEM/STEM particles (default); hrtem: bright-field HRTEM particles with "
        "lattice fringes in five classes, ground truth with a class column",
    )
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=5)
    p.add_argument("--tile-height", type=int, default=900)
    p.add_argument("--tile-width", type=int, default=1400)
    p.add_argument("--overlap", type=float, default=0.10)
    p.add_argument("--stage-error", type=float, default=8.0, help="stage position error sigma, px")
    p.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        help=_mode_help("nm per pixel", "pixel_size"),
    )
    p.add_argument(
        "--snr",
        type=float,
        default=None,
        help=_mode_help("mean particle signal / noise std", "snr"),
    )
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8)
    p.add_argument("--seed", type=int, default=0)
    group = p.add_argument_group("HRTEM mode (--mode hrtem)")
    group.add_argument(
        "--n-particles", type=int, default=None, help="number of objects (default: --density)"
    )
    group.add_argument(
        "--density",
        type=float,
        default=None,
        help="objects per square micrometre (default 4000, one per 250 nm^2)",
    )
    group.add_argument(
        "--class-weights",
        default=None,
        metavar="CLASS=W,...",
        help="relative class frequencies, e.g. 'crystalline=2,empty=0.5' (classes not named "
        "get 0; default: all five classes equally)",
    )
    p.set_defaults(func=run)
    return p


def _mode_help(text: str, dest: str) -> str:
    sem, hrtem = mode_defaults("sem")[dest], mode_defaults("hrtem")[dest]
    return f"{text} (default {sem:g} for sem, {hrtem:g} for hrtem)"


def parse_class_weights(text: str) -> dict[str, float]:
    """Parse ``'crystalline=2,empty=0.5'`` into a mapping, naming the bad item on error."""
    from mosaicflow.synth.hrtem import CLASSES

    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name not in CLASSES:
            raise ConfigError(
                f"--class-weights: bad item {item.strip()!r}; expected CLASS=WEIGHT with CLASS "
                f"one of {', '.join(CLASSES)}"
            )
        try:
            weights[name] = float(value)
        except ValueError:
            raise ConfigError(
                f"--class-weights: weight {value!r} of {name!r} is not a number"
            ) from None
    return weights


def run(args: argparse.Namespace, console: Console) -> int:
    """Handle ``mosaicflow synth`` in either mode; returns the exit status."""
    for dest, default in mode_defaults(args.mode).items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    if args.mode == "sem":
        given = [f"--{d.replace('_', '-')}" for d in _HRTEM_ONLY if getattr(args, d) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to --mode hrtem only")
        return _sem(args, console)
    return _hrtem(args, console)


def _grid_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options both modes pass to their grid writer, by the writers' names."""
    return {
        "rows": args.rows,
        "cols": args.cols,
        "overlap": args.overlap,
        "stage_error_px": args.stage_error,
        "pixel_size_nm": args.pixel_size,
        "snr": args.snr,
        "bit_depth": args.bit_depth,
        "seed": args.seed,
    }


def _sem(args: argparse.Namespace, console: Console) -> int:
    from mosaicflow.config import Config, SynthConfig
    from mosaicflow.synth.default import synthesize

    settings = SynthConfig(
        tile_height=args.tile_height, tile_width=args.tile_width, **_grid_options(args)
    )
    Config(synth=settings)  # validates the settings
    truth = synthesize(args.out, settings)
    console.print(f"Wrote a {args.rows}x{args.cols} tile grid with ground truth to {args.out}")
    console.print(
        f"{truth.n_particles} particles, mosaic {truth.mosaic_shape[1]}x{truth.mosaic_shape[0]} px"
    )
    return 0


def _hrtem(args: argparse.Namespace, console: Console) -> int:
    import pandas as pd

    from mosaicflow.synth.hrtem import write_hrtem_grid

    options: dict[str, Any] = {}
    if args.n_particles is not None:
        options["n_particles"] = args.n_particles
    if args.density is not None:
        options["density"] = args.density
    if args.class_weights:
        options["class_weights"] = parse_class_weights(args.class_weights)
    truth = write_hrtem_grid(
        args.out, tile_shape=(args.tile_height, args.tile_width), **_grid_options(args), **options
    )
    counts = Counter(pd.read_csv(truth.particles_csv)["class"])
    console.print(
        f"Wrote a {args.rows}x{args.cols} HRTEM tile grid with ground truth to {args.out}"
    )
    console.print(
        f"{truth.n_particles} objects ("
        + ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
        + f"), mosaic {truth.mosaic_shape[1]}x{truth.mosaic_shape[0]} px "
        f"at {args.pixel_size} nm/px"
    )
    return 0
