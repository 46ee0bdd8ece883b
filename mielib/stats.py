"""Significance tests, the one place for them: the corrected resampled t-test over (repeat, fold)
scores, paired permutation tests, Holm's correction, significance stars and a ROPE decision.

Used by `claims` (the ledger that results notebooks 04-11 end with) and by any notebook that
compares two configurations. Every result names its test, because the papers do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from mielib import metrics

TTEST = "corrected resampled t-test (Nadeau-Bengio, Bouckaert-Frank r×k)"
SIGN_FLIP = "paired permutation test (sign flips)"
SWAP = "paired permutation test on predictions (per-sample swaps)"
#: Exact enumeration up to 2**EXACT_MAX sign patterns; Monte Carlo above.
EXACT_MAX = 16
#: Region of practical equivalence: ±0.02 of a score in [0, 1] (2 UF1 points).
ROPE = 0.02
DECISIONS = ("equivalent", "different", "undecided")


@dataclass(frozen=True)
class Result:
    """One test of a paired difference (a - b). `difference` is the tested statistic's value.

    `se` (standard error of the mean difference, corrected) and `df` are set by the t-test;
    `resamples` and `exact` by the permutation tests.
    """

    test: str
    statistic: float
    p: float
    difference: float
    n: int
    df: int | None = None
    se: float | None = None
    resamples: int | None = None
    exact: bool | None = None

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided confidence interval of the mean difference (t-test results only)."""
        if self.se is None or self.df is None:
            raise ValueError(f"{self.test}: only the corrected t-test gives an interval")
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        half = float(_st.t.ppf((1 + level) / 2, self.df)) * self.se
        return self.difference - half, self.difference + half


def _paired(a, b, what: str = "scores") -> np.ndarray:
    """a - b (or a itself when b is None) as a finite 1-D float array, with clear errors."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"paired {what} must be 1-D, got shape {a.shape}")
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != a.shape:
            raise ValueError(f"paired {what} differ in length: a has {a.size}, b has {b.size}")
    d = a if b is None else a - b
    bad = np.flatnonzero(~np.isfinite(d))
    if bad.size:
        raise ValueError(f"paired {what} hold non-finite values at positions {bad.tolist()}; "
                         "a missing fold must be finished or left out of both models")
    return d


def _counts(x, j: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    arr = np.full(j, float(arr)) if arr.ndim == 0 else arr
    if arr.shape != (j,):
        raise ValueError(f"{name} must be one sample count or one per pair ({j}), got shape {arr.shape}")
    if not np.all(arr > 0):  # NaN fails this too
        raise ValueError(f"{name} must hold positive sample counts, got {arr.tolist()}")
    return arr


def corrected_ttest(a, b=None, *, n_train, n_test) -> Result:
    """Corrected resampled t-test of paired (repeat, fold) scores a and b (or differences a).

    t = mean(d) / sqrt((1/J + n_test/n_train) · var(d)), J = len(d) = repeats × folds, J - 1
    degrees of freedom, two-sided (Nadeau & Bengio 2003; for r × k-fold cross-validation
    Bouckaert & Frank 2004). The n_test/n_train term accounts for folds sharing training data,
    which makes a plain paired t-test too liberal. `n_train` / `n_test` are sample counts, one
    each or one per pair (LOSO folds differ in size): the mean of their ratios is used.

    All differences equal (zero variance): p = 1.0 (statistic 0) when they are all 0, else
    p = 0.0 (statistic ±inf), the limit of a vanishing variance.
    """
    d = _paired(a, b)
    j = d.size
    if j < 2:
        raise ValueError(f"the corrected t-test needs at least 2 paired scores, got {j}")
    ratio = float(np.mean(_counts(n_test, j, "n_test") / _counts(n_train, j, "n_train")))
    mean = float(d.mean())
    se = math.sqrt((1.0 / j + ratio) * float(d.var(ddof=1)))
    if se == 0.0:
        stat = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0.0 else 0.0
    else:
        stat = mean / se
        p = float(2 * _st.t.sf(abs(stat), j - 1))
    return Result(TTEST, stat, p, mean, j, df=j - 1, se=se)


def _flips(n: int, n_resamples: int, seed, exact_max: int) -> tuple[np.ndarray, bool]:
    """Boolean flip patterns (rows): all 2**n (row 0 = none) when n <= exact_max, else random."""
    if n <= exact_max:
        return ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool), True
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")
    return np.random.default_rng(seed).random((int(n_resamples), n)) < 0.5, False


def _p_two_sided(observed: float, null: np.ndarray, exact: bool) -> float:
    # The relative tolerance keeps ties (the same mean summed in another order) counted as ties.
    hits = int(np.count_nonzero(np.abs(null) >= abs(observed) * (1 - 1e-12)))
    # Exact: the share of all patterns. Monte Carlo: the observed pattern counts as one draw
    # (Phipson & Smyth 2010), so p is never 0.
    return hits / null.size if exact else (hits + 1) / (null.size + 1)


def permutation_test(a, b=None, *, n_resamples: int = 9999, seed=0, exact_max: int = EXACT_MAX) -> Result:
    """Two-sided paired permutation test of mean(a - b): each pair's sign flipped at random.

    Exact (all 2**n patterns, the observed included) for n <= exact_max pairs, else Monte Carlo
    with `n_resamples` patterns from `seed` and p = (hits + 1) / (n_resamples + 1). Matches
    scipy.stats.permutation_test(permutation_type="samples") in the exact case. With r
    per-repeat pooled scores the smallest possible p is 2 / 2**r (0.25 for 3 repeats).
    """
    d = _paired(a, b)
    if d.size < 1:
        raise ValueError("the permutation test needs at least 1 paired score")
    flips, exact = _flips(d.size, n_resamples, seed, exact_max)
    null = np.where(flips, -d, d).mean(axis=1)
    observed = float(d.mean())
    return Result(SIGN_FLIP, observed, _p_two_sided(observed, null, exact), observed, int(d.size),
                  resamples=int(flips.shape[0]), exact=exact)


def paired_prediction_test(y_true, pred_a, pred_b, *, metric: str = "uf1", labels=None, classes: str = "true",
                           n_resamples: int = 9999, seed=0, exact_max: int = EXACT_MAX,
                           batch: int = 1000) -> Result:
    """Two-sided permutation test of metric(a) - metric(b) for two models on the same samples.

    Under the null the two models are exchangeable, so each sample's two predictions are
    swapped at random and the metric (mielib.metrics: "uf1", "uar" or "accuracy", over
    `labels` and `classes` as there) recomputed. Needs no repeats: one pooled cross-validation
    of each model is enough. Exact for n <= exact_max samples, else Monte Carlo as in
    `permutation_test`.
    """
    if metric not in ("uf1", "uar", "accuracy"):
        raise ValueError(f"unknown metric {metric!r}; use 'uf1', 'uar' or 'accuracy'")
    y, a, b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    if not (y.ndim == a.ndim == b.ndim == 1) or not (y.size == a.size == b.size):
        raise ValueError(f"y_true, pred_a and pred_b must be 1-D and of one length, got shapes "
                         f"{y.shape}, {a.shape} and {b.shape}")
    if y.size == 0:
        raise ValueError("no samples to test (empty y_true)")
    labels = sorted(set(y.tolist()) | set(a.tolist()) | set(b.tolist())) if labels is None else list(labels)
    pos = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted(map(str, (set(y.tolist()) | set(a.tolist()) | set(b.tolist())) - set(pos)))
    if unknown:
        raise ValueError(f"labels {unknown} occur in y_true/pred_a/pred_b but not in labels={labels}")
    k = len(labels)
    yi, ai, bi = (np.array([pos[v] for v in arr.tolist()], dtype=np.int64) for arr in (y, a, b))

    def score(flips: np.ndarray) -> np.ndarray:
        # One confusion matrix per row of flips for each model, counted with one bincount.
        offsets = (np.arange(flips.shape[0]) * k * k)[:, None]
        out = []
        for mine, other in ((ai, bi), (bi, ai)):
            cells = yi * k + np.where(flips, other, mine) + offsets
            c = np.bincount(cells.ravel(), minlength=flips.shape[0] * k * k).reshape(-1, k, k)
            out.append(metrics.stacked_scores(c, classes)[metric])
        return out[0] - out[1]

    observed = float(score(np.zeros((1, y.size), dtype=bool))[0])
    flips, exact = _flips(y.size, n_resamples, seed, exact_max)
    null = np.concatenate([score(flips[i:i + batch]) for i in range(0, flips.shape[0], batch)])
    return Result(f"{SWAP}, {metric.upper()}", observed, _p_two_sided(observed, null, exact), observed,
                  int(y.size), resamples=int(flips.shape[0]), exact=exact)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family (statsmodels); NaNs pass through as NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    out = np.full(p.shape, np.nan)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=0.05, method="holm")[1]
    return out


def stars(p) -> str:
    """MiE-X Fig. 5's marks: "***" p < 0.001, "**" < 0.01, "*" < 0.05, else "n.s."; "n/a" for NaN."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    p = float(p)
    if math.isnan(p):
        return "n/a"
    if not 0 <= p <= 1:
        raise ValueError(f"a p-value must lie in [0, 1], got {p!r}")
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def rope(interval: tuple[float, float], width: float = ROPE) -> str:
    """ROPE decision on an interval of a difference: "equivalent" when it lies inside
    [-width, width], "different" when it lies wholly outside, "undecided" when it straddles."""
    low, high = map(float, interval)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"interval must be finite with low <= high, got {interval!r}")
    if width <= 0:
        raise ValueError(f"the ROPE half-width must be positive, got {width!r}")
    if -width <= low and high <= width:
        return "equivalent"
    if high < -width or low > width:
        return "different"
    return "undecided"


@dataclass(frozen=True)
class Equivalence:
    """A "no difference" check: the corrected t-test's interval against ±rope."""

    decision: str  # one of DECISIONS
    interval: tuple[float, float]
    rope: float
    level: float
    result: Result


def equivalence(a, b=None, *, n_train, n_test, width: float = ROPE, level: float = 0.95) -> Equivalence:
    """Is a - b practically zero? The `level` interval of the corrected resampled t-test
    against the ROPE ±width (default ±0.02, 2 UF1 points). A p-value cannot say "no difference";
    this can, when the data are precise enough ("undecided" otherwise). level=0.90 makes the
    "equivalent" decision a two one-sided tests (TOST) procedure at 5%."""
    res = corrected_ttest(a, b, n_train=n_train, n_test=n_test)
    interval = res.interval(level)
    return Equivalence(rope(interval, width), interval, float(width), float(level), res)
