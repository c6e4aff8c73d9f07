"""Bootstrap confidence intervals for a metric and for the change of a metric between two models.

Method (both functions):

- Examples are resampled with replacement: each resample draws n row indices uniformly and
  turns them into a count vector c (n,) (multinomial(n, 1/n)); the metric of the resample is
  the metric with ``sample_weight = c``, which equals the metric of the resampled rows
  (``core.metrics`` defines every metric with weights). No row is ever copied.
- Paired: in a paired comparison both models are scored on the *same* count vector in every
  resample, so what the two models share (which rows are hard, how many clicks the day had)
  cancels in the difference. That is what makes a difference resolvable when each model's
  own interval is wide.
- Seeds: a model may come with several training seeds, each a score array on the same rows.
  Its metric is the mean over seeds of the per-seed metric (seeds are averaged, not paired:
  seed k of one model has nothing in common with seed k of another). With
  ``resample_seeds`` (default) each resample also draws the model's seeds with replacement,
  independently per model, so the interval covers seed-to-seed variance too (a two-level
  bootstrap over test impressions and training seeds). With k seeds this understates the
  seed part of the variance by a factor (k - 1) / k (2/3 for 3 seeds).
- Interval: the percentile interval, the (1 - confidence)/2 and (1 + confidence)/2 quantiles
  of the resampled values; the estimate is the metric on the data as given (not the
  bootstrap mean). Resamples whose metric is not finite (e.g. no positive drawn) are dropped;
  ``resamples`` says how many were used.
- Speed: the per-scorer work is done once per (model, seed), not per resample. Named metrics
  that are sums of per-row terms (log losses, calibration ratios, signal gain) precompute the
  terms and cost two dot products per resample; AUC-PR and ROC-AUC precompute the runs of
  equal scores that hold a positive and cost one bincount of the counts per resample; the
  ECEs sort once and cost three cumulative sums. Any other metric (a callable) is evaluated on
  rows sorted by score once, with the counts permuted to match, so its own stable sorts run
  in linear time. The row-count draw (one per resample, shared by the models) is the floor.
  500k rows x 200 resamples, paired, one seed per model, on a loaded 2-core machine: ~2-3 s
  wall for AUC-PR, ROC-AUC or excess log loss, of which ~1.5 s is the draws
  (``bench/bootstrap.py``, ``bench/results/bootstrap.md``).

A metric is a name from ``calibration.bootstrap_scorers.METRICS`` ("auc_pr", "excess_log_loss", ...), one of the
``core.metrics`` functions those names stand for (``average_precision`` ...), or any
callable ``metric(labels, true_ctr, scores, sample_weight, **aligned) -> float``: labels and
true_ctr are (n,) or None when not given, ``aligned`` the extra per-row arrays passed to the
bootstrap (e.g. ``base_rate`` for ``signal_gain``), all in the same row order as scores.

Rows are resampled as one pool: for per-slot intervals call once per slot with that slot's
rows (a pooled interval then lets slot sizes vary, as they do from one test window to the next).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from calibration.bootstrap_scorers import Metric, named_metric, prepare_scorer, resolve_metric


@dataclass(frozen=True)
class BootstrapInterval:
    """A point estimate with its bootstrap percentile interval [lo, hi]."""

    estimate: float
    lo: float
    hi: float
    resamples: int              # B: resamples with a finite value, the ones the quantiles use
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval is on one side of 0 (a resolved difference)."""
        return bool(self.lo > 0 or self.hi < 0)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0


@dataclass(frozen=True)
class MetricChange:
    """candidate vs baseline on the same rows: the metric of each, and the change with CIs.

    absolute = candidate - baseline; relative = candidate / baseline - 1 (0.05 = +5%), each
    with its paired-bootstrap interval.
    """

    baseline: float
    candidate: float
    absolute: BootstrapInterval
    relative: BootstrapInterval

    @property
    def excludes_zero(self) -> bool:
        return self.absolute.excludes_zero


# ----------------------------------------------------------------------------- models, seeds, resamples
class _Model:
    """A model's seeds, each prepared once; its metric is the mean over (possibly resampled) seeds."""

    def __init__(self, metric: str | Metric, scores, n: int | None, labels, true_ctr, aligned):
        seeds = _seed_arrays(scores)
        n = n if n is not None else seeds[0].size
        for s in seeds:
            if s.shape != (n,):
                raise ValueError(f"every score array must have shape ({n},), got {s.shape}")
        _check_rows(n, labels, true_ctr, aligned)
        self.n = n
        self.seeds = [prepare_scorer(metric, s, labels, true_ctr, aligned) for s in seeds]

    def value(self, counts: np.ndarray | None, seed_draw: np.ndarray | None = None) -> float:
        if len(self.seeds) == 1:
            return self.seeds[0].value(counts)
        draw = range(len(self.seeds)) if seed_draw is None else seed_draw
        per_seed = {}
        for k in draw:                       # a seed drawn twice is evaluated once
            if k not in per_seed:
                per_seed[k] = self.seeds[k].value(counts)
        return sum(per_seed[k] for k in draw) / len(draw)

    def draw_seeds(self, rng: np.random.Generator, resample_seeds: bool) -> np.ndarray | None:
        k = len(self.seeds)
        return rng.integers(0, k, k) if resample_seeds and k > 1 else None


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


def _interval(estimate: float, values: np.ndarray, confidence: float) -> BootstrapInterval:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return BootstrapInterval(float(estimate), float("nan"), float("nan"), 0, confidence)
    lo, hi = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return BootstrapInterval(float(estimate), float(lo), float(hi), int(finite.size), confidence)


def bootstrap_metric(metric: str | Metric, scores, *, labels=None, true_ctr=None, resamples: int = 200,
                     confidence: float = 0.95, seed: int = 0, resample_seeds: bool = True,
                     aligned: Mapping[str, np.ndarray] | None = None) -> BootstrapInterval:
    """The metric of one model with its bootstrap percentile interval (method: module docstring).

    scores: (n,), or one (n,) array per training seed ((seeds, n) or a list); labels, true_ctr:
    (n,) where the metric needs them; aligned: extra (n,) arrays (or scalars) passed to the
    metric by keyword. seed: the numpy Generator's seed (same seed, same interval).
    """
    labels, true_ctr, aligned = _columns(labels, true_ctr, aligned)
    metric = named_metric(metric)
    resolve_metric(metric)                         # unknown names fail before any work
    model = _Model(metric, scores, None, labels, true_ctr, aligned)
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for r in range(resamples):
        counts = _row_counts(rng, model.n)
        values[r] = model.value(counts, model.draw_seeds(rng, resample_seeds))
    return _interval(model.value(None), values, confidence)


def paired_bootstrap(metric: str | Metric, baseline, candidate, *, labels=None, true_ctr=None,
                     resamples: int = 200, confidence: float = 0.95, seed: int = 0, resample_seeds: bool = True,
                     aligned: Mapping[str, np.ndarray] | None = None) -> MetricChange:
    """metric(candidate) - metric(baseline) on the same rows, with paired-bootstrap intervals.

    baseline, candidate: each (n,), or one (n,) array per training seed ((seeds, n) or a list;
    the two models may have different seed counts) scoring the same n rows in the same order;
    labels, true_ctr, aligned: as ``bootstrap_metric``. Every resample draws one row-count
    vector and scores both models on it (paired over rows); seeds are averaged per model and,
    with ``resample_seeds``, drawn with replacement per model (method: module docstring).

    Returns the two metrics, the absolute change (candidate - baseline) and the relative change
    (candidate / baseline - 1), each with estimate, lo, hi, resamples and excludes_zero.
    """
    labels, true_ctr, aligned = _columns(labels, true_ctr, aligned)
    metric = named_metric(metric)
    resolve_metric(metric)                         # unknown names fail before any work
    base = _Model(metric, baseline, None, labels, true_ctr, aligned)
    cand = _Model(metric, candidate, base.n, labels, true_ctr, aligned)
    rng = np.random.default_rng(seed)
    base_values, cand_values = np.empty(resamples), np.empty(resamples)
    for r in range(resamples):
        counts = _row_counts(rng, base.n)
        base_values[r] = base.value(counts, base.draw_seeds(rng, resample_seeds))
        cand_values[r] = cand.value(counts, cand.draw_seeds(rng, resample_seeds))
    base_estimate, cand_estimate = base.value(None), cand.value(None)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = cand_values / base_values - 1.0
        relative_estimate = cand_estimate / base_estimate - 1.0 if base_estimate != 0 else float("nan")
    return MetricChange(baseline=base_estimate, candidate=cand_estimate,
                        absolute=_interval(cand_estimate - base_estimate, cand_values - base_values, confidence),
                        relative=_interval(relative_estimate, relative, confidence))
