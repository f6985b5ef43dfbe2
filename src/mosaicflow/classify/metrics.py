"""Class fractions with confidence intervals, raw and corrected for the classifier's errors.

A run reports what fraction of its particles are cubes, spheres, ...: counting the predicted
classes gives a biased answer whenever the classifier confuses classes, because a class that
is often mistaken for a common one is under-counted. Two estimates are given:

* the raw fraction of each predicted class with a Wilson score interval (binomial sampling of
  the particles only; it assumes the predictions are right);
* the adjusted classify-and-count estimate: with ``M[i, j] = P(predicted j | true i)``
  measured on held-out particles (out-of-bag or cross-validation), the observed predicted
  fractions ``q`` satisfy ``q = M^T p`` for the true fractions ``p``; ``p`` is found by
  non-negative least squares and renormalised to sum to one. Its interval comes from a
  parametric bootstrap that redraws both the observed counts (multinomial on ``q``) and each
  row of the confusion matrix (multinomial on its measured row), so it carries the
  uncertainty of the classifier's validation as well as of the particle count.

The correction assumes the classifier errs on the new particles as it did on the held-out ones
(same ``P(predicted | true)``, only the mix of classes may differ); a change of microscope,
magnification or contrast breaks that assumption and no interval here covers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError
from mosaicflow.measure.columns import UNCLASSIFIED as _UNCLASSIFIED

Z_95 = 1.959963984540054
"""Two-sided 95 % normal quantile."""

# The class column's value for particles the classifier cannot classify (its home is the
# table's vocabulary, which the report reads without importing scikit-learn).
UNCLASSIFIED = _UNCLASSIFIED


def wilson_interval(k: Any, n: Any, *, z: float = Z_95) -> tuple[Any, Any]:
    """Wilson score interval of a binomial proportion ``k / n`` (vectorised).

    Parameters
    ----------
    k, n : int or array of int
        Successes and trials (broadcast together); ``0 <= k <= n``.
    z : float, keyword-only
        Normal quantile of the two-sided level (1.96 for 95 %).

    Returns
    -------
    (low, high) : floats, or arrays of the broadcast shape
        ``nan`` where ``n == 0``.

    Notes
    -----
    The interval is the set of ``p`` whose score test ``|k/n - p| <= z sqrt(p (1 - p) / n)``
    does not reject; unlike ``p ± z sqrt(p(1-p)/n)`` it stays inside ``[0, 1]`` and keeps close
    to its nominal coverage for small ``n`` and proportions near 0 or 1 (Brown, Cai and
    DasGupta 2001).

    Examples
    --------
    >>> low, high = wilson_interval(5, 10)
    >>> round(low, 4), round(high, 4)
    (0.2366, 0.7634)
    """
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if not z > 0:
        raise ConfigError(f"wilson_interval: z must be > 0, got {z}")
    if np.any(n_arr < 0) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ConfigError("wilson_interval: counts must satisfy 0 <= k <= n")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_arr / n_arr
        z2n = z * z / n_arr
        denom = 1.0 + z2n
        centre = (p + z2n / 2.0) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n_arr + z2n / (4.0 * n_arr))
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    low = np.where(n_arr == 0, np.nan, low)
    high = np.where(n_arr == 0, np.nan, high)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def _as_confusion(confusion: Any, classes: Sequence[str]) -> np.ndarray:
    """Counts matrix in the order of ``classes`` (a labelled DataFrame is reordered)."""
    if isinstance(confusion, pd.DataFrame):
        missing = [c for c in classes if c not in confusion.index or c not in confusion.columns]
        if missing:
            raise ConfigError(f"class_fractions: confusion matrix lacks classes {missing}")
        confusion = confusion.loc[list(classes), list(classes)].to_numpy()
    m = np.asarray(confusion, dtype=np.float64)
    c = len(classes)
    if m.shape != (c, c):
        raise ConfigError(
            f"class_fractions: confusion matrix has shape {m.shape}, expected ({c}, {c}) "
            f"(rows = true class, columns = predicted class, in the order {list(classes)})"
        )
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ConfigError("class_fractions: confusion matrix must hold non-negative counts")
    empty = [cls for cls, total in zip(classes, m.sum(axis=1), strict=True) if total == 0]
    if empty:
        raise ConfigError(
            f"class_fractions: confusion matrix has no held-out particle of true class {empty}; "
            "the correction needs every class measured"
        )
    return m


def adjusted_fractions(observed: Any, rates: Any) -> np.ndarray:
    """True-class fractions ``p`` on the simplex with ``observed ≈ rates^T p``.

    Parameters
    ----------
    observed : array (C,)
        Observed fractions (or counts) of the predicted classes.
    rates : array (C, C)
        ``rates[i, j] = P(predicted j | true i)`` (rows sum to one).

    Returns
    -------
    ndarray (C,)
        Non-negative least-squares solution, renormalised to sum to one (uniform if the
        solution is all zero, which only happens for degenerate ``rates``).
    """
    q = np.asarray(observed, dtype=np.float64)
    total = q.sum()
    if total > 0:
        q = q / total
    from scipy.optimize import nnls

    p, _ = nnls(np.asarray(rates, dtype=np.float64).T, q)
    s = p.sum()
    return p / s if s > 0 else np.full_like(p, 1.0 / p.size)


def class_fractions(
    predicted: Any,
    classes: Sequence[str],
    *,
    confusion: Any = None,
    z: float = Z_95,
    n_boot: int = 1000,
    random_state: int = 0,
) -> pd.DataFrame:
    """Fraction of particles per class, with intervals, raw and (optionally) adjusted.

    Parameters
    ----------
    predicted : array-like of str
        Predicted class of each particle (e.g. the table's ``class`` column). Particles
        marked ``"unclassified"`` (non-finite features) are left out of the fractions; their
        number is in ``result.attrs["unclassified"]``. Any other value not in ``classes`` is
        an error.
    classes : sequence of str
        The classifier's classes, in the order of the confusion matrix.
    confusion : array (C, C) or DataFrame, optional, keyword-only
        Held-out confusion counts, rows = true class, columns = predicted class (e.g.
        ``ParticleClassifier.cv_confusion`` or ``oob_confusion``). A DataFrame is matched by
        its class labels. When given, the adjusted columns are added.
    z : float, keyword-only
        Normal quantile of the two-sided level; the bootstrap uses the same level.
    n_boot : int, keyword-only
        Bootstrap draws for the adjusted interval.
    random_state : int, keyword-only
        Seed of the bootstrap.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``class, count, fraction, ci_low, ci_high`` and, with
        ``confusion``, ``adjusted_fraction, adjusted_low, adjusted_high``.

    Notes
    -----
    See the module docstring for what the adjusted estimate assumes and what its bootstrap
    interval covers. The bootstrap never moves a confusion cell measured as zero, so with a
    small validation set the adjusted interval is too narrow for rare confusions.
    """
    classes = [str(c) for c in classes]
    if len(classes) == 0 or len(set(classes)) != len(classes):
        raise ConfigError(f"class_fractions: classes must be distinct and non-empty: {classes}")
    values = pd.Series(np.asarray(predicted, dtype=object)).astype(object)
    values = values[values.notna()].astype(str)
    n_unclassified = int((values == UNCLASSIFIED).sum())
    values = values[values != UNCLASSIFIED]
    unknown = sorted(set(values.unique()) - set(classes))
    if unknown:
        raise ConfigError(
            f"class_fractions: predicted classes {unknown[:5]} are not among {classes}"
        )
    counts = values.value_counts().reindex(classes, fill_value=0).to_numpy(dtype=np.int64)
    n = int(counts.sum())
    fraction = counts / n if n else np.full(len(classes), np.nan)
    low, high = wilson_interval(counts, np.full(len(classes), n), z=z)
    out = pd.DataFrame(
        {
            "class": classes,
            "count": counts,
            "fraction": fraction,
            "ci_low": low,
            "ci_high": high,
        }
    )
    out.attrs["unclassified"] = n_unclassified
    out.attrs["n"] = n
    if confusion is None:
        return out
    m = _as_confusion(confusion, classes)
    row_totals = m.sum(axis=1)
    rates = m / row_totals[:, None]
    if n == 0:
        nan = np.full(len(classes), np.nan)
        out["adjusted_fraction"], out["adjusted_low"], out["adjusted_high"] = nan, nan, nan
        return out
    rng = np.random.default_rng(random_state)
    draws = np.empty((n_boot, len(classes)))
    obs_draws = rng.multinomial(n, fraction, size=n_boot)
    row_draws = [
        rng.multinomial(int(t), r, size=n_boot) for t, r in zip(row_totals, rates, strict=True)
    ]
    for b in range(n_boot):
        m_b = np.stack([rows[b] for rows in row_draws]) / row_totals[:, None]
        draws[b] = adjusted_fractions(obs_draws[b], m_b)
    from scipy.stats import norm  # a second of imports: loaded only where intervals are made

    tail = 100.0 * float(norm.sf(z))
    out["adjusted_fraction"] = adjusted_fractions(counts, rates)
    out["adjusted_low"] = np.percentile(draws, tail, axis=0)
    out["adjusted_high"] = np.percentile(draws, 100.0 - tail, axis=0)
    return out


def balanced_accuracy_from_confusion(confusion: Any) -> float:
    """Mean recall over the classes present (rows with a non-zero total).

    Equals :func:`sklearn.metrics.balanced_accuracy_score` on the predictions behind the
    matrix, without its warning when a cross-validation fold lacks a class.
    """
    m = np.asarray(confusion, dtype=np.float64)
    support = m.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(m)[present] / support[present]))


__all__ = [
    "UNCLASSIFIED",
    "Z_95",
    "adjusted_fractions",
    "balanced_accuracy_from_confusion",
    "class_fractions",
    "wilson_interval",
]
