"""Noise versus recognition: does denoising restore particle recognition at low SNR?

Reproduces the design of Zhang et al.'s study on mosaicflow's synthetic particle fields: at
SNR = inf, 15 and 7.5 (mean particle signal over noise std; also the harder 4 and 2.5),
segment with (a) the Otsu threshold and (b) the U-Net, after no denoising, a Gaussian, the 3x3
median and non-local means, and score against the exact ground truth:

* recall / precision: a true particle is found when one segmented particle overlaps it with
  IoU >= 0.5 (one-to-one at that threshold);
* Dice: pixelwise overlap of the foreground masks.

Every step runs through mosaicflow's chunked Dask functions (chunks of 256 px).

    python examples/denoise_study.py [--size 1024] [--seeds 0 1 2] [--markdown out.md]

(b) needs a trained segmentation model (``--model CHECKPOINT``); mosaicflow ships none yet, so
without one those columns are reported as not available rather than run with untrained weights.
``benchmarks/bench_seams.py`` trains a small one on synthetic fields as a measurement aid.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd

from mosaicflow import restoration, synth
from mosaicflow.measure import label
from mosaicflow.segmentation import predict, threshold_otsu

# Zhang et al.'s three levels, then two harder ones to show where the denoisers part ways.
SNRS = (math.inf, 15.0, 7.5, 4.0, 2.5)
CHUNK = 256


def denoised(image: da.Array, method: str, noise: float) -> da.Array:
    if method == "none":
        return image
    if method == "gaussian":
        return restoration.gaussian_filter(image, sigma=1.0)
    if method == "median":
        return restoration.median_filter(image, size=3)
    h = max(0.8 * noise, 1e-6)
    return restoration.denoise_nl_means(image, patch_size=5, patch_distance=6, h=h, sigma=noise)


def particle_scores(truth: np.ndarray, found: np.ndarray) -> dict[str, float]:
    """Recall, precision (IoU >= 0.5 matches) and foreground Dice of two label images."""
    n_true, n_found = int(truth.max()), int(found.max())
    both = (truth > 0) & (found > 0)
    pairs = pd.DataFrame({"t": truth[both], "f": found[both]}).value_counts().reset_index()
    area_t = np.bincount(truth.ravel(), minlength=n_true + 1)
    area_f = np.bincount(found.ravel(), minlength=n_found + 1)
    inter = pairs["count"].to_numpy()
    union = area_t[pairs["t"]] + area_f[pairs["f"]] - inter
    matched = pairs[inter / union >= 0.5]  # IoU > 0.5 pairs are unique on both sides
    dice = 2 * both.sum() / max((truth > 0).sum() + (found > 0).sum(), 1)
    return {
        "recall": len(matched) / max(n_true, 1),
        "precision": len(matched) / max(n_found, 1),
        "dice": float(dice),
    }


def study(size: int, seeds: list[int], model: str | None = None) -> pd.DataFrame:
    rows = []
    for snr in SNRS:
        for seed in seeds:
            image, truth, _ = synth.synth_field((size, size), snr=snr, seed=seed)
            arr = da.from_array(image, chunks=CHUNK)
            noise = restoration.estimate_sigma(arr)
            for method in ("none", "gaussian", "median", "nl_means"):
                den = denoised(arr, method, noise).persist(scheduler="threads")
                mask = den > threshold_otsu(den)
                found = label(mask).compute(scheduler="threads")
                scores = particle_scores(truth, found)
                if model is not None:
                    prob = predict(den, model, window=256).persist(scheduler="threads")
                    unet = label(prob >= 0.5).compute(scheduler="threads")
                    scores.update({f"unet_{k}": v for k, v in particle_scores(truth, unet).items()})
                rows.append({"snr": snr, "seed": seed, "denoise": method, **scores})
    return pd.DataFrame(rows)


def to_markdown(results: pd.DataFrame, size: int, seeds: list[int], model: str | None) -> str:
    columns = ["recall", "precision", "dice"]
    if model is not None:
        columns += ["unet_recall", "unet_precision", "unet_dice"]
    mean = results.groupby(["snr", "denoise"], sort=False)[columns].mean()
    unet_note = (
        f"U-Net: checkpoint {Path(model).name}, cut at 0.5"
        if model
        else "U-Net: no trained model shipped yet (not run)"
    )
    lines = [
        f"Synthetic fields of {size}x{size} px, seeds {seeds}, mean over seeds. Otsu threshold "
        f"after each denoiser. {unet_note}.",
        "",
        "| SNR | denoising | Otsu recall | Otsu precision | Otsu Dice | U-Net recall | "
        "U-Net precision | U-Net Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (snr, method), r in mean.iterrows():
        snr_text = "inf" if math.isinf(snr) else f"{snr:g}"
        unet = (
            f"{r['unet_recall']:.3f} | {r['unet_precision']:.3f} | {r['unet_dice']:.3f}"
            if model
            else "n/a | n/a | n/a"
        )
        lines.append(
            f"| {snr_text} | {method} | {r['recall']:.3f} | {r['precision']:.3f} | "
            f"{r['dice']:.3f} | {unet} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--model", help="a segmentation checkpoint for the U-Net columns (none is shipped yet)"
    )
    args = parser.parse_args()
    results = study(args.size, args.seeds, args.model)
    text = to_markdown(results, args.size, args.seeds, args.model)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
