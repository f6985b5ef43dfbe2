"""mosaicflow.classify.metrics: Wilson intervals, class fractions raw and adjusted for the
classifier's confusion, balanced accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from sklearn.metrics import balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from mosaicflow.classify import (
    UNCLASSIFIED,
    adjusted_fractions,
    balanced_accuracy_from_confusion,
    class_fractions,
    wilson_interval,
)
from mosaicflow.errors import ConfigError

Z = 1.959963984540054


def test_wilson_known_values():
    # Textbook values of the 95 % Wilson interval.
    np.testing.assert_allclose(wilson_interval(5, 10), (0.2366, 0.7634), atol=5e-5)
    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.2775), atol=5e-5)
    np.testing.assert_allclose(wilson_interval(10, 10), (0.7225, 1.0), atol=5e-5)
    low, high = wilson_interval(np.array([0, 3, 7]), np.array([0, 10, 10]))
    assert np.isnan(low[0]) and np.isnan(high[0])
    np.testing.assert_allclose(low[1:], 1 - high[1:][::-1])  # symmetry k <-> n - k


@pytest.mark.parametrize("k, n", [(1, 7), (3, 10), (17, 40), (95, 100), (250, 1000)])
@pytest.mark.parametrize("z", [1.0, Z, 2.576])
def test_wilson_inverts_the_score_test(k, n, z):
    """Oracle: the interval ends are the two roots of (k/n - p)^2 = z^2 p (1 - p) / n."""
    p_hat = k / n

    def score(p: float) -> float:
        return (p_hat - p) ** 2 - z * z * p * (1 - p) / n

    low = brentq(score, 0.0, p_hat) if k > 0 else 0.0
    high = brentq(score, p_hat, 1.0) if k < n else 1.0
    np.testing.assert_allclose(wilson_interval(k, n, z=z), (low, high), atol=1e-10)


def test_wilson_coverage_by_simulation():
    rng = np.random.default_rng(7)
    n, draws = 60, 20000
    for p in (0.03, 0.05, 0.1, 0.3, 0.5):
        k = rng.binomial(n, p, size=draws)
        low, high = wilson_interval(k, np.full(draws, n))
        wilson = np.mean((low <= p) & (p <= high))
        half = Z * np.sqrt(k / n * (1 - k / n) / n)
        wald = np.mean((k / n - half <= p) & (p <= k / n + half))
        assert 0.92 <= wilson <= 0.99, (p, wilson)
        if p <= 0.05:  # where the textbook Wald interval fails, Wilson must not
            assert wald < 0.90 < wilson, (p, wald, wilson)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ConfigError, match="0 <= k <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ConfigError, match="0 <= k <= n"):
        wilson_interval(-1, 10)


CLASSES3 = ["a", "b", "c"]


RATES = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.15, 0.80]])


def test_class_fractions_raw_columns():
    pred = ["a"] * 30 + ["b"] * 10 + [UNCLASSIFIED] * 4 + ["c"] * 60
    out = class_fractions(pred, CLASSES3)
    assert list(out.columns) == ["class", "count", "fraction", "ci_low", "ci_high"]
    assert out["count"].tolist() == [30, 10, 60]
    np.testing.assert_allclose(out["fraction"], [0.3, 0.1, 0.6])
    low, high = wilson_interval(np.array([30, 10, 60]), 100)
    np.testing.assert_allclose(out["ci_low"], low)
    np.testing.assert_allclose(out["ci_high"], high)
    assert out.attrs["unclassified"] == 4 and out.attrs["n"] == 100
    with pytest.raises(ConfigError, match=r"\['x'\]"):
        class_fractions(["a", "x"], CLASSES3)


def test_adjusted_fractions_exact_when_observed_is_consistent():
    p = np.array([0.5, 0.2, 0.3])
    np.testing.assert_allclose(adjusted_fractions(RATES.T @ p, RATES), p, atol=1e-12)
    # A mix on the simplex's edge: NNLS keeps the absent class at zero.
    p = np.array([0.7, 0.3, 0.0])
    np.testing.assert_allclose(adjusted_fractions(RATES.T @ p * 1000, RATES), p, atol=1e-12)


def _simulate(rng, truth, n, n_val):
    true = rng.choice(3, size=n, p=truth)
    pred = np.array([rng.choice(3, p=RATES[t]) for t in true])
    confusion = np.stack([rng.multinomial(n_val, RATES[i]) for i in range(3)])
    return np.asarray(CLASSES3, dtype=object)[pred], confusion


def test_adjusted_estimate_recovers_a_known_mix():
    """Known mix + known confusion: the adjusted estimate beats the raw fractions and its
    bootstrap interval covers the truth about as often as it claims."""
    rng = np.random.default_rng(3)
    truth = np.array([0.6, 0.3, 0.1])
    raw, adjusted, covered = [], [], []
    for rep in range(40):
        pred, confusion = _simulate(rng, truth, n=1500, n_val=200)
        out = class_fractions(pred, CLASSES3, confusion=confusion, n_boot=400, random_state=rep)
        raw.append(out["fraction"].to_numpy())
        adjusted.append(out["adjusted_fraction"].to_numpy())
        covered.append((out["adjusted_low"] <= truth) & (truth <= out["adjusted_high"]))
        assert np.isclose(out["adjusted_fraction"].sum(), 1.0)
    raw, adjusted = np.array(raw), np.array(adjusted)
    # Raw counting is biased by the confusion (cubes lost to spheres...); the adjusted
    # estimate is not, and is closer to the truth on average despite its larger variance.
    assert np.abs(raw.mean(axis=0) - truth).max() > 0.04
    assert np.abs(adjusted.mean(axis=0) - truth).max() < 0.01
    assert np.abs(adjusted - truth).sum(axis=1).mean() < np.abs(raw - truth).sum(axis=1).mean()
    coverage = np.mean(covered, axis=0)
    assert np.all(coverage >= 0.85), coverage
    # The raw Wilson interval, which ignores the classifier's errors, misses badly.
    pred, confusion = _simulate(rng, truth, n=1500, n_val=200)
    out = class_fractions(pred, CLASSES3, confusion=confusion)
    assert not ((out["ci_low"] <= truth) & (truth <= out["ci_high"])).all()


def test_class_fractions_takes_a_labelled_confusion():
    rng = np.random.default_rng(0)
    pred, confusion = _simulate(rng, np.array([0.2, 0.5, 0.3]), n=500, n_val=100)
    frame = pd.DataFrame(confusion, index=CLASSES3, columns=CLASSES3)
    shuffled = frame.loc[["c", "a", "b"], ["b", "c", "a"]]
    a = class_fractions(pred, CLASSES3, confusion=confusion)
    b = class_fractions(pred, CLASSES3, confusion=shuffled)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ConfigError, match="shape"):
        class_fractions(pred, CLASSES3, confusion=confusion[:2])
    empty_row = confusion.copy()
    empty_row[1] = 0
    with pytest.raises(ConfigError, match=r"true class \['b'\]"):
        class_fractions(pred, CLASSES3, confusion=empty_row)


def test_balanced_accuracy_from_confusion_equals_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    m = sk_confusion_matrix(y, p)
    assert balanced_accuracy_from_confusion(m) == pytest.approx(balanced_accuracy_score(y, p))
