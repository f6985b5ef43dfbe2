"""Run summary: particle counts and size statistics, stage timings, a size histogram."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.io.store import RunStore

ECD = "equivalent_diameter_area"


def size_statistics(ecd_nm: np.ndarray) -> dict[str, float | None]:
    """Mean, median and D10/D50/D90 (number-weighted percentiles) of diameters in nm."""
    ecd_nm = np.asarray(ecd_nm, dtype=np.float64)
    if ecd_nm.size == 0:
        return {"mean_nm": None, "median_nm": None, "d10_nm": None, "d50_nm": None, "d90_nm": None}
    d10, d50, d90 = np.percentile(ecd_nm, [10, 50, 90])
    return {
        "mean_nm": float(ecd_nm.mean()),
        "median_nm": float(np.median(ecd_nm)),
        "d10_nm": float(d10),
        "d50_nm": float(d50),
        "d90_nm": float(d90),
    }


def compare_with_truth(table: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Found particles against a synthetic ground truth (counts and median ECD)."""
    found_median = float(np.median(table[ECD])) if len(table) else float("nan")
    true_median = float(np.median(truth["ecd_nm"])) if len(truth) else float("nan")
    return {
        "true_count": len(truth),
        "found_count": len(table),
        "count_error": (len(table) - len(truth)) / len(truth) if len(truth) else None,
        "true_median_ecd_nm": true_median,
        "found_median_ecd_nm": found_median,
        "median_ecd_error": (found_median - true_median) / true_median if len(truth) else None,
    }


def _histogram_png(ecd_nm: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if len(ecd_nm):
        ax.hist(ecd_nm, bins=min(60, max(10, len(ecd_nm) // 20)), color="#3b6ea8")
    ax.set_xlabel("equivalent circular diameter (nm)")
    ax.set_ylabel("particles")
    ax.set_title(f"Particle sizes (n = {len(ecd_nm)})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(store: RunStore) -> dict[str, Any]:
    """Write ``report/summary.json``, ``report/size_histogram.png`` and ``report/index.html``."""
    table = store.read_table("particles")
    ecd = table[ECD].to_numpy() if len(table) else np.empty(0)
    meta = store.meta
    stages = meta.get("stages", {})
    summary: dict[str, Any] = {
        "mosaicflow_version": meta.get("version"),
        "store": store.url,
        "mosaic_shape": stages.get("mosaic", {}).get("shape"),
        "pixel_size_nm": meta.get("tileset", {}).get("pixel_size_nm"),
        "threshold": stages.get("probability", {}).get("threshold"),
        "particles": {"count": len(table), **size_statistics(ecd)},
        "stages": {
            name: {"seconds": s.get("seconds"), "mpx_per_s": s.get("mpx_per_s")}
            for name, s in stages.items()
            if s.get("status") == "done"
        },
    }
    if store.has_table("ground_truth"):
        summary["ground_truth"] = compare_with_truth(table, store.read_table("ground_truth"))
    fs = store._fs
    base = store.url.rstrip("/") + "/report"
    fs.makedirs(base, exist_ok=True)
    with fs.open(f"{base}/summary.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    with fs.open(f"{base}/size_histogram.png", "wb") as fh:
        fh.write(_histogram_png(ecd))
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in summary["particles"].items())
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>mosaicflow report</title></head>"
        f"<body><h1>mosaicflow report</h1><p>Store: {store.url}</p>"
        f"<table>{rows}</table><p><img src='size_histogram.png' alt='size histogram'></p>"
        "<p><a href='summary.json'>summary.json</a></p></body></html>"
    )
    with fs.open(f"{base}/index.html", "w") as fh:
        fh.write(html)
    return summary
