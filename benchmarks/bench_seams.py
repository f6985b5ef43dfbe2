"""No seams: the particle table from windowed inference vs one whole-image forward pass.

A resnet18 Unet is first trained briefly on synthetic fields (CPU, a few minutes; random
weights would give a meaningless table), then applied to a separate synthetic mosaic two ways:

* ``segmentation.predict`` with overlapping, blended windows on a chunked Dask array;
* one forward pass of the same model over the whole image (padded to a multiple of 32).

Both probability maps are cut at 0.5, labelled and measured with mosaicflow, and compared:
particle counts, particles matched one to one (IoU >= 0.5), pixels whose mask differs, and the
largest difference of area and centroid among matched particles. The ground truth of the
mosaic is scored too. The trained checkpoint is kept (``--checkpoint``) for other scripts, e.g.
``examples/denoise_study.py --model``; it is a measurement aid, not a shipped model.

    python benchmarks/bench_seams.py [--steps 300] [--size 1024 1536] [--window 256]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import torch

from mosaicflow import synth
from mosaicflow.measure import label, regionprops_table
from mosaicflow.segmentation import build_model, predict, save_checkpoint


def train(steps: int, crop: int, batch: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """A few hundred Adam steps on random crops of synthetic fields at SNR 5 to 30."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fields = [
        synth.synth_field((512, 512), snr=snr, seed=100 + i)
        for i, snr in enumerate([30.0, 15.0, 10.0, 7.5, 5.0, 20.0])
    ]
    images = np.stack([f[0] for f in fields])
    masks = np.stack([f[1] > 0 for f in fields]).astype(np.float32)
    mean, std = float(images.mean()), float(images.std())
    model = build_model("unet").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for step in range(steps):
        idx = rng.integers(0, len(images), batch)
        ys = rng.integers(0, 512 - crop, batch)
        xs = rng.integers(0, 512 - crop, batch)
        boxes = list(zip(idx, ys, xs, strict=True))
        x = np.stack([images[i, y : y + crop, c : c + crop] for i, y, c in boxes])
        t = np.stack([masks[i, y : y + crop, c : c + crop] for i, y, c in boxes])
        xb = torch.from_numpy((x - mean) / std)[:, None]
        tb = torch.from_numpy(t)[:, None]
        opt.zero_grad()
        loss = loss_fn(model(xb), tb)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    return model.eval(), {"mean": mean, "std": std}


def whole_image_probability(model: torch.nn.Module, image: np.ndarray, norm: dict) -> np.ndarray:
    h, w = image.shape
    ph, pw = (-h) % 32, (-w) % 32
    x = (image.astype(np.float32) - norm["mean"]) / norm["std"]
    x = np.pad(x, ((0, ph), (0, pw)))
    with torch.inference_mode():
        out = torch.sigmoid(model(torch.from_numpy(x)[None, None]))[0, 0].numpy()
    return out[:h, :w]


def table_of(mask: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    labels = label(da.from_array(mask, chunks=512)).compute(scheduler="threads")
    table = regionprops_table(da.from_array(labels, chunks=512), da.from_array(image, chunks=512))
    return labels, table.compute(scheduler="threads")


def matched_pairs(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    both = (a > 0) & (b > 0)
    pairs = pd.DataFrame({"a": a[both], "b": b[both]}).value_counts().reset_index()
    area_a = np.bincount(a.ravel())
    area_b = np.bincount(b.ravel())
    union = area_a[pairs["a"]] + area_b[pairs["b"]] - pairs["count"]
    return pairs[pairs["count"] / union >= 0.5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 1536])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=300)
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--checkpoint", default="benchmarks/results/seams-unet.safetensors")
    parser.add_argument("--json", default="benchmarks/results/seams.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, norm = train(args.steps, crop=128, batch=8, seed=0)
    Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.checkpoint, model, arch="unet", normalization=norm, window=args.window)

    image, truth, _ = synth.synth_field(tuple(args.size), snr=args.snr, seed=7)
    windowed = predict(
        da.from_array(image, chunks=args.chunk), args.checkpoint, window=args.window
    ).compute(scheduler="threads")
    whole = whole_image_probability(model, image, norm)
    lab_w, tab_w = table_of(windowed >= 0.5, image)
    lab_1, tab_1 = table_of(whole >= 0.5, image)
    pairs = matched_pairs(lab_w, lab_1)
    merged = pairs.merge(tab_w, left_on="a", right_on="label").merge(
        tab_1, left_on="b", right_on="label", suffixes=("_w", "_1")
    )
    truth_pairs = matched_pairs(truth, lab_w)
    report = {
        "train_steps": args.steps,
        "image": list(image.shape),
        "window": args.window,
        "prob_max_abs_diff": float(np.abs(windowed - whole).max()),
        "prob_mean_abs_diff": float(np.abs(windowed - whole).mean()),
        "mask_pixels_differing": int(((windowed >= 0.5) != (whole >= 0.5)).sum()),
        "particles_windowed": len(tab_w),
        "particles_whole": len(tab_1),
        "matched_one_to_one": len(pairs),
        "max_area_diff_px": float(np.abs(merged["area_w"] - merged["area_1"]).max()),
        "max_centroid_shift_px": float(
            np.hypot(
                merged["centroid-0_w"] - merged["centroid-0_1"],
                merged["centroid-1_w"] - merged["centroid-1_1"],
            ).max()
        ),
        "tables_equal": len(tab_w) == len(tab_1) and np.array_equal(lab_w, lab_1),
        "true_particles": int(truth.max()),
        "windowed_recall_vs_truth": len(truth_pairs) / max(int(truth.max()), 1),
        "windowed_precision_vs_truth": len(truth_pairs) / max(len(tab_w), 1),
        "dice_vs_truth": float(
            2 * ((truth > 0) & (lab_w > 0)).sum() / ((truth > 0).sum() + (lab_w > 0).sum())
        ),
    }
    for key, value in report.items():
        print(f"{key}: {value}")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
