"""The statistics of linear mode connectivity: barrier forms, their bootstrap intervals, the paired
success test at the midpoint, intervals across child pairs and rank correlations with exact p.
mop/connectivity.py builds its tables with these; nothing here reads or writes files.

Barrier forms, for a curve f(α) over α in [0, 1] (ends included) and a sign s (+1 for a loss,
−1 for success, so a worse θ(α) is always positive):
- line form (Entezari et al. 2022, "The role of permutation invariance in linear mode
  connectivity"): max over α of s·[f(α) − ((1−α)·f(0) + α·f(1))]; 0 at the ends, so never
  negative (`barrier_line`).
- mean form (Frankle et al. 2020; seed 003's instability, "mean of the endpoints minus the worst
  α"): max over α of s·[f(α) − (f(0) + f(1))/2], ends included, so at least |f(0) − f(1)|/2
  (`barrier_mean`). The two differ by up to |f(0) − f(1)|/2.
Each form also gives its signed interior extreme: the same maximum over the interior α only
(0 < α < 1). It is negative when every interior θ(α) is better than the reference, which the
clipped barrier cannot show; `interior_better` says when every interior point beats both ends.

Intervals: `bootstrap_barriers` resamples units (held-out episodes for the cross-entropy, layouts
for success), the same units at every α (every α is evaluated on the same ones), recomputes the
whole curve and both barriers, and takes the percentile interval (2.5th and 97.5th percentile of
B resamples, B >= MIN_BOOTSTRAP; a fixed seed, so a table is reproducible).

The paired success test (`paired_drop`) at the pre-specified midpoint α_m (the α nearest 0.5):
per layout i, d_i = (1−α_m)·s_i(0) + α_m·s_i(1) − s_i(α_m) with s ∈ {0, 1} (the line-form drop of
that layout; at α_m = 0.5 also the mean form). The statistic is the mean of d_i (the drop of the
success rate at α_m), its interval the percentile bootstrap over layouts, and its test a
randomisation test (`midpoint_randomisation`): under no drop the three outcomes of a layout
(s_i(0), s_i(α_m), s_i(1)) are exchangeable, so each layout's outcomes are shuffled among the
three places (6 arrangements, RANDOMISATIONS draws, seeded) and p = (1 + #{|Σd*| >= |Σd|}) /
(R + 1), two-sided; 1 when no layout is discordant. (A t-test of the d_i rejected 7% at a mean
success of 0.97, skewed d; docs/calibration.md.) n_worse (d_i > 0: the midpoint fails where the ends' average succeeds more) and
n_better (d_i < 0) are counts only: the exact sign test on them (`sign_test`), printed before
issue 40, is withdrawn, because d_i is ±½ or ±1 and under no drop P(d_i > 0) ≠ P(d_i < 0)
unless the layout's rate is ½ (at a mean success of 0.8-0.98 it rejected 14% at nominal 5%;
docs/calibration.md). It tests one pre-specified α, not the α of the largest drop (choosing that
α after looking would make any p too small).

The barrier test (`barrier_test`), beside the percentile interval: the percentile bootstrap
under-covers when the true barrier is 0 (a max over α is biased up; docs/calibration.md measures
it), so each form also gets a one-sided test of "barrier > 0" on the paired per-unit gaps and a
simultaneous t interval. Per unit u and α, d_u(α) = s·[f_u(α) − ref_u(α)] (ref: the line
(1−α)f_u(0) + αf_u(1) for the line form, (f_u(0) + f_u(1))/2 for the mean form), so the curve's
gap at α is Σ_u d_u(α) / Σ_u w_u (w: labels per episode for the loss, 1 per layout for success).
H0: every gap <= 0 (no barrier); p = Bonferroni over the k α tested (the interior α for the line
form, whose ends are 0 by definition; every α for the mean form) of the one-sided t-tests of
mean d(α) > 0. The interval: per α a two-sided t interval of the gap (a ratio of means, its
standard error by the delta method) at level 1 − 0.05/k, so all k cover together with >= 95%;
[max of the lows, max of the highs] then covers the barrier (the max of the gaps), clipped
below at 0 (both forms are >= 0 by their definition: max over α includes an end).

`spearman` gives ρ with an exact permutation p for n <= EXACT_MAX (all n! orderings) and a
Monte Carlo permutation p ((hits + 1)/(B + 1), B = 20,000, seeded) above; `fork_spearman` the
same with the fork as the unit: ρ over the rows (child pairs) and a permutation that moves whole
forks (each fork's block of y values, in pair order, goes to another fork's x values: F!
orderings, exact for F <= EXACT_MAX), so pairs of one fork are never counted as independent,
with the smallest p that the F! orderings can give (`p_min`: with 4 forks 2/24 = 0.083 for
distinct ranks, so 0.05 cannot be reached). `across_pairs` the mean and Student-t 95% interval of
a value over a fork's child pairs (NaN with one pair).

    barrier_line(np.linspace(0, 1, 11), ce, 1.0)            # Barrier(height, alpha, extreme)
    bootstrap_barriers(alphas, ce_sums, label_counts, 1000)  # percentile intervals, both forms
    paired_drop(alphas, success)                             # PairedDrop(drop, ci, n_worse, n_better, p)
    barrier_test(alphas, ce_sums, label_counts, "line")      # BarrierTest(p, low, high, tested)
    fork_spearman(x, y, forks)                               # ForkCorrelation(n, forks, rho, p, p_min, ...)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mop.lmc_settings import MIN_BOOTSTRAP, check_bootstrap  # noqa: F401  (lmc_stats' rules, written once)

BOOTSTRAP_SEED = 0
EXACT_MAX = 8  # 8! = 40,320 orderings: exact Spearman p up to here
PERMUTATIONS = 20_000
LEVEL = 0.95


class Barrier(NamedTuple):
    height: float  # the barrier: max over every α, ends included
    alpha: float  # where it is reached (the first such α)
    extreme: float  # the signed maximum over the interior α only (NaN without interior α)


def _line(f0: float, f1: float, alpha: np.ndarray) -> np.ndarray:
    """(1−α)·f0 + α·f1, exact at the ends and equal to f0 when f0 = f1 (lerp's two-sided form)."""
    return np.where(alpha < 0.5, f0 + alpha * (f1 - f0), f1 - (1.0 - alpha) * (f1 - f0))


def _sorted(alpha: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, f = np.asarray(alpha, float), np.asarray(values, float)
    order = np.argsort(a, kind="stable")
    return a[order], f[order]


def _barrier(a: np.ndarray, gap: np.ndarray) -> Barrier:
    i = int(np.nanargmax(gap))
    inner = gap[1:-1]
    extreme = float(np.nanmax(inner)) + 0.0 if len(inner) and not np.isnan(inner).all() else math.nan
    return Barrier(float(gap[i]) + 0.0, float(a[i]), extreme)  # + 0.0: no -0.0


def barrier_line(alpha: Sequence[float], values: Sequence[float], sign: float = 1.0) -> Barrier:
    """The line form: max over α of sign·[f(α) − ((1−α)·f(0) + α·f(1))] (never negative)."""
    a, f = _sorted(alpha, values)
    return _barrier(a, sign * (f - _line(f[0], f[-1], a)))


def barrier_mean(alpha: Sequence[float], values: Sequence[float], sign: float = 1.0) -> Barrier:
    """The mean form: max over α of sign·[f(α) − (f(0) + f(1))/2], ends included."""
    a, f = _sorted(alpha, values)
    return _barrier(a, sign * (f - 0.5 * (f[0] + f[-1])))


def interior_better(alpha: Sequence[float], values: Sequence[float], sign: float = 1.0) -> bool:
    """Every interior θ(α) is better than both ends (lower loss, higher success)."""
    _, f = _sorted(alpha, values)
    if len(f) < 3:
        return False
    return bool(np.all(sign * f[1:-1] < min(sign * f[0], sign * f[-1])))


# ----------------------------------------------------------------------------- intervals


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap samples (NaN when none is finite)."""
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _resampled_curves(
    numerators: np.ndarray, denominators: np.ndarray | None, count: int, seed: int
) -> np.ndarray:
    """(count, A) curves of resampled units: numerators (A, U) summed over the drawn units, divided
    by the drawn denominators (U,) summed (a ratio of sums: the held-out CE per label), or their
    mean when there are none (success per layout)."""
    rng = np.random.default_rng(seed)
    units = numerators.shape[1]
    draws = rng.integers(0, units, size=(count, units))  # the same units at every α
    weights = np.stack([np.bincount(d, minlength=units) for d in draws]).astype(float)  # (count, U)
    totals = weights @ numerators.T  # (count, A)
    if denominators is None:
        return totals / units
    return totals / (weights @ denominators)[:, None]


class BarrierIntervals(NamedTuple):
    line: tuple[float, float]
    mean: tuple[float, float]


def bootstrap_barriers(
    alpha: Sequence[float],
    numerators: np.ndarray,
    denominators: np.ndarray | None,
    count: int,
    sign: float = 1.0,
    seed: int = BOOTSTRAP_SEED,
) -> BarrierIntervals:
    """Percentile intervals of both barrier forms, resampling units with replacement: numerators
    (A, U) per α and unit, denominators (U,) or None (see _resampled_curves)."""
    count = check_bootstrap(count)
    a = np.asarray(alpha, float)
    curves = _resampled_curves(np.asarray(numerators, float), denominators, count, seed)
    line = [barrier_line(a, c, sign).height for c in curves]
    mean = [barrier_mean(a, c, sign).height for c in curves]
    return BarrierIntervals(percentile_interval(np.asarray(line)), percentile_interval(np.asarray(mean)))


# ----------------------------------------------------------------------------- the paired success test


class PairedDrop(NamedTuple):
    alpha: float  # α_m, the pre-specified midpoint
    drop: float  # mean over layouts of d_i (positive: the midpoint solves fewer)
    ci_low: float
    ci_high: float
    n_worse: int  # layouts with d_i > 0
    n_better: int  # layouts with d_i < 0
    p: float  # two-sided randomisation p (each layout's 3 outcomes exchangeable under no drop)


def sign_test(n_worse: int, n_better: int) -> float:
    """Exact two-sided sign (McNemar) test: P(|K − n/2| >= |n_worse − n/2|), K ~ Bin(n, 1/2);
    1.0 when no layout is discordant."""
    n = n_worse + n_better
    if n == 0:
        return 1.0
    k = min(n_worse, n_better)
    # both tails of a symmetric binomial: 2·P(K <= k), capped at 1 (k = n/2 covers the middle twice)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def midpoint_index(alpha: Sequence[float]) -> int | None:
    """The interior α nearest 0.5 (the smaller one on a tie); None without interior α."""
    a = np.sort(np.asarray(alpha, float))
    inner = np.arange(1, len(a) - 1)
    if not len(inner):
        return None
    return int(inner[np.argmin(np.abs(a[inner] - 0.5))])


def paired_drop(
    alpha: Sequence[float], success: np.ndarray, count: int = 1000, seed: int = BOOTSTRAP_SEED
) -> PairedDrop:
    """The success drop at the midpoint, paired per layout: success (A, N) in {0, 1}, one row per
    α in the order of `alpha`, the same N layouts in every row (see the module docstring)."""
    a = np.asarray(alpha, float)
    order = np.argsort(a, kind="stable")
    a, s = a[order], np.asarray(success, float)[order]
    m = midpoint_index(a)
    if m is None or s.shape[1] == 0:
        return PairedDrop(math.nan, math.nan, math.nan, math.nan, 0, 0, math.nan)
    am = float(a[m])
    d = (1 - am) * s[0] + am * s[-1] - s[m]  # (N,)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(d), size=(check_bootstrap(count), len(d)))
    low, high = percentile_interval(d[draws].mean(1))
    worse, better = int((d > 0).sum()), int((d < 0).sum())
    p = midpoint_randomisation(s[0], s[m], s[-1], am, seed=seed)
    return PairedDrop(am, float(d.mean()) + 0.0, low, high, worse, better, p)


RANDOMISATIONS = 10_000
_ARRANGEMENTS = np.array(list(itertools.permutations(range(3))))  # (6, 3)


def midpoint_randomisation(
    start: np.ndarray, mid: np.ndarray, end: np.ndarray, am: float, count: int = RANDOMISATIONS, seed: int = 0
) -> float:
    """Two-sided randomisation p of Σ_i [(1−am)·start_i + am·end_i − mid_i] (module docstring):
    each layout's three outcomes shuffled among the three places; 1.0 without a discordant layout."""
    v = np.stack([start, mid, end], 1).astype(float)  # (N, 3)
    v = v[np.ptp(v, 1) > 0]
    if not len(v):
        return 1.0
    weights = np.array([1 - am, -1.0, am])
    d = (v[:, _ARRANGEMENTS] * weights).sum(-1)  # (N, 6): the layout's d in each arrangement
    observed = float(d[:, 0].sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(_ARRANGEMENTS), size=(count, len(v)))
    null = d[np.arange(len(v))[None, :], picks].sum(1)  # (count,)
    return float((1 + (np.abs(null) >= abs(observed) - 1e-9).sum()) / (count + 1))


# ----------------------------------------------------------------------------- across pairs, correlations


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values: the Student-t interval of their mean, t_test's (NaN
    ends with fewer than two finite values; both ends at the mean without spread); e.g. over a fork's
    child pairs, or over held-out contexts."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):  # no spread: the t statistic is undefined
        low, high, _ = t_test(x, level)
    return mean, low, high


across_pairs = mean_interval  # a fork's child pairs


def t_test(d: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, p) of d's mean: its Student-t interval and the two-sided one-sample t-test of
    mean 0. scipy.stats.ttest_1samp's arithmetic (the same special functions, the same order of
    operations) without its ~1 ms of per-call overhead, which was most of a causal summary's
    time. The caller checks what a t-test needs: at least two values with some spread."""
    from scipy import special

    x = np.asarray(d, float)
    n = len(x)
    mean = x.mean()
    se = np.sqrt(((x - mean) ** 2).mean() * (n / (n - 1)) / n)
    t = mean / se
    p = 2 * special.stdtr(n - 1, -np.abs(t))
    tail = (1 - level) / 2
    low, high = special.stdtrit(n - 1, np.array([tail, 1 - tail]))
    return float(low * se + mean), float(high * se + mean), float(p)


STUDENTIZED_RESAMPLES = 2000


def bootstrap_t_interval(
    values: Sequence[float], level: float = LEVEL, resamples: int = STUDENTIZED_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """(low, high) of the studentized bootstrap (bootstrap-t) interval of the mean of the finite
    values: resample them, take the quantiles q of t* = (mean* - mean) / (s* / sqrt(n)) (resamples
    without spread dropped) and return mean - q_high s / sqrt(n), mean - q_low s / sqrt(n). It
    follows a skewed sample, where the Student-t interval falls short (a small share of
    |attribution| over 20 episodes: 92% coverage, docs/calibration.md). NaN ends with fewer than
    three values, no spread, or no resample with spread."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return math.nan, math.nan
    mean, scale = float(x.mean()), float(x.std(ddof=1) / math.sqrt(n))
    draws = x[np.random.default_rng(seed).integers(0, n, (resamples, n))]
    spread = draws.std(axis=1, ddof=1)
    ok = spread > 0
    if not ok.any():
        return math.nan, math.nan
    t = (draws[ok].mean(axis=1) - mean) / (spread[ok] / math.sqrt(n))
    q_low, q_high = np.quantile(t, [(1 - level) / 2, (1 + level) / 2])
    return mean - float(q_high) * scale, mean - float(q_low) * scale


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)  # average ranks for ties


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of x (n,) with each row of y (..., n)."""
    xc = x - x.mean()
    yc = y - y.mean(-1, keepdims=True)
    return (yc @ xc) / np.sqrt((xc @ xc) * (yc * yc).sum(-1))


class Correlation(NamedTuple):
    n: int
    rho: float
    p: float
    method: str  # 'exact permutation' | 'Monte Carlo permutation' | 'too few' | 'constant'


def spearman(x: Sequence[float], y: Sequence[float], seed: int = BOOTSTRAP_SEED) -> Correlation:
    """Spearman ρ of the finite pairs (x_i, y_i) and its two-sided permutation p (module docstring)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3:
        return Correlation(n, math.nan, math.nan, "too few")
    rx, ry = _ranks(x), _ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return Correlation(n, math.nan, math.nan, "constant")
    rho = float(_pearson(rx, ry[None])[0])
    if n <= EXACT_MAX:
        perms = ry[np.array(list(itertools.permutations(range(n))))]
        method = "exact permutation"
        hits, total = int((np.abs(_pearson(rx, perms)) >= abs(rho) - 1e-12).sum()), len(perms)
        p = hits / total
    else:
        rng = np.random.default_rng(seed)
        perms = np.stack([rng.permutation(ry) for _ in range(PERMUTATIONS)])
        method = "Monte Carlo permutation"
        hits = int((np.abs(_pearson(rx, perms)) >= abs(rho) - 1e-12).sum())
        p = (hits + 1) / (PERMUTATIONS + 1)
    return Correlation(n, rho, float(p), method)


class ForkCorrelation(NamedTuple):
    n: int  # rows (child pairs) with finite x and y
    n_forks: int  # forks among them: the unit of the test
    rho: float  # Spearman ρ over the rows
    p: float  # two-sided permutation p, whole forks moved
    p_min: float  # the smallest p the fork permutations can give (NaN without a test)
    method: str  # 'exact fork permutation (F!)' | 'Monte Carlo fork permutation' | why none


def _block_stats(rx: np.ndarray, ry: np.ndarray, blocks: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """|ρ| of x's ranks (n,) with y's ranks moved block by block: perms (P, F) sends fork f's
    block to fork perms[:, f]'s rows (blocks (F, K): row indices of each fork, in pair order)."""
    moved = np.empty((len(perms), len(rx)))
    for f in range(blocks.shape[0]):
        moved[:, blocks[f]] = ry[blocks[perms[:, f]]]  # (P, K)
    return np.abs(_pearson(rx, moved))


def fork_spearman(
    x: Sequence[float], y: Sequence[float], forks: Sequence[int], seed: int = BOOTSTRAP_SEED
) -> ForkCorrelation:
    """Spearman ρ of (x_i, y_i) over rows grouped by fork, tested by permuting whole forks (module
    docstring). A fork keeps only rows with finite x and y; every fork must keep the same number of
    rows (else no test: the blocks cannot be exchanged). One row per fork: the ordinary exact
    permutation p (spearman's)."""
    x, y, g = np.asarray(x, float), np.asarray(y, float), np.asarray(forks)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[keep], y[keep], g[keep]
    n, labels = len(x), np.unique(g)
    nan = math.nan
    if len(labels) < 3:
        return ForkCorrelation(n, len(labels), nan, nan, nan, "too few forks")
    rx, ry = _ranks(x), _ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return ForkCorrelation(n, len(labels), nan, nan, nan, "constant")
    rho = float(_pearson(rx, ry[None])[0])
    sizes = {int((g == f).sum()) for f in labels}
    if len(sizes) != 1:
        return ForkCorrelation(n, len(labels), rho, nan, nan, "unequal pairs per fork: no fork test")
    blocks = np.stack([np.flatnonzero(g == f) for f in labels])  # (F, K)
    count = len(labels)
    if count <= EXACT_MAX:
        perms = np.array(list(itertools.permutations(range(count))))
        method = f"exact fork permutation ({len(perms)})"
    else:
        rng = np.random.default_rng(seed)
        perms = np.stack([np.arange(count)] + [rng.permutation(count) for _ in range(PERMUTATIONS)])
        method = "Monte Carlo fork permutation"
    null = _block_stats(rx, ry, blocks, perms)
    tol = 1e-12
    hits = int((null >= abs(rho) - tol).sum())
    best = int((null >= null.max() - tol).sum())
    if count <= EXACT_MAX:
        p, p_min = hits / len(perms), best / len(perms)
    else:  # the identity is among the draws: (hits + 1)/(B + 1) with the observed counted once
        p, p_min = hits / len(perms), 1 / len(perms)
    return ForkCorrelation(n, count, rho, float(p), float(p_min), method)


# ----------------------------------------------------------------------------- the barrier test

FORMS = ("line", "mean")


class BarrierTest(NamedTuple):
    p: float  # one-sided p of "barrier > 0" (Bonferroni over the α tested)
    low: float  # simultaneous t interval of the barrier, clipped below at 0
    high: float
    tested: int  # α tested (k)


def _gaps(alpha: np.ndarray, values: np.ndarray, form: str, sign: float) -> np.ndarray:
    """(A, U) per-unit gaps d_u(α) = sign·(f_u(α) − ref_u(α)) of values (A, U) sorted by α."""
    if form == "line":
        ref = _line(values[0][None, :], values[-1][None, :], alpha[:, None])
    elif form == "mean":
        ref = 0.5 * (values[0] + values[-1])[None, :]
    else:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return sign * (values - ref)


def barrier_test(
    alpha: Sequence[float],
    numerators: np.ndarray,
    denominators: np.ndarray | None,
    form: str,
    sign: float = 1.0,
    level: float = LEVEL,
) -> BarrierTest:
    """The one-sided test of "barrier > 0" and the simultaneous t interval of one barrier form
    (module docstring) from numerators (A, U) per α and unit and denominators (U,) (None: 1 per
    unit). NaN with fewer than two units or no α to test."""
    from scipy import stats

    a, f = np.asarray(alpha, float), np.asarray(numerators, float)
    order = np.argsort(a, kind="stable")
    a, f = a[order], f[order]
    units = f.shape[1]
    w = np.ones(units) if denominators is None else np.asarray(denominators, float)
    d = _gaps(a, f, form, sign)
    if form == "line":
        d = d[1:-1]  # the ends' gaps are 0 by definition: nothing to test
    k = d.shape[0]
    if units < 2 or k == 0 or w.sum() <= 0:
        return BarrierTest(math.nan, math.nan, math.nan, k)
    mean_w = w.mean()
    gap = d.mean(1) / mean_w  # (k,) the curve's gap at each α: Σd / Σw
    resid = (d - gap[:, None] * w[None, :]) / mean_w  # delta-method linearisation of the ratio
    se = resid.std(1, ddof=1) / math.sqrt(units)
    se_mean = d.std(1, ddof=1) / math.sqrt(units)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se_mean > 0, d.mean(1) / se_mean, np.where(d.mean(1) > 0, np.inf, -np.inf))
    p_each = stats.t.sf(t, units - 1)
    p = float(min(1.0, k * np.min(p_each)))
    half = stats.t.ppf(1 - (1 - level) / (2 * k), units - 1) * se
    low, high = float(np.max(gap - half)), float(np.max(gap + half))
    return BarrierTest(p, max(0.0, low) + 0.0, max(0.0, high) + 0.0, k)
