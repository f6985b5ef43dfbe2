"""K-fold cross-validation of the training recipe on the EMPS training split, the folds run
side by side in separate processes (``mosaicflow train --folds K --fold k``), joined into one
table of per-fold scores with their mean and spread.

    python benchmarks/bench_cv.py --out cv                # 5 folds, the model card's first command
    python benchmarks/bench_cv.py --parallel 5 --threads 3 --out cv    # a GPU node: all at once

Each fold trains a model from scratch on four fifths of the training split (with its own
validation images for early stopping and the threshold sweep) and is scored on the fifth it
never saw. The EMPS test split is not touched. Training runs on the GPU where torch sees one
(``mosaicflow train --device auto``); the folds then share it.

Writes ``OUT/fold-K.json`` and ``OUT/fold-K.log`` per fold, ``OUT/cv.json`` and ``OUT/cv.md``,
only into a folder it made (``mosaicflow.bench.outputs.prepare_out``). Folds trained by an
earlier invocation into the same OUT (``--fold``) are joined when their settings are this
run's; other settings stop the join, naming the file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The model card's first command (the from-scratch stage) without its data and output.
RECIPE = "--synthetic 60 --epochs 40 --patience 15 --seed 0 --select fixed"
#: train options that may differ between the folds of one cross-validation
_PER_RUN = ("fold", "report", "threads", "device", "max_minutes")


def _command(args: argparse.Namespace, data: Path, fold: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from mosaicflow.cli import main; sys.exit(main())",
        "train",
        "--images",
        str(data / "images"),
        "--masks",
        str(data / "segmaps"),
        "--names",
        str(data / "train.csv"),
        *args.recipe.split(),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--folds",
        str(args.folds),
        "--fold",
        str(fold),
        "--report",
        str(out / f"fold-{fold}.json"),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/real/emps_particles")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold", type=int, action="append", help="run only these folds (repeatable)")
    p.add_argument("--parallel", type=int, default=1, help="folds trained at once")
    p.add_argument("--threads", type=int, default=2, help="torch threads per fold")
    p.add_argument("--device", default="auto")
    p.add_argument("--recipe", default=RECIPE, help="the train options cross-validated")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    for need in ("images", "segmaps", "train.csv"):
        if not (args.data / need).exists():
            p.error(f"--data {args.data}: no {need} (EMPS layout: images/, segmaps/, train.csv)")
    from mosaicflow.bench.outputs import prepare_out
    from mosaicflow.errors import StoreError

    try:
        args.out = prepare_out(args.out)  # a folder this benchmark made, or a new one
    except StoreError as exc:
        p.error(str(exc))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pending = args.fold or list(range(1, args.folds + 1))
    running: dict[int, tuple[subprocess.Popen, object]] = {}
    started = time.perf_counter()
    failed = []
    while pending or running:
        while pending and len(running) < args.parallel:
            k = pending.pop(0)
            (args.out / f"fold-{k}.json").unlink(missing_ok=True)  # never join a stale fold
            log = open(args.out / f"fold-{k}.log", "w")  # closed when the fold ends
            cmd = _command(args, args.data, k, args.out)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[k] = (proc, log)
            print(f"fold {k}: started", flush=True)
        time.sleep(2)
        for k, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[k]
            print(f"fold {k}: exit {proc.returncode} at {time.perf_counter() - started:.0f} s")
            if proc.returncode:
                failed.append(k)
    seconds = time.perf_counter() - started
    from mosaicflow.segmentation.folds import summarise

    # folds run earlier into this folder (another --fold invocation) join when their recipe,
    # data and K are this one's
    rows, recipe = [], None
    for k in range(1, args.folds + 1):
        path = args.out / f"fold-{k}.json"
        if k in failed or not path.is_file():
            continue
        report = json.loads(path.read_text())
        same = {key: v for key, v in report["settings"].items() if key not in _PER_RUN}
        if recipe is None:
            recipe = same
        elif same != recipe:
            sys.exit(f"{path}: trained with other settings than fold {rows[0]['fold']}; move it")
        row = report["folds"][0]
        row["seconds"] = report.get("seconds")
        rows.append(row)
    summary = summarise(rows) if rows else {}
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    result = {
        "recipe": args.recipe,
        "folds": args.folds,
        "parallel": args.parallel,
        "threads": args.threads,
        "device": device,
        "cores": os.cpu_count(),
        "seconds": round(seconds, 1),
        "failed": failed,
        "rows": rows,
        "summary": summary,
    }
    (args.out / "cv.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        f"# {args.folds}-fold cross-validation, EMPS training split ({device}, "
        f"{os.cpu_count()} cores, {args.parallel} at once, {seconds:.0f} s)",
        "",
        f"Recipe: `mosaicflow train ... {args.recipe}`",
        "",
        "| fold | images | epochs | F1 | precision | recall | Dice | median ECD ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fold']} | {r['images']} | {r['epochs']} | {r['f1']:.3f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['pixel_dice']:.3f} | "
            f"{r['median_ecd_ratio']:.3f} |"
        )
    for key, v in summary.items():
        lines.append(f"\n{key}: mean {v['mean']:.3f}, standard deviation {v['std']:.3f}")
    if failed:
        lines.append(f"\nfailed folds: {failed} (their logs: fold-K.log)")
    (args.out / "cv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
