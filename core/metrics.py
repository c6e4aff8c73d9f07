"""Ranking and calibration metrics: the one place each metric is defined.

numpy, following scikit-learn (ties handled by distinct thresholds; the tests hold them to it).
Training-time validation, bootstrap resamples and the evaluation tables use the same functions:
``calibration.slot_tables`` applies ``score_metrics``/``truth_summary`` to each segment's rows on
Spark's executors, so no metric has a second definition.

Every numpy metric takes an optional ``sample_weight`` (n,): a row of weight w counts as w
copies of that row, so integer weights give exactly the metric of the repeated rows. The
bootstrap (``calibration.bootstrap``) resamples by weights (how often each row was drawn)
instead of copying rows.

Label-free metrics (``expected_log_loss``, ``excess_log_loss``, ``signal_gain``,
``true_calibration_ratio``, ``oracle_ece``) compare predictions with ``true_ctr``, the true
click probability of each row (synthetic data): they are expectations over the label, so the
label noise that dominates AUC-PR on a few hundred clicks is absent from them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

LOG_LOSS_EPS = 1e-7             # predictions are clipped to [eps, 1 - eps] before any log


def _weights(sample_weight, n: int) -> np.ndarray | None:
    """None (every row counts once) or the weights as float64 (n,)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    return w


def _score_runs_descending(labels, scores, sample_weight):
    """Per distinct score, highest first: (positive weight, negative weight) of its rows.

    The stable ascending sort, reversed, runs in linear time on input already sorted by score
    (the bootstrap sorts each scorer's rows once); order within a tie does not matter
    because only whole runs of equal scores are used.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    w = _weights(sample_weight, s.size)
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    if w is None:
        tps = np.cumsum(y)[last_of_run]
        fps = last_of_run + 1 - tps
    else:
        w = w[order]
        tps = np.cumsum(w * y)[last_of_run]
        fps = np.cumsum(w * (1.0 - y))[last_of_run]
    return np.diff(np.r_[0.0, tps]), np.diff(np.r_[0.0, fps])


def average_precision(labels: np.ndarray, scores: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """AUC-PR as average precision: sum_k (R_k - R_{k-1}) P_k over distinct thresholds.

    labels, scores, sample_weight: (n,). NaN when there is no positive weight.
    """
    if np.asarray(scores).size == 0:
        return float("nan")
    pos, neg = _score_runs_descending(labels, scores, sample_weight)
    tps, fps = np.cumsum(pos), np.cumsum(neg)
    positives = tps[-1]
    if positives <= 0:
        return float("nan")
    predicted = tps + fps
    # a run of zero-weight rows at the top has no precision; it adds no recall either
    precision = np.divide(tps, predicted, out=np.zeros_like(tps), where=predicted > 0)
    return float(np.sum(pos / positives * precision))


def roc_auc(labels: np.ndarray, scores: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """ROC-AUC: P(score of a positive > score of a negative) + P(tie) / 2 (Mann-Whitney U).

    labels, scores, sample_weight: (n,). Per distinct score (highest first), its negatives rank
    below every positive of a higher score and tie with half of their own run's positives.
    NaN without both classes.
    """
    if np.asarray(scores).size == 0:
        return float("nan")
    pos, neg = _score_runs_descending(labels, scores, sample_weight)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos <= 0 or n_neg <= 0:
        return float("nan")
    return float(np.sum(neg * (np.cumsum(pos) - pos / 2.0)) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = LOG_LOSS_EPS,
             sample_weight: np.ndarray | None = None) -> float:
    """Mean binary cross-entropy of ``probs`` (clipped to [eps, 1 - eps]) against 0/1 labels."""
    return expected_log_loss(labels, probs, eps, sample_weight)


def normalized_entropy(labels: np.ndarray, probs: np.ndarray, eps: float = LOG_LOSS_EPS,
                       sample_weight: np.ndarray | None = None) -> float:
    """Log loss divided by the entropy of the segment's own CTR (He et al., ADKDD'14): 1 = no
    better than predicting the base rate, lower is better. NaN without clicks or non-clicks."""
    y = np.asarray(labels, np.float64)
    w = _weights(sample_weight, y.size)
    ctr = float(np.average(y, weights=w)) if y.size else float("nan")
    if not 0.0 < ctr < 1.0:
        return float("nan")
    entropy = -(ctr * np.log(ctr) + (1.0 - ctr) * np.log1p(-ctr))
    return log_loss(y, probs, eps, sample_weight) / entropy


def cross_entropy_terms(true_ctr: np.ndarray, probs: np.ndarray, eps: float = LOG_LOSS_EPS) -> np.ndarray:
    """Per row (n,): -[t log p + (1 - t) log(1 - p)], p clipped to [eps, 1 - eps] (t may be a 0/1 label)."""
    t = np.asarray(true_ctr, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return -(t * np.log(p) + (1 - t) * np.log1p(-p))


def _xlogx(x: np.ndarray) -> np.ndarray:
    """x log x with 0 log 0 = 0."""
    return x * np.log(np.where(x > 0, x, 1.0))


def kl_terms(true_ctr: np.ndarray, probs: np.ndarray, eps: float = LOG_LOSS_EPS) -> np.ndarray:
    """Per row (n,): KL(Bernoulli(t) || Bernoulli(p)) = t log(t/p) + (1-t) log((1-t)/(1-p)), p clipped."""
    t = np.asarray(true_ctr, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return _xlogx(t) - t * np.log(p) + _xlogx(1 - t) - (1 - t) * np.log1p(-p)


def expected_log_loss(true_ctr: np.ndarray, probs: np.ndarray, eps: float = LOG_LOSS_EPS,
                      sample_weight: np.ndarray | None = None) -> float:
    """E[log loss of probs] when each row's label is Bernoulli(true_ctr): the cross-entropy

        LL(p) = -mean_i [t_i log p_i + (1 - t_i) log(1 - p_i)],   p clipped to [eps, 1 - eps]

    true_ctr, probs, sample_weight: (n,). With 0/1 labels in place of true_ctr it is
    ``log_loss``; with true_ctr it has no label noise.
    """
    terms = cross_entropy_terms(true_ctr, probs, eps)
    return float(np.average(terms, weights=_weights(sample_weight, terms.size)))


def excess_log_loss(true_ctr: np.ndarray, probs: np.ndarray, eps: float = LOG_LOSS_EPS,
                    sample_weight: np.ndarray | None = None) -> float:
    """Expected log loss of ``probs`` minus the oracle's: mean_i KL(Bernoulli(t_i) || Bernoulli(p_i)).

        KL(t || p) = t log(t / p) + (1 - t) log((1 - t) / (1 - p)),   p clipped to [eps, 1 - eps]

    true_ctr, probs, sample_weight: (n,). 0 for the oracle (p = t), > 0 for anything else; lower
    is better. It is the part of log loss a model can change: log loss = entropy of the labels
    (fixed by the data) + this. Equals expected_log_loss(t, p) - expected_log_loss(t, t)
    wherever t lies in [eps, 1 - eps].
    """
    terms = kl_terms(true_ctr, probs, eps)
    return float(np.average(terms, weights=_weights(sample_weight, terms.size)))


def signal_gain_terms(true_ctr: np.ndarray, probs: np.ndarray, base_rate, eps: float = LOG_LOSS_EPS) -> np.ndarray:
    """Per row (n,): cross-entropy of the base rate minus that of probs, both against true_ctr."""
    t = np.asarray(true_ctr, dtype=np.float64)
    base = np.broadcast_to(np.asarray(base_rate, dtype=np.float64), t.shape)
    return cross_entropy_terms(t, base, eps) - cross_entropy_terms(t, probs, eps)


def signal_gain(true_ctr: np.ndarray, probs: np.ndarray, base_rate, eps: float = LOG_LOSS_EPS,
                sample_weight: np.ndarray | None = None) -> float:
    """gain(p) = LL(base) - LL(p): how much expected log loss ``probs`` removes vs a constant rate.

    true_ctr, probs, sample_weight: (n,); base_rate: a scalar, or (n,) (e.g. each row's slot
    base rate, so a pooled gain is measured against per-slot constants). LL is
    ``expected_log_loss`` against true_ctr. The oracle has the largest gain possible;
    ``signal_fraction`` compares two gains (the issue's gain(CAMoE) >= 0.95 gain(ceiling)).
    """
    terms = signal_gain_terms(true_ctr, probs, base_rate, eps)
    return float(np.average(terms, weights=_weights(sample_weight, terms.size)))


def signal_fraction(true_ctr: np.ndarray, probs: np.ndarray, reference: np.ndarray, base_rate,
                    eps: float = LOG_LOSS_EPS, sample_weight: np.ndarray | None = None) -> float:
    """gain(probs) / gain(reference), both ``signal_gain`` against the same base rate.

    With reference = the ceiling (or the oracle) it is the share of the learnable (or of all)
    signal a model captures. NaN when the reference has no gain.
    """
    reference_gain = signal_gain(true_ctr, reference, base_rate, eps, sample_weight)
    if not reference_gain > 0:
        return float("nan")
    return signal_gain(true_ctr, probs, base_rate, eps, sample_weight) / reference_gain


def calibration_ratio(labels: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """sum p / sum y: 1.0 is calibrated in aggregate, > 1 over-predicts."""
    y = np.asarray(labels, dtype=np.float64)
    w = _weights(sample_weight, y.size)
    p = np.asarray(probs, dtype=np.float64)
    clicks, predicted = (y.sum(), p.sum()) if w is None else (w @ y, w @ p)
    return float(predicted / clicks) if clicks > 0 else float("nan")


def true_calibration_ratio(true_ctr: np.ndarray, probs: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """sum p / sum true_ctr: predicted clicks over expected clicks (no label noise); 1.0 is calibrated."""
    return calibration_ratio(true_ctr, probs, sample_weight)


ECE_SCHEMES = ("equal_mass", "equal_width")


def bin_edges(probs: np.ndarray, bins: int, scheme: str, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """The ``bins - 1`` inner edges; a prediction's bin is the number of edges below it.

    equal_mass: edges are the k/bins quantiles of the predictions (the lower order statistic),
    so every bin holds ~n/bins predictions (the paper's ECE: predicted CTRs crowd near 0 and
    equal-width bins would put nearly all in bin 0).
    With weights, the k-th edge is the smallest prediction whose cumulative weight reaches
    k/bins of the total (integer weights: the edges of the repeated rows).
    equal_width: k/bins.
    """
    if scheme == "equal_width":
        return np.arange(1, bins) / bins
    if scheme != "equal_mass":
        raise ValueError(f"scheme must be one of {ECE_SCHEMES}, got {scheme!r}")
    p = np.asarray(probs, dtype=np.float64)
    w = _weights(sample_weight, p.size)
    order = np.argsort(p, kind="stable")       # linear on presorted input (bootstrap)
    p = p[order]
    if w is None:
        ranks = np.ceil(np.arange(1, bins) / bins * p.size).astype(int) - 1
    else:
        cumulative = np.cumsum(w[order])
        # first row whose cumulative weight reaches the target: the same float comparison as
        # ceil(target) - 1 makes for unit weights, so both branches agree on repeated rows
        ranks = np.searchsorted(cumulative, np.arange(1, bins) / bins * cumulative[-1], side="left")
    return p[np.clip(ranks, 0, p.size - 1)]


def _bin_totals(values: np.ndarray, probs: np.ndarray, bins: int, scheme: str, sample_weight=None):
    """(bin index per row, and per bin 0..bins-1: weight, sum of w p, sum of w values)."""
    p = np.asarray(probs, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    w = _weights(sample_weight, p.size)
    index = np.searchsorted(bin_edges(p, bins, scheme, w), p, side="left")
    rows = np.bincount(index, weights=w, minlength=bins)
    sum_pred = np.bincount(index, weights=p if w is None else w * p, minlength=bins)
    sum_value = np.bincount(index, weights=v if w is None else w * v, minlength=bins)
    return index, rows, sum_pred, sum_value


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int, scheme: str,
                     sample_weight: np.ndarray | None = None) -> list[dict]:
    """Per non-empty bin: rows, sum of predictions and of labels, min and max prediction.

    With weights, rows and sums are weighted (float) and zero-weight rows are left out, so
    integer weights give the bins of the repeated rows.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = _weights(sample_weight, p.size)
    if w is not None:
        kept = w > 0
        p, y, w = p[kept], y[kept], w[kept]
    index, rows, sum_pred, sum_label = _bin_totals(y, p, bins, scheme, w)
    out = []
    for b in np.unique(index):
        in_bin = p[index == b]
        out.append({"bin": int(b), "rows": int(rows[b]) if w is None else float(rows[b]),
                    "sum_pred": float(sum_pred[b]), "sum_label": float(sum_label[b]),
                    "min_pred": float(in_bin.min()), "max_pred": float(in_bin.max())})
    return out


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15,
                               scheme: str = "equal_mass", sample_weight: np.ndarray | None = None) -> float:
    """ECE = sum_b |sum_{i in b} y_i - sum_{i in b} p_i| / n over ``bins`` bins of ``scheme``."""
    if np.asarray(labels).size == 0:
        return float("nan")
    _, rows, sum_pred, sum_label = _bin_totals(labels, probs, bins, scheme, sample_weight)
    total = rows.sum()
    return float(np.abs(sum_label - sum_pred).sum() / total) if total > 0 else float("nan")


def debiased_squared_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15,
                                       scheme: str = "equal_mass", sample_weight: np.ndarray | None = None) -> float:
    """Squared calibration error with the estimation noise taken out, per bin of ``scheme``:

        sum_b (n_b / n) [ dbar_b^2 - s_b^2 / n_b ],   d_i = y_i - p_i,

    dbar_b the bin's mean of d and s_b^2 its sample variance. dbar_b^2 overstates the squared
    gap by the variance of dbar_b, s_b^2 / n_b, so each term is unbiased for the bin's squared
    gap (Kumar, Liang and Ma, "Verified Uncertainty Calibration", NeurIPS 2019, debias the
    squared error the same way with the label variance ybar(1 - ybar) / (n_b - 1); the variance
    of y - p also counts the spread of the predictions within the bin). A calibrated scorer
    gets ~0, negative about as often as positive, where the plug-in ECE sits above 0 by its
    noise floor; ``rms_calibration_error`` gives it on the probability scale. Weights are
    frequency weights (a bootstrap's row counts); bins with fewer than two rows add their
    plug-in term. NaN without rows.
    """
    p = np.asarray(probs, dtype=np.float64)
    d = np.asarray(labels, dtype=np.float64) - p
    if p.size == 0:
        return float("nan")
    w = _weights(sample_weight, p.size)
    index = np.searchsorted(bin_edges(p, bins, scheme, w), p, side="left")
    rows = np.bincount(index, weights=w, minlength=bins)
    total = rows.sum()
    if total <= 0:
        return float("nan")
    sum_d = np.bincount(index, weights=d if w is None else w * d, minlength=bins)
    sum_d2 = np.bincount(index, weights=d * d if w is None else w * d * d, minlength=bins)
    return float(debiased_bin_terms(rows, sum_d, sum_d2).sum() / total)


def debiased_bin_terms(rows: np.ndarray, sum_d: np.ndarray, sum_d2: np.ndarray) -> np.ndarray:
    """Per bin n_b [dbar^2 - s^2 / n_b] from its weight, sum of d and sum of d^2 (bins with
    fewer than two rows: n_b dbar^2; empty bins: 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(rows > 0, sum_d / rows, 0.0)
        variance = np.where(rows > 1, (sum_d2 - rows * mean * mean) / (rows - 1), 0.0)
        return rows * mean * mean - variance


def rms_calibration_error(squared: float) -> float:
    """sqrt of a (debiased) squared calibration error, 0 where the estimate is below 0."""
    return float(math.sqrt(max(squared, 0.0))) if squared == squared else float("nan")


def oracle_ece(true_ctr: np.ndarray, probs: np.ndarray, bins: int = 15, scheme: str = "equal_mass",
               sample_weight: np.ndarray | None = None) -> float:
    """ECE against the true click probability: sum_b |sum_{i in b} t_i - sum_{i in b} p_i| / n.

    The bins are ``expected_calibration_error``'s (edges from the predictions, ``bin_edges``);
    each bin compares mean pCTR with mean true_ctr instead of the observed click rate, so a
    calibrated scorer gets ~0 however few clicks a bin holds (label ECE has a noise floor).
    """
    return expected_calibration_error(true_ctr, probs, bins, scheme, sample_weight)


def wilson_interval(successes, trials, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion: (lo, hi), each shaped like the inputs.

        center = (k + z^2/2) / (n + z^2),  half = z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2)

    with z the two-sided normal quantile of ``confidence``. Unlike the normal (Wald) interval
    it stays inside [0, 1] and is not zero-width at 0 clicks, which is what small CTR bins
    have. NaN where trials == 0.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        center = (k + z * z / 2) / (n + z * z)
        half = z * np.sqrt(np.maximum(k * (n - k) / n, 0.0) + z * z / 4) / (n + z * z)
        rate = k / n                    # at 0 or n clicks center -/+ half is the rate up to rounding:
        lo = np.where(n > 0, np.clip(np.minimum(center - half, rate), 0.0, 1.0), np.nan)   # keep it inside
        hi = np.where(n > 0, np.clip(np.maximum(center + half, rate), 0.0, 1.0), np.nan)
    return lo, hi


# ----------------------------------------------------------------------------- one segment
def score_metrics(labels: np.ndarray, scores: np.ndarray, bins: int, schemes: Sequence[str] = ECE_SCHEMES
                  ) -> tuple[dict, list[dict]]:
    """Every label metric of one segment's scores, and its reliability bins.

    labels, scores: (n,), n > 0. Returns ({rows, positives, ctr, mean_pred, auc_pr, roc_auc,
    log_loss, normalized_entropy, calibration_ratio, ece_<scheme>, rms_ce_debiased (equal-mass bins:
    ``debiased_squared_calibration_error``'s root)}, [{scheme, bin, rows,
    sum_pred, sum_label, min_pred, max_pred} per non-empty bin]). Undefined metrics are NaN
    (AUC-PR without clicks, ...). ``calibration.slot_tables`` runs it per segment on executors.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    positives = float(y.sum())
    metrics = {"rows": int(y.size), "positives": int(positives), "ctr": positives / y.size,
               "mean_pred": float(p.mean()), "auc_pr": average_precision(y, p), "roc_auc": roc_auc(y, p),
               "log_loss": log_loss(y, p), "normalized_entropy": normalized_entropy(y, p),
               "calibration_ratio": calibration_ratio(y, p)}
    bin_rows = []
    for scheme in schemes:
        rows = reliability_bins(y, p, bins, scheme)
        metrics[f"ece_{scheme}"] = sum(abs(r["sum_label"] - r["sum_pred"]) for r in rows) / y.size
        bin_rows += [{"scheme": scheme, **r} for r in rows]
    metrics["rms_ce_debiased"] = rms_calibration_error(debiased_squared_calibration_error(y, p, bins, "equal_mass"))
    return metrics, bin_rows


def truth_summary(true_ctr: np.ndarray, scores: np.ndarray, base_rate, ceiling: np.ndarray | None = None) -> dict:
    """The label-free metrics of one segment's scores against true_ctr (rows whose truth is
    known): excess_log_loss, true_calibration_ratio, signal_gain (vs ``base_rate``: a scalar or
    each row's) and its fractions of the oracle's and the ``ceiling``'s gain, the latter on the
    rows that have a ceiling (NaN where that gain is not positive, or without a ceiling)."""
    t = np.asarray(true_ctr, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    base = np.broadcast_to(np.asarray(base_rate, dtype=np.float64), t.shape)
    of_ceiling = float("nan")
    if ceiling is not None:
        c = np.asarray(ceiling, dtype=np.float64)
        known = ~np.isnan(c)
        if known.any():
            of_ceiling = signal_fraction(t[known], p[known], c[known], base[known])
    return {"excess_log_loss": excess_log_loss(t, p), "true_calibration_ratio": true_calibration_ratio(t, p),
            "signal_gain": signal_gain(t, p, base), "signal_fraction_of_oracle": signal_fraction(t, p, t, base),
            "signal_fraction_of_ceiling": of_ceiling}
