"""One measured run of the pipeline in a fresh interpreter, as ``mosaicflow run`` starts: no
module, page or heap left warm by an earlier run of the same benchmark.

Run in the same process, a second run found its worker processes' modules already imported
(the workers fork from the driver) and started its cluster in a third of the time; its memory
figures carried the first run's heap. Every repeat of ``mosaicflow bench`` is therefore a
child process, like each run of the naive baseline (:mod:`mosaicflow.bench.baseline`).

The parent (:func:`run_fresh`) hands the child its plan as JSON on standard input; the child
(``python -m mosaicflow.bench.fresh``) runs :func:`mosaicflow.bench.runs.measure_run`, shows
its progress on the terminal it shares, and writes its figures, or the error that stopped it,
to the plan's result file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mosaicflow.config import Config
from mosaicflow.errors import MosaicflowError


class BenchRunError(MosaicflowError):
    """A measured run failed in its child process; the message is the child's error."""


def run_fresh(
    config: Config,
    store: str | os.PathLike[str],
    *,
    n_workers: int,
    report_path: str | os.PathLike[str],
    result_path: str | os.PathLike[str],
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`~mosaicflow.bench.runs.measure_run` in a child interpreter; its figures.

    Parameters
    ----------
    config, store, n_workers, report_path
        As :func:`~mosaicflow.bench.runs.measure_run`.
    result_path : str or path-like
        Where the child writes its figures (removed once read).
    progress : bool
        The child shows the pipeline's progress bars on the shared terminal.

    Raises
    ------
    BenchRunError
        The run failed (the pipeline's own message), or the child died without a result
        (the last lines it wrote to standard error).
    """
    result_path = Path(result_path)
    result_path.unlink(missing_ok=True)
    plan = {
        "config": config.to_dict(),
        "store": str(store),
        "n_workers": int(n_workers),
        "report_path": str(report_path),
        "result_path": str(result_path),
        "progress": bool(progress),
    }
    proc = subprocess.run(
        [sys.executable, "-m", __name__],
        input=json.dumps(plan),
        stdout=None if progress else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    try:
        outcome = json.loads(result_path.read_text())
    except (OSError, ValueError):
        tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
        raise BenchRunError(
            f"the measured run's process ended (exit status {proc.returncode}) without a "
            f"result: {tail or 'no message'}"
        ) from None
    finally:
        result_path.unlink(missing_ok=True)
    if "error" in outcome:
        raise BenchRunError(outcome["error"])
    return dict(outcome["result"])


def _child() -> int:
    """The child's side: read the plan, run, write the result or the error."""
    plan = json.loads(sys.stdin.read())
    result_path = Path(plan["result_path"])
    try:
        from rich.console import Console

        from mosaicflow.bench.runs import measure_run

        result = measure_run(
            Config.from_dict(plan["config"]),
            plan["store"],
            n_workers=plan["n_workers"],
            report_path=plan["report_path"],
            console=Console() if plan["progress"] else None,
        )
    except MosaicflowError as exc:
        result_path.write_text(json.dumps({"error": str(exc)}))
        return 1
    result_path.write_text(json.dumps({"result": result}, default=_plain))
    return 0


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers; anything else JSON cannot hold as its text."""
    return value.item() if hasattr(value, "item") else str(value)


if __name__ == "__main__":
    sys.exit(_child())
