"""``mosaicflow synth --mode hrtem``: the HRTEM options of the ``synth`` subcommand.

:func:`add_arguments` extends the existing ``synth`` subparser and makes :func:`run` its
handler; ``--mode sem`` (the default) is handed back to the subparser's previous handler with
the SEM defaults, so the SEM path is unchanged.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from rich.console import Console

from mosaicflow.errors import ConfigError

MODES = ("sem", "hrtem")
# Options shared with the SEM mode whose default depends on the mode.
HRTEM_DEFAULTS: dict[str, Any] = {"pixel_size": 0.05, "snr": 3.0}
# HRTEM-only options (None = not given).
_HRTEM_ONLY = ("n_particles", "density", "class_weights")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--mode {sem,hrtem}`` and the HRTEM options to the ``synth`` subparser.

    Call it after the subparser's own ``set_defaults(func=...)``: that handler is kept for
    ``--mode sem``, and :func:`run` becomes the subparser's handler.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``synth`` subparser, with its ``--pixel-size`` and ``--snr`` options.
    """
    sem_defaults = {dest: parser.get_default(dest) for dest in HRTEM_DEFAULTS}
    missing = [dest for dest, value in sem_defaults.items() if value is None]
    if missing:
        raise ConfigError(f"synth subparser lacks the options {missing} that --mode hrtem shares")
    parser.set_defaults(
        func=run,
        sem_func=parser.get_default("func"),
        sem_defaults=sem_defaults,
        **dict.fromkeys(HRTEM_DEFAULTS),
    )
    for action in parser._actions:
        if action.dest in HRTEM_DEFAULTS:
            action.help = (
                f"{action.help or action.dest} (default {sem_defaults[action.dest]} for sem, "
                f"{HRTEM_DEFAULTS[action.dest]} for hrtem)"
            )
    group = parser.add_argument_group("HRTEM mode (--mode hrtem)")
    group.add_argument(
        "--mode",
        choices=MODES,
        default="sem",
        help="sem: SEM/STEM particles (default); hrtem: bright-field HRTEM particles with "
        "lattice fringes in five classes, ground truth with a class column",
    )
    group.add_argument(
        "--n-particles",
        type=int,
        default=None,
        help="hrtem: number of objects (default: from --density)",
    )
    group.add_argument(
        "--density",
        type=float,
        default=None,
        help="hrtem: objects per square micrometre (default 4000, one per 250 nm^2)",
    )
    group.add_argument(
        "--class-weights",
        default=None,
        metavar="CLASS=W,...",
        help="hrtem: relative class frequencies, e.g. 'crystalline=2,empty=0.5' (classes not "
        "named get 0; default: all five classes equally)",
    )


def parse_class_weights(text: str) -> dict[str, float]:
    """Parse ``'crystalline=2,empty=0.5'`` into a mapping, naming the bad item on error."""
    from mosaicflow.synth_hrtem import CLASSES

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
    """Handle ``mosaicflow synth``: write an HRTEM grid, or hand ``--mode sem`` back.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the ``synth`` subparser extended by :func:`add_arguments`.
    console : rich.console.Console
        Where the summary goes.

    Returns
    -------
    int
        Exit status (0).
    """
    mode = getattr(args, "mode", "sem")
    shared = getattr(args, "sem_defaults", {}) if mode == "sem" else HRTEM_DEFAULTS
    for dest, default in shared.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, default)
    if mode == "sem":
        given = [
            f"--{d.replace('_', '-')}" for d in _HRTEM_ONLY if getattr(args, d, None) is not None
        ]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to --mode hrtem only")
        sem_func = getattr(args, "sem_func", None)
        if sem_func is None:
            raise ConfigError("mosaicflow synth: no handler for --mode sem")
        return int(sem_func(args, console))

    from mosaicflow.synth_hrtem import write_hrtem_grid

    options: dict[str, Any] = {}
    if args.n_particles is not None:
        options["n_particles"] = args.n_particles
    if args.density is not None:
        options["density"] = args.density
    if args.class_weights:
        options["class_weights"] = parse_class_weights(args.class_weights)
    truth = write_hrtem_grid(
        args.out,
        rows=args.rows,
        cols=args.cols,
        tile_shape=(args.tile_height, args.tile_width),
        overlap=args.overlap,
        stage_error_px=args.stage_error,
        pixel_size_nm=args.pixel_size,
        snr=args.snr,
        bit_depth=args.bit_depth,
        seed=args.seed,
        **options,
    )
    import pandas as pd

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
