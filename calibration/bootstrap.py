"""Confidence intervals for a metric, and for the change of a metric between two models, that
account for both sources of noise an offline comparison has: which test impressions were drawn
(rows) and which training seeds were run (seeds, usually only k = 3 to 5).

Method (``method="seed-t"``, the default; both functions):

- Rows: a resample draws n row indices uniformly with replacement and turns them into a count
  vector c (n,); every seed of every model is scored on the *same* count vector (paired over
  rows), as the metric with ``sample_weight = c`` (``core.metrics`` defines every metric with
  weights; no row is copied). Each resample gives one value per (model, seed).
- Seeds: the quantity an interval is for is the change in the seed-averaged metric, the
  average over the training seeds one would get with unlimited seeds. Write a seed unit's value
  (one seed's metric, or with ``paired_seeds`` one seed's difference) as
  ``theta + r + e_s + u_s``: r the test set's noise common to every seed, e_s the seed's own
  effect, u_s the test-set noise particular to that seed's scores. The mean over k units has
  variance ``var(r) + (var(e) + var(u)) / k``. The bootstrap's covariance between two
  *different* seeds' values estimates var(r) (the off-diagonal mean of their covariance
  matrix); the sample variance of the k unit values on the test set at hand estimates
  var(e) + var(u), on k - 1 degrees of freedom. Their sum is the variance of the estimate
  (with two models not paired by seed: the two models' seed parts add, each over its own k).
- Interval: estimate +- t * standard error, t the Student quantile on
  ``total / sum_g(seed_g / (k_g - 1))`` degrees of freedom (total: the variance above; seed_g:
  model g's seed part): k - 1 when the seeds dominate (the classic t interval over seeds), the
  normal quantile when the rows do. Welch-Satterthwaite's ``total^2 / sum_g(seed_g^2 / (k_g - 1))``
  (Satterthwaite 1946) is largest exactly when k = 3 seeds underestimate their variance and
  covers 0.92 when rows hold 10-30% of it; the first power of the seed share covers 0.942-0.963
  (k = 3) and 0.951-0.960 (k = 5) at every row share in an exact simulation of the normal model.
  A plain bootstrap over k = 3 seeds drawn with replacement (``method="percentile"``, kept for
  comparison) under-covers: its seed variance is (k - 1)/k of the sample's and its quantiles
  ignore that the variance is estimated from k values (~72% in the seed-only limit).
  ``tests/unit/test_coverage.py`` and ``bench/results/coverage.json`` measure both.
- Pairing: seed s of two models is one unit when the two share something through the seed
  (the same network with an expert masked; the same seed, hence the same data order and
  initialisation draw): ``paired_seeds=True`` takes the per-seed differences, whose spread
  is what is left of the seed noise after what the two share cancels.
- Relative change (candidate / baseline - 1): the same decomposition of its linearisation
  (the delta method, with the seed means as the expansion point).
- One seed per model: only the row part can be estimated (``seeds == 1`` in the interval):
  the interval says nothing about seed-to-seed variation.
- Resamples whose values are not all finite (e.g. no positive drawn) are dropped;
  ``resamples`` says how many were used. The estimate is the metric on the data as given.
- Speed: per-scorer work is done once per (model, seed), not per resample: sums of per-row
  terms cost two dot products per resample, AUC-PR / ROC-AUC one bincount over precomputed runs
  of equal scores, calibration errors a few cumulative sums; the shared row-count draw is the
  floor (``bench/bootstrap.py``, ``bench/results/bootstrap.md``).

A metric is a name from ``calibration.bootstrap_scorers.METRICS`` ("auc_pr", "excess_log_loss", ...), one of the
``core.metrics`` functions those names stand for (``average_precision`` ...), or any
callable ``metric(labels, true_ctr, scores, sample_weight, **aligned) -> float``: labels and
true_ctr are (n,) or None when not given, ``aligned`` the extra per-row arrays passed to the
bootstrap (e.g. ``base_rate`` for ``signal_gain``), all in the same row order as scores.

Rows are resampled as one pool: for per-slot intervals call once per slot with that slot's
rows (a pooled interval then lets slot sizes vary, as they do from one test window to the next).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from calibration.bootstrap_scorers import Metric, named_metric, prepare_scorer, resolve_metric
from calibration.student_t import student_t_quantile

METHODS = ("seed-t", "percentile")


@dataclass(frozen=True)
class BootstrapInterval:
    """A point estimate with its interval [lo, hi] (method: module docstring).

    standard_error, degrees_of_freedom and seed_share are the seed-t interval's (NaN / inf for
    the percentile one); seeds: the seed units the seed variance was estimated from (1: rows
    only)."""

    estimate: float
    lo: float
    hi: float
    resamples: int              # B: resamples with finite values, the ones the interval uses
    confidence: float = 0.95
    standard_error: float = float("nan")
    degrees_of_freedom: float = float("inf")
    seeds: int = 1
    method: str = "seed-t"
    seed_share: float = float("nan")     # the seed part's share of the variance (seed-t)

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval is on one side of 0 (a resolved difference)."""
        return bool(self.lo > 0 or self.hi < 0)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0

    def covers(self, value: float) -> bool:
        return bool(self.lo <= value <= self.hi)


@dataclass(frozen=True)
class MetricChange:
    """candidate vs baseline on the same rows: the metric of each, and the change with CIs.

    absolute = candidate - baseline; relative = candidate / baseline - 1 (0.05 = +5%), each
    with its interval; paired_seeds: whether seed s of one was paired with seed s of the other.
    """

    baseline: float
    candidate: float
    absolute: BootstrapInterval
    relative: BootstrapInterval
    paired_seeds: bool = False

    @property
    def excludes_zero(self) -> bool:
        return self.absolute.excludes_zero


# ----------------------------------------------------------------------------- models, seeds, resamples
class _Model:
    """A model's seeds, each prepared once."""

    def __init__(self, metric: str | Metric, scores, n: int | None, labels, true_ctr, aligned):
        seeds = _seed_arrays(scores)
        n = n if n is not None else seeds[0].size
        for s in seeds:
            if s.shape != (n,):
                raise ValueError(f"every score array must have shape ({n},), got {s.shape}")
        _check_rows(n, labels, true_ctr, aligned)
        self.n = n
        self.seeds = [prepare_scorer(metric, s, labels, true_ctr, aligned) for s in seeds]

    def per_seed(self, counts: np.ndarray | None) -> np.ndarray:
        """(k,): each seed's metric under row counts ``counts`` (None: each row once)."""
        return np.array([s.value(counts) for s in self.seeds])


def _seed_arrays(scores) -> list[np.ndarray]:
    """One (n,) float array per seed from (n,), (seeds, n) or a list of (n,) arrays."""
    if isinstance(scores, (list, tuple)) and len(scores) and np.ndim(scores[0]) == 1:
        return [np.asarray(s, dtype=np.float64) for s in scores]
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        return [array]
    if array.ndim == 2:
        return list(array)
    raise ValueError(f"scores must be (n,) or (seeds, n), got shape {array.shape}")


def _columns(labels, true_ctr, aligned):
    labels = None if labels is None else np.asarray(labels, dtype=np.float64)
    true_ctr = None if true_ctr is None else np.asarray(true_ctr, dtype=np.float64)
    aligned = {k: np.asarray(v, dtype=np.float64) for k, v in (aligned or {}).items()}
    return labels, true_ctr, aligned


def _check_rows(n: int, labels, true_ctr, aligned):
    for name, values in (("labels", labels), ("true_ctr", true_ctr), *aligned.items()):
        if values is not None and values.ndim and values.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {values.shape}")


def _row_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """How often each of n rows is drawn in n draws with replacement (multinomial(n, 1/n))."""
    return np.bincount(rng.integers(0, n, n, dtype=np.int64), minlength=n).astype(np.float64)


def _replicates(models: list[_Model], rng: np.random.Generator, resamples: int) -> list[np.ndarray]:
    """Per model, (resamples, k) per-seed metrics, every seed of every model on one count vector
    per resample; resamples where any value is not finite are dropped (from every model)."""
    values = [np.empty((resamples, len(m.seeds))) for m in models]
    for r in range(resamples):
        counts = _row_counts(rng, models[0].n)
        for model, out in zip(models, values):
            out[r] = model.per_seed(counts)
    finite = np.logical_and.reduce([np.isfinite(v).all(axis=1) for v in values])
    return [v[finite] for v in values]


# ----------------------------------------------------------------------------- the seed-t interval
@dataclass(frozen=True)
class _Group:
    """coefficient x the mean over k seed units: one term of a linear contrast of seed means.
    point: (k,) the units' values on the data; replicates: (B, k) under the row resamples."""

    coefficient: float
    point: np.ndarray
    replicates: np.ndarray


def _block_covariance(a: np.ndarray, b: np.ndarray, same: bool) -> float:
    """Mean covariance over the resamples between units of ``a`` and ``b`` (B, k each): between
    *different* units when ``same`` (the test set's part common to the seeds), all pairs
    otherwise; a single unit's variance when ``same`` and k == 1."""
    if a.shape[0] < 2:
        return float("nan")
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    cov = da.T @ db / (a.shape[0] - 1)                                  # (ka, kb)
    if not same:
        return float(cov.mean())
    k = cov.shape[0]
    if k == 1:
        return float(cov[0, 0])
    return float((cov.sum() - np.trace(cov)) / (k * (k - 1)))


def _seed_t_interval(estimate: float, groups: list[_Group], confidence: float) -> BootstrapInterval:
    resamples = groups[0].replicates.shape[0]
    if resamples < 2 or not np.isfinite(estimate):
        return BootstrapInterval(float(estimate), float("nan"), float("nan"), resamples, confidence)
    rows = sum(g.coefficient * h.coefficient * _block_covariance(g.replicates, h.replicates, g is h)
               for g in groups for h in groups)
    rows = max(rows, 0.0)                  # the bootstrap's estimate of the common part can dip below 0
    seed_terms = [(g.coefficient ** 2 * np.var(g.point, ddof=1) / g.point.size, g.point.size - 1)
                  for g in groups if g.point.size > 1]
    seeds = sum(term for term, _ in seed_terms)
    variance = rows + seeds
    denominator = sum(term / df for term, df in seed_terms)          # df: module docstring
    df = variance / denominator if denominator > 0 else float("inf")
    se = math.sqrt(variance)
    half = student_t_quantile((1 + confidence) / 2, df) * se if se > 0 else 0.0
    units = max(g.point.size for g in groups)
    return BootstrapInterval(float(estimate), float(estimate - half), float(estimate + half), resamples,
                             confidence, se, float(df), units, "seed-t", seeds / variance if variance > 0 else 0.0)


def _percentile_interval(estimate: float, values: np.ndarray, confidence: float) -> BootstrapInterval:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return BootstrapInterval(float(estimate), float("nan"), float("nan"), 0, confidence, method="percentile")
    lo, hi = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return BootstrapInterval(float(estimate), float(lo), float(hi), int(finite.size), confidence,
                             method="percentile")


def _seed_draw_means(rng: np.random.Generator, replicates: np.ndarray) -> np.ndarray:
    """(B,): per resample the mean over k seeds drawn with replacement (the two-level bootstrap)."""
    draws = rng.integers(0, replicates.shape[1], replicates.shape)
    return np.take_along_axis(replicates, draws, axis=1).mean(axis=1)


def _check_method(method: str):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# ----------------------------------------------------------------------------- the two entry points
def bootstrap_metric(metric: str | Metric, scores, *, labels=None, true_ctr=None, resamples: int = 200,
                     confidence: float = 0.95, seed: int = 0, method: str = "seed-t",
                     aligned: Mapping[str, np.ndarray] | None = None) -> BootstrapInterval:
    """The seed-averaged metric of one model with its interval (method: module docstring).

    scores: (n,), or one (n,) array per training seed ((seeds, n) or a list); labels, true_ctr:
    (n,) where the metric needs them; aligned: extra (n,) arrays (or scalars) passed to the
    metric by keyword. seed: the numpy Generator's seed (same seed, same interval).
    """
    _check_method(method)
    labels, true_ctr, aligned = _columns(labels, true_ctr, aligned)
    metric = named_metric(metric)
    resolve_metric(metric)                         # unknown names fail before any work
    model = _Model(metric, scores, None, labels, true_ctr, aligned)
    rng = np.random.default_rng(seed)
    point = model.per_seed(None)
    (replicates,) = _replicates([model], rng, resamples)
    estimate = float(point.mean())
    if method == "percentile":
        return _percentile_interval(estimate, _seed_draw_means(rng, replicates), confidence)
    return _seed_t_interval(estimate, [_Group(1.0, point, replicates)], confidence)


def paired_bootstrap(metric: str | Metric, baseline, candidate, *, labels=None, true_ctr=None,
                     resamples: int = 200, confidence: float = 0.95, seed: int = 0, paired_seeds: bool = False,
                     method: str = "seed-t", aligned: Mapping[str, np.ndarray] | None = None) -> MetricChange:
    """metric(candidate) - metric(baseline) on the same rows, each averaged over its seeds.

    baseline, candidate: each (n,), or one (n,) array per training seed ((seeds, n) or a list)
    scoring the same n rows in the same order; labels, true_ctr, aligned: as
    ``bootstrap_metric``. Every resample scores both models on one row-count vector (paired
    over rows). ``paired_seeds``: seed s of the candidate shares its network or its data order
    with seed s of the baseline (equal seed counts required), so the per-seed differences are
    the units; otherwise the two models' seeds are independent and may differ in number.

    Returns the two metrics, the absolute change (candidate - baseline) and the relative change
    (candidate / baseline - 1), each with its interval (method: module docstring).
    """
    _check_method(method)
    labels, true_ctr, aligned = _columns(labels, true_ctr, aligned)
    metric = named_metric(metric)
    resolve_metric(metric)                         # unknown names fail before any work
    base = _Model(metric, baseline, None, labels, true_ctr, aligned)
    cand = _Model(metric, candidate, base.n, labels, true_ctr, aligned)
    if paired_seeds and len(base.seeds) != len(cand.seeds):
        raise ValueError(f"paired seeds need as many baseline as candidate seeds, got {len(base.seeds)} "
                         f"and {len(cand.seeds)}")
    rng = np.random.default_rng(seed)
    base_point, cand_point = base.per_seed(None), cand.per_seed(None)
    base_reps, cand_reps = _replicates([base, cand], rng, resamples)
    base_estimate, cand_estimate = float(base_point.mean()), float(cand_point.mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        relative_estimate = cand_estimate / base_estimate - 1.0 if base_estimate != 0 else float("nan")
    if method == "percentile":
        if paired_seeds:
            draws = rng.integers(0, len(base.seeds), base_reps.shape)
            base_values = np.take_along_axis(base_reps, draws, axis=1).mean(axis=1)
            cand_values = np.take_along_axis(cand_reps, draws, axis=1).mean(axis=1)
        else:
            base_values, cand_values = _seed_draw_means(rng, base_reps), _seed_draw_means(rng, cand_reps)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative_values = cand_values / base_values - 1.0
        absolute = _percentile_interval(cand_estimate - base_estimate, cand_values - base_values, confidence)
        relative = _percentile_interval(relative_estimate, relative_values, confidence)
    else:
        # relative: the delta method's linearisation c/b - 1 ~ c/B - (C/B^2) b around the seed means
        scale = 1.0 / base_estimate if base_estimate != 0 else float("nan")
        slope = -cand_estimate * scale * scale
        if paired_seeds:
            absolute_groups = [_Group(1.0, cand_point - base_point, cand_reps - base_reps)]
            relative_groups = [_Group(1.0, scale * cand_point + slope * base_point,
                                      scale * cand_reps + slope * base_reps)]
        else:
            absolute_groups = [_Group(1.0, cand_point, cand_reps), _Group(-1.0, base_point, base_reps)]
            relative_groups = [_Group(scale, cand_point, cand_reps), _Group(slope, base_point, base_reps)]
        absolute = _seed_t_interval(cand_estimate - base_estimate, absolute_groups, confidence)
        relative = (_seed_t_interval(relative_estimate, relative_groups, confidence) if np.isfinite(scale)
                    else _seed_t_interval(float("nan"), relative_groups, confidence))
    return MetricChange(baseline=base_estimate, candidate=cand_estimate, absolute=absolute, relative=relative,
                        paired_seeds=bool(paired_seeds))
