"""Statistics over seeds: mean, sd and a t-based 95% CI per config; which configs tie with the best.

    python -c "from ecg_ray.results.analysis.stats import mean_sd_ci; print(mean_sd_ci([0.58, 0.57, 0.60]))"

The tie test: each config against the best one (highest mean), paired by seed
(the seeds share the data split, so a seed's two results are a pair), a
two-sided paired t-test on the seeds both ran, with Holm's correction over the
configs compared. A config whose corrected p-value is at least `alpha` (0.05)
is *statistically indistinguishable* from the best. With fewer than two shared
seeds there is no test: the answer is unknown, not "tied".
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05
# Every bootstrap over records (the test split's CIs, the out-of-fold CIs, compare's paired
# bootstrap): this many resamples from this seed, so a table is the same every time.
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def mean_sd_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, sample sd, CI low, CI high) of `values`; sd and CI are NaN for a single value.

    The CI is mean ± t(confidence, n-1) · sd / sqrt(n): for n seeds it describes where the
    config's mean over seeds would lie, not one run.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    from scipy import stats  # here: only a table over seeds needs it (0.5 s to import)

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def paired_p_value(a, b) -> float:
    """Two-sided paired t-test p-value of a vs b (same seeds, same order); NaN below two pairs.

    Identical pairs (every difference equal) give 1.0 when the differences are all zero, else 0.0.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        return math.nan
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    from scipy import stats

    return float(stats.ttest_rel(a, b).pvalue)


def holm(p_values) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def class_f1(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-class F1 of 4 classes (0 where a class is neither true nor predicted, as sklearn's
    zero_division=0), from the confusion matrix: fast enough for a thousand resamples per config."""
    cm = np.bincount(4 * y + pred, minlength=16).reshape(4, 4)
    tp, both = np.diag(cm).astype(np.float64), (cm.sum(0) + cm.sum(1)).astype(np.float64)
    return np.divide(2 * tp, both, out=np.zeros(4), where=both > 0)


def paired_bootstrap(y, pred_a, pred_b, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Test macro-F1 of a minus b on the same records, and a percentile 95% CI of that difference over
    records resampled with replacement (the same resample for both: the pairing)."""
    y, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (y, pred_a, pred_b))

    def macro(idx, pred):
        return float(class_f1(y[idx], pred[idx]).mean())  # sklearn's macro-F1 over the 4 labels, fast

    every = np.arange(len(y))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(samples):
        i = rng.integers(0, len(y), len(y))
        diffs.append(macro(i, pred_a) - macro(i, pred_b))
    return {"test_diff": float(macro(every, pred_a) - macro(every, pred_b)),
            "test_diff_ci_low": float(np.percentile(diffs, 2.5)), "test_diff_ci_high": float(np.percentile(diffs, 97.5)),
            "n_test_records": int(len(y))}
