"""The metrics a bootstrap resamples, each prepared once per score array so that a resample
costs a few vector operations (calibration/bootstrap.py's module docstring gives the method and
the measured speed): sums of per-row terms as two dot products, AUC-PR and ROC-AUC from the runs
of equal scores, the ECEs from one sort, any other callable over rows presorted by score.

``prepare_scorer(metric, scores, labels, true_ctr, aligned).value(counts)`` is the metric of the
rows under row counts ``counts`` (None: each row once); every fast path computes the
``core.metrics`` definition with ``sample_weight = counts`` (tests/unit/test_metrics.py checks
each against it).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from core import metrics as m

Metric = Callable[..., float]


# ----------------------------------------------------------------------------- named metrics
ECE_BINS = 15


def _need(values, what: str, metric: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"metric {metric!r} needs {what}")
    return values


def _auc_pr(labels, true_ctr, scores, sample_weight, **_unused):
    return m.average_precision(_need(labels, "labels", "auc_pr"), scores, sample_weight)


def _roc_auc(labels, true_ctr, scores, sample_weight, **_unused):
    return m.roc_auc(_need(labels, "labels", "roc_auc"), scores, sample_weight)


def _log_loss(labels, true_ctr, scores, sample_weight, **_unused):
    return m.log_loss(_need(labels, "labels", "log_loss"), scores, sample_weight=sample_weight)


def _calibration_ratio(labels, true_ctr, scores, sample_weight, **_unused):
    return m.calibration_ratio(_need(labels, "labels", "calibration_ratio"), scores, sample_weight)


def _ece(labels, true_ctr, scores, sample_weight, **_unused):
    return m.expected_calibration_error(_need(labels, "labels", "ece_equal_mass"), scores, ECE_BINS,
                                        "equal_mass", sample_weight)


def _squared_ce_debiased(labels, true_ctr, scores, sample_weight, **_unused):
    return m.debiased_squared_calibration_error(_need(labels, "labels", "squared_ce_debiased"), scores, ECE_BINS,
                                                "equal_mass", sample_weight)


def _expected_log_loss(labels, true_ctr, scores, sample_weight, **_unused):
    return m.expected_log_loss(_need(true_ctr, "true_ctr", "expected_log_loss"), scores,
                               sample_weight=sample_weight)


def _excess_log_loss(labels, true_ctr, scores, sample_weight, **_unused):
    return m.excess_log_loss(_need(true_ctr, "true_ctr", "excess_log_loss"), scores, sample_weight=sample_weight)


def _true_calibration_ratio(labels, true_ctr, scores, sample_weight, **_unused):
    return m.true_calibration_ratio(_need(true_ctr, "true_ctr", "true_calibration_ratio"), scores, sample_weight)


def _oracle_ece(labels, true_ctr, scores, sample_weight, **_unused):
    return m.oracle_ece(_need(true_ctr, "true_ctr", "oracle_ece"), scores, ECE_BINS, "equal_mass", sample_weight)


def _signal_gain(labels, true_ctr, scores, sample_weight, base_rate=None, **_unused):
    return m.signal_gain(_need(true_ctr, "true_ctr", "signal_gain"), scores,
                         _need(base_rate, "aligned={'base_rate': ...}", "signal_gain"),
                         sample_weight=sample_weight)


# label metrics need labels, label-free ones true_ctr; the ECEs use ECE_BINS equal-mass bins (the
# evaluation's default, conf evaluation.ece_bins; for another count pass a callable)
METRICS: dict[str, Metric] = {
    "auc_pr": _auc_pr, "roc_auc": _roc_auc, "log_loss": _log_loss, "calibration_ratio": _calibration_ratio,
    "ece_equal_mass": _ece, "squared_ce_debiased": _squared_ce_debiased, "expected_log_loss": _expected_log_loss,
    "excess_log_loss": _excess_log_loss,
    "true_calibration_ratio": _true_calibration_ratio, "oracle_ece": _oracle_ece, "signal_gain": _signal_gain,
}


# the metric functions themselves may be passed too: they go to their named (fast) versions
_NAME_OF_FUNCTION = {m.average_precision: "auc_pr", m.roc_auc: "roc_auc", m.log_loss: "log_loss",
                     m.calibration_ratio: "calibration_ratio", m.expected_calibration_error: "ece_equal_mass",
                     m.debiased_squared_calibration_error: "squared_ce_debiased",
                     m.expected_log_loss: "expected_log_loss", m.excess_log_loss: "excess_log_loss",
                     m.true_calibration_ratio: "true_calibration_ratio", m.oracle_ece: "oracle_ece",
                     m.signal_gain: "signal_gain"}


def named_metric(metric: str | Metric) -> str | Metric:
    """``metrics.average_precision`` -> "auc_pr" etc.; anything else unchanged."""
    try:
        return _NAME_OF_FUNCTION.get(metric, metric)
    except TypeError:                        # an unhashable callable
        return metric


def resolve_metric(metric: str | Metric) -> Metric:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; named metrics: {sorted(METRICS)}")
    return METRICS[metric]


# ----------------------------------------------------------------------------- one scorer, prepared once
class _PresortedRows:
    """Any metric: one seed's rows sorted once by score, the counts permuted to match.

    The metrics' own stable sorts then run in linear time on each resample.
    """

    def __init__(self, metric: Metric, scores: np.ndarray, labels, true_ctr, aligned: Mapping[str, np.ndarray]):
        self.metric = metric
        self.order = np.argsort(scores, kind="stable")
        self.scores = scores[self.order]
        self.labels = None if labels is None else labels[self.order]
        self.true_ctr = None if true_ctr is None else true_ctr[self.order]
        self.aligned = {k: (v[self.order] if v.ndim else v) for k, v in aligned.items()}

    def value(self, counts: np.ndarray | None) -> float:
        weights = None if counts is None else counts[self.order]
        return float(self.metric(self.labels, self.true_ctr, self.scores, weights, **self.aligned))


class _RowRatio:
    """sum_i c_i a_i / sum_i c_i b_i (b = 1: a weighted mean): the metrics that are sums of per-row
    terms. Per resample two dot products; no sort, no permutation."""

    def __init__(self, numerator: np.ndarray, denominator: np.ndarray | None = None):
        self.numerator, self.denominator = numerator, denominator

    def value(self, counts: np.ndarray | None) -> float:
        if counts is None:
            top = self.numerator.sum()
            bottom = self.numerator.size if self.denominator is None else self.denominator.sum()
        else:
            top = counts @ self.numerator
            bottom = counts.sum() if self.denominator is None else counts @ self.denominator
        return float(top / bottom) if bottom > 0 else float("nan")


class _RankingRows:
    """``metrics.average_precision`` or ``metrics.roc_auc`` with the per-scorer work done once.

    Over runs r of equal score (highest first), with TP_r / A_r the positive / total weight at
    or above the end of run r, B_r the total weight above its start, pos_r its positive weight,
    P and N the positive and negative totals:

        AP      = sum_r pos_r / P * TP_r / A_r
        ROC-AUC = sum_r pos_r * (N - (A_r - TP_r) + ((A_r - B_r) - pos_r) / 2) / (P N)

    (ROC-AUC counted from the positives' side: the negatives below a run, and half of those
    tied with it.) Only runs holding a positive contribute, so a resample needs pos_r of those
    runs (a few thousand rows) and A_r, B_r at their ends and starts. For the latter each row is
    assigned once to the segment of sorted positions between consecutive boundaries; a resample
    sums its counts per segment in row order (one bincount into a table that fits in cache, ~6x
    faster than permuting the counts for a full cumulative sum).
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray, metric: str):
        self.metric = metric
        order = np.argsort(scores, kind="stable")[::-1]
        sorted_scores, sorted_labels = scores[order], labels[order]
        last_of_run = np.r_[np.nonzero(np.diff(sorted_scores))[0], scores.size - 1]
        first_of_run = np.r_[0, last_of_run[:-1] + 1]
        run_of_sorted_row = np.searchsorted(last_of_run, np.arange(scores.size), side="left")
        positive_rows = np.nonzero(sorted_labels > 0)[0]
        positive_runs, self.run_of_positive = np.unique(run_of_sorted_row[positive_rows], return_inverse=True)
        self.positive_rows = order[positive_rows]                # original row index of each positive
        self.positive_labels = sorted_labels[positive_rows]
        # boundaries 2k, 2k+1: the last sorted position above positive run k, and its last position
        boundaries = np.empty(2 * positive_runs.size, dtype=np.int64)
        boundaries[0::2] = first_of_run[positive_runs] - 1
        boundaries[1::2] = last_of_run[positive_runs]
        rank = np.empty(scores.size, dtype=np.int64)
        rank[order] = np.arange(scores.size)
        # a row's segment is the first boundary at or below which it sits; rows below the last
        # positive run fall past the end and are never summed
        self.segment_of_row = np.searchsorted(boundaries, rank, side="left")
        self.weight_at_or_above_unweighted = boundaries + 1.0
        self.positive_run_count = positive_runs.size
        self.rows = scores.size

    def value(self, counts: np.ndarray | None) -> float:
        if self.positive_rows.size == 0:
            return float("nan")
        k = self.positive_run_count
        if counts is None:
            positive_weight, total = self.positive_labels, float(self.rows)
            at_or_above = self.weight_at_or_above_unweighted
        else:
            positive_weight, total = counts[self.positive_rows] * self.positive_labels, counts.sum()
            at_or_above = np.cumsum(np.bincount(self.segment_of_row, weights=counts, minlength=2 * k + 1)[:2 * k])
        above_start, at_or_above_end = at_or_above[0::2], at_or_above[1::2]
        pos = np.bincount(self.run_of_positive, weights=positive_weight, minlength=k)
        true_positives = np.cumsum(pos)
        positives = true_positives[-1]
        if positives <= 0:
            return float("nan")
        if self.metric == "auc_pr":
            # a run with no rows at or above it has no true positives either: its term is 0
            precision = true_positives / np.where(at_or_above_end > 0, at_or_above_end, 1.0)
            return float(pos @ precision / positives)
        negatives = total - positives
        if negatives <= 0:
            return float("nan")
        negatives_below = negatives - (at_or_above_end - true_positives)
        negatives_tied = (at_or_above_end - above_start) - pos
        return float(pos @ (negatives_below + negatives_tied / 2.0) / (positives * negatives))


class _CalibrationBinRows:
    """``metrics.expected_calibration_error`` (values = labels) or ``oracle_ece`` (values =
    true_ctr) with the rows sorted by score once.

    Bins are contiguous ranges of the sorted rows, so a resample needs the cumulative weight,
    weight x prediction and weight x value along the sorted rows: equal-mass edges are read off
    the cumulative weight (as ``metrics.bin_edges`` does with weights), and each bin's sums are
    differences of the cumulative sums at its ends.
    """

    def __init__(self, values: np.ndarray, scores: np.ndarray, bins: int, scheme: str, debiased: bool = False):
        if scheme not in m.ECE_SCHEMES:
            raise ValueError(f"scheme must be one of {m.ECE_SCHEMES}, got {scheme!r}")
        self.order = np.argsort(scores, kind="stable")
        self.scores, self.values = scores[self.order], values[self.order]
        self.bins, self.scheme, self.debiased = bins, scheme, debiased

    def value(self, counts: np.ndarray | None) -> float:
        w = np.ones(self.scores.size) if counts is None else counts[self.order]
        weight = np.cumsum(w)
        if weight[-1] <= 0:
            return float("nan")
        if self.scheme == "equal_mass":
            targets = np.arange(1, self.bins) / self.bins * weight[-1]
            edges = self.scores[np.minimum(np.searchsorted(weight, targets, side="left"), self.scores.size - 1)]
        else:
            edges = np.arange(1, self.bins) / self.bins
        # a row's bin is the number of edges strictly below it: bin b ends after the last row <= edge b
        ends = np.r_[np.searchsorted(self.scores, edges, side="right"), self.scores.size] - 1
        if self.debiased:                      # metrics.debiased_squared_calibration_error
            gap = self.values - self.scores
            rows = np.diff(np.r_[0.0, weight[ends]])
            sum_d = np.diff(np.r_[0.0, np.cumsum(w * gap)[ends]])
            sum_d2 = np.diff(np.r_[0.0, np.cumsum(w * gap * gap)[ends]])
            return float(m.debiased_bin_terms(rows, sum_d, sum_d2).sum() / weight[-1])
        predicted = np.cumsum(w * self.scores)[ends]
        observed = np.cumsum(w * self.values)[ends]
        return float(np.abs(np.diff(np.r_[0.0, observed - predicted])).sum() / weight[-1])


def prepare_scorer(metric: str | Metric, scores: np.ndarray, labels, true_ctr, aligned):
    """An object whose value(counts) is the metric of this scorer under row counts (None: each once).

    Named metrics that are sums of per-row terms, AUC-PR, ROC-AUC and the ECEs get a fast path computing the
    same definition; anything else goes through ``_PresortedRows``.
    """
    name = metric if isinstance(metric, str) else None
    if name in ("auc_pr", "roc_auc"):
        return _RankingRows(_need(labels, "labels", name), scores, name)
    if name == "ece_equal_mass":
        return _CalibrationBinRows(_need(labels, "labels", name), scores, ECE_BINS, "equal_mass")
    if name == "squared_ce_debiased":
        return _CalibrationBinRows(_need(labels, "labels", name), scores, ECE_BINS, "equal_mass", debiased=True)
    if name == "oracle_ece":
        return _CalibrationBinRows(_need(true_ctr, "true_ctr", name), scores, ECE_BINS, "equal_mass")
    if name == "log_loss":
        return _RowRatio(m.cross_entropy_terms(_need(labels, "labels", name), scores))
    if name == "expected_log_loss":
        return _RowRatio(m.cross_entropy_terms(_need(true_ctr, "true_ctr", name), scores))
    if name == "excess_log_loss":
        return _RowRatio(m.kl_terms(_need(true_ctr, "true_ctr", name), scores))
    if name == "signal_gain":
        base = _need(aligned.get("base_rate"), "aligned={'base_rate': ...}", name)
        return _RowRatio(m.signal_gain_terms(_need(true_ctr, "true_ctr", name), scores, base))
    if name == "calibration_ratio":
        return _RowRatio(scores, _need(labels, "labels", name))
    if name == "true_calibration_ratio":
        return _RowRatio(scores, _need(true_ctr, "true_ctr", name))
    return _PresortedRows(resolve_metric(metric), scores, labels, true_ctr, aligned)
