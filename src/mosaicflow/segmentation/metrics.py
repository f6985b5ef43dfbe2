"""Segmentation scores against a ground truth: pixels, instances (matched at IoU >= 0.5) and
boxes, per image and summed over a set.

A predicted particle matches a true one when their intersection over union reaches the
threshold; at 0.5 or more each particle can match at most one other, and pairs are taken by
decreasing IoU so ties never double-count. Sums over a set are micro-averages: pixel counts,
true/false positives and negatives are added over the images before the ratios are taken.

Pure NumPy/SciPy: no Dask, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_MATCH = 0.5


@dataclass
class Tally:
    """Counts from one image or a sum over many; the scores are properties."""

    tp_px: int = 0
    fp_px: int = 0
    fn_px: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    matched_iou: list[float] = field(default_factory=list)
    ecd_ratio: list[float] = field(default_factory=list)
    true_ecd: list[float] = field(default_factory=list)
    pred_ecd: list[float] = field(default_factory=list)
    images: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.tp_px + other.tp_px,
            self.fp_px + other.fp_px,
            self.fn_px + other.fn_px,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.matched_iou + other.matched_iou,
            self.ecd_ratio + other.ecd_ratio,
            self.true_ecd + other.true_ecd,
            self.pred_ecd + other.pred_ecd,
            self.images + other.images,
        )

    def scores(self) -> dict[str, float | int]:
        """Pixel Dice/IoU/precision/recall, instance precision/recall/F1, mean matched IoU,
        median matched ECD ratio (predicted / true) and the size-distribution distance (the
        Wasserstein-1 distance between the true and predicted ECD distributions over the mean
        true ECD)."""
        return {
            "images": self.images,
            "true_particles": self.tp + self.fn,
            "predicted_particles": self.tp + self.fp,
            "matched": self.tp,
            "pixel_dice": _ratio(2 * self.tp_px, 2 * self.tp_px + self.fp_px + self.fn_px),
            "pixel_iou": _ratio(self.tp_px, self.tp_px + self.fp_px + self.fn_px),
            "pixel_precision": _ratio(self.tp_px, self.tp_px + self.fp_px),
            "pixel_recall": _ratio(self.tp_px, self.tp_px + self.fn_px),
            "precision": _ratio(self.tp, self.tp + self.fp),
            "recall": _ratio(self.tp, self.tp + self.fn),
            "f1": _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn),
            "mean_matched_iou": _mean(self.matched_iou),
            "median_ecd_ratio": _median(self.ecd_ratio),
            "size_distance": _size_distance(self.true_ecd, self.pred_ecd),
        }


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def _size_distance(true: list[float], pred: list[float]) -> float:
    if not true or not pred:
        return float("nan")
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(true, pred) / np.mean(true))


def _areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return ids, counts


def match_instances(
    true: np.ndarray, pred: np.ndarray, iou: float = IOU_MATCH
) -> list[tuple[int, int, float]]:
    """Matched ``(true id, predicted id, IoU)`` pairs at ``IoU >= iou`` (one-to-one)."""
    t = np.asarray(true).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    both = (t > 0) & (p > 0)
    if not both.any():
        return []
    t_ids, t_area = _areas(t)
    p_ids, p_area = _areas(p)
    key = t[both] * (int(p.max()) + 1) + p[both]
    pairs, inter = np.unique(key, return_counts=True)
    ti = pairs // (int(p.max()) + 1)
    pi = pairs % (int(p.max()) + 1)
    ta = t_area[np.searchsorted(t_ids, ti)]
    pa = p_area[np.searchsorted(p_ids, pi)]
    ious = inter / (ta + pa - inter)
    order = np.argsort(-ious, kind="stable")
    used_t: set[int] = set()
    used_p: set[int] = set()
    out = []
    for k in order:
        if ious[k] < iou:
            break
        a, b = int(ti[k]), int(pi[k])
        if a in used_t or b in used_p:
            continue
        used_t.add(a)
        used_p.add(b)
        out.append((a, b, float(ious[k])))
    return out


def tally(true: np.ndarray, pred: np.ndarray, iou: float = IOU_MATCH) -> Tally:
    """Counts of one image: instance maps ``true`` and ``pred`` (0 = background), same shape.

    Raises
    ------
    ValueError
        The shapes differ.
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"tally: shapes differ, truth {true.shape} vs prediction {pred.shape}")
    tf, pf = true > 0, pred > 0
    matches = match_instances(true, pred, iou)
    t_ids, t_area = _areas(true)
    p_ids, p_area = _areas(pred)
    t_ecd = np.sqrt(4 * t_area / np.pi)
    p_ecd = np.sqrt(4 * p_area / np.pi)
    ratios = []
    for a, b, _ in matches:
        ratios.append(float(p_ecd[np.searchsorted(p_ids, b)] / t_ecd[np.searchsorted(t_ids, a)]))
    return Tally(
        tp_px=int(np.count_nonzero(tf & pf)),
        fp_px=int(np.count_nonzero(~tf & pf)),
        fn_px=int(np.count_nonzero(tf & ~pf)),
        tp=len(matches),
        fp=len(p_ids) - len(matches),
        fn=len(t_ids) - len(matches),
        matched_iou=[m[2] for m in matches],
        ecd_ratio=ratios,
        true_ecd=t_ecd.tolist(),
        pred_ecd=p_ecd.tolist(),
        images=1,
    )


def label_boxes(labels: np.ndarray) -> np.ndarray:
    """``(n, 4)`` boxes ``(y0, x0, y1, x1)`` (end exclusive) of each instance, by id."""
    from scipy import ndimage as ndi

    lab = np.asarray(labels)
    ids = np.unique(lab[lab > 0])
    if not len(ids):
        return np.zeros((0, 4), np.float64)
    slices = ndi.find_objects(lab.astype(np.int64))
    rows = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in slices if s is not None]
    return np.asarray(rows, dtype=np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``(y0, x0, y1, x1)``: shape ``(len(a), len(b))``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    y0 = np.maximum(a[:, None, 0], b[None, :, 0])
    x0 = np.maximum(a[:, None, 1], b[None, :, 1])
    y1 = np.minimum(a[:, None, 2], b[None, :, 2])
    x1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_tally(true_boxes: np.ndarray, pred_boxes: np.ndarray, iou: float = IOU_MATCH) -> Tally:
    """Counts of one image from boxes: a predicted box matches a true one at ``IoU >= iou``
    (one-to-one, by decreasing IoU). Pixel counts stay 0."""
    m = box_iou(true_boxes, pred_boxes)
    matched = 0
    ious = []
    if m.size:
        order = np.dstack(np.unravel_index(np.argsort(-m, axis=None), m.shape))[0]
        used_t: set[int] = set()
        used_p: set[int] = set()
        for i, j in order:
            if m[i, j] < iou:
                break
            if i in used_t or j in used_p:
                continue
            used_t.add(int(i))
            used_p.add(int(j))
            matched += 1
            ious.append(float(m[i, j]))
    return Tally(
        tp=matched,
        fp=len(pred_boxes) - matched,
        fn=len(true_boxes) - matched,
        matched_iou=ious,
        images=1,
    )
