"""``mosaicflow classify-train``: fit a particle classifier on labelled rows of a particle table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from mosaicflow.errors import ClassifierError, ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from mosaicflow.classify import ParticleClassifier

# pandas and scikit-learn are imported by the command itself, not with the parser: every
# local Dask worker process imports the command line's main module when it starts.

PARTICLES = "particles"
"""The run store's table of particles."""


def read_particle_table(path: str | Path) -> pd.DataFrame:
    """A particle table from a Parquet file or folder, or from a run store.

    Parameters
    ----------
    path : str or Path
        A Parquet file or folder, or a run store made by ``mosaicflow run`` (its
        ``particles`` table is read).

    Returns
    -------
    pandas.DataFrame
        With a fresh ``RangeIndex``.

    Raises
    ------
    ClassifierError
        Nothing at ``path``, a run store without a particle table, a file that is not
        Parquet.
    """
    import pandas as pd

    from mosaicflow.io.store import RunStore

    path = Path(path)
    if not path.exists():
        raise ClassifierError(f"particle table '{path}': not found")
    if path.is_dir() and RunStore.is_run_store(str(path)):
        store = RunStore(str(path), mode="r")
        if not store.has_table(PARTICLES):
            raise ClassifierError(
                f"run store '{path}': no {PARTICLES} table (has the particles stage run?)"
            )
        return store.read_table(PARTICLES).reset_index(drop=True)
    try:
        table = pd.read_parquet(path)
    except Exception as exc:
        raise ClassifierError(
            f"particle table '{path}': not a readable Parquet table ({exc})"
        ) from exc
    return table.reset_index(drop=True)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``classify-train`` subcommand.

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
        "classify-train",
        help="train a random-forest particle classifier from labelled particles",
        description=(
            "Fit a random forest on the labelled particles of a particle table, print its "
            "out-of-bag and cross-validated scores and confusion matrix, and save it."
        ),
    )
    p.add_argument(
        "table",
        help="particle table: Parquet file or folder, or a run store (its particle table)",
    )
    p.add_argument(
        "labels", help="CSV or Parquet with columns label,class (particle id, class name)"
    )
    p.add_argument("--out", required=True, help="classifier file to write (e.g. forest.clf)")
    p.add_argument(
        "--features",
        nargs="+",
        default=None,
        help="feature columns, space- or comma-separated (default: shape + Fourier features)",
    )
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds (0: skip; default 5)")
    p.add_argument(
        "--groups",
        default=None,
        metavar="COLUMN",
        help="table column whose values (e.g. source image) stay within one fold",
    )
    p.add_argument("--trees", type=int, default=500, help="number of trees (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--jobs", type=int, default=-1, help="threads (default -1: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)
    return p


def _features(values: list[str] | None) -> tuple[str, ...]:
    """``--features`` as a tuple (space- and comma-separated), or the default features."""
    if not values:
        from mosaicflow.classify import DEFAULT_FEATURES

        return DEFAULT_FEATURES
    return tuple(f for v in values for f in v.split(",") if f)


def run(args: argparse.Namespace, console: Console) -> int:
    """Train, print the scores, save.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``classify-train`` arguments.
    console : rich.console.Console
        Where the report goes.

    Returns
    -------
    int
        Exit status 0; errors raise ``ClassifierError`` or ``ConfigError``.
    """
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ClassifierError(f"classifier file '{out}' exists (pass --overwrite to replace it)")
    if args.cv < 0:
        raise ConfigError(f"--cv must be >= 0, got {args.cv}")
    from mosaicflow.classify import labels_from_file, train

    table = read_particle_table(args.table)
    labels = labels_from_file(args.labels, table)
    clf = train(
        table,
        labels,
        features=_features(args.features),
        n_estimators=args.trees,
        random_state=args.seed,
        cv=args.cv or None,
        groups=args.groups,
        n_jobs=args.jobs,
    )
    clf.save(out)
    print_report(clf, console)
    console.print(f"Saved classifier: {out}", soft_wrap=True)
    return 0


def print_report(clf: ParticleClassifier, console: Console) -> None:
    """Print the scores, confusion matrix and feature ranking of a trained classifier.

    Parameters
    ----------
    clf : ParticleClassifier
        Trained classifier.
    console : rich.console.Console
        Where to print.
    """
    summary = Table(title="particle classifier", show_header=False)
    summary.add_column("")
    summary.add_column("value", justify="right")
    counts = ", ".join(f"{c} {n}" for c, n in clf.class_counts.items())
    summary.add_row("labelled particles", f"{clf.n_train} ({counts})")
    summary.add_row("features", str(len(clf.features)))
    summary.add_row("trees", str(clf.forest.n_estimators))
    summary.add_row("OOB accuracy", f"{clf.oob_score:.3f}")
    summary.add_row("OOB balanced accuracy", f"{clf.oob_balanced_accuracy:.3f}")
    if clf.cv_balanced_accuracy is not None and clf.cv_balanced_accuracy_std is not None:
        kind = "grouped " if clf.cv_grouped else ""
        summary.add_row(
            f"CV balanced accuracy ({clf.cv_folds} {kind}folds)",
            f"{clf.cv_balanced_accuracy:.3f} ± {clf.cv_balanced_accuracy_std:.3f}",
        )
    console.print(summary)
    for note in clf.notes:
        console.print(f"note: {note}")
    kind = "cv" if clf.cv_confusion is not None else "oob"
    frame = clf.confusion_frame(kind)
    conf = Table(
        title=f"{'cross-validated' if kind == 'cv' else 'out-of-bag'} confusion "
        "(rows: true class, columns: predicted)"
    )
    conf.add_column("true \\ predicted")
    for c in frame.columns:
        conf.add_column(str(c), justify="right")
    conf.add_column("recall", justify="right")
    for c, row in frame.iterrows():
        total = int(row.sum())
        recall = f"{row[c] / total:.3f}" if total else "-"
        conf.add_row(str(c), *(str(int(v)) for v in row), recall)
    console.print(conf)
    imp = Table(title="feature importance (impurity), top 10")
    imp.add_column("feature")
    imp.add_column("importance", justify="right")
    for name, value in clf.feature_importances().head(10).items():
        imp.add_row(str(name), f"{value:.3f}")
    console.print(imp)


__all__ = ["add_parser", "print_report", "read_particle_table", "run"]
