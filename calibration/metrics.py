"""Ranking and calibration metrics: the one place each metric is defined.

Two implementations of the same definitions: numpy (training-time validation, small sets,
bootstrap resamples) and Spark (``segment_metrics``: test sets of any size, aggregated per
segment without collecting rows to the driver). Both follow scikit-learn (ties handled by
distinct thresholds) and the tests hold them to it and to each other.

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

from statistics import NormalDist
from typing import Sequence

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

    equal_mass: edges are the k/bins quantiles of the predictions (the lower order statistic,
    as Spark's percentile_approx returns), so every bin holds ~n/bins predictions (the paper's
    ECE: predicted CTRs crowd near 0 and equal-width bins would put nearly all in bin 0).
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


# ----------------------------------------------------------------------------- Spark
QUANTILE_ACCURACY = 100_000     # percentile_approx is exact below this many rows per segment


def segment_metrics(df, segment_cols: Sequence[str], label_col: str, score_col: str, bins: int,
                    schemes: Sequence[str] = ECE_SCHEMES):
    """Metrics of ``score_col`` against ``label_col`` per segment, computed by Spark.

    Returns (metrics, bins): one row per segment with rows, positives, ctr, mean_pred,
    auc_pr, roc_auc, log_loss, normalized_entropy, calibration_ratio and ece_<scheme>; and one row per
    (segment, scheme, bin) with rows, sum_pred, sum_label, min_pred, max_pred.
    Ranking metrics aggregate per distinct score first, so a window only sorts distinct
    scores of one segment.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = list(segment_cols)
    base = df.select(*keys, F.col(label_col).cast("double").alias("y"), F.col(score_col).cast("double").alias("p"))
    clipped = F.least(F.greatest(F.col("p"), F.lit(LOG_LOSS_EPS)), F.lit(1 - LOG_LOSS_EPS))
    totals = base.groupBy(*keys).agg(
        F.count(F.lit(1)).alias("rows"), F.sum("y").alias("positives"), F.sum("p").alias("_sum_p"),
        F.sum(-(F.col("y") * F.log(clipped) + (1 - F.col("y")) * F.log1p(-clipped))).alias("_loss"))

    by_score = base.groupBy(*keys, "p").agg(F.sum("y").alias("pos"), F.sum(1 - F.col("y")).alias("neg"))
    down = Window.partitionBy(*keys).orderBy(F.col("p").desc()).rowsBetween(Window.unboundedPreceding, 0)
    ranked = (by_score.withColumn("tp", F.sum("pos").over(down)).withColumn("fp", F.sum("neg").over(down))
              .groupBy(*keys).agg(
                  F.sum(F.col("pos") * F.col("tp") / (F.col("tp") + F.col("fp"))).alias("_ap_sum"),
                  F.sum(F.col("neg") * (F.col("tp") - F.col("pos") / 2)).alias("_auc_sum")))

    bin_rows = None
    for scheme in schemes:
        assigned = _assign_bins(base, keys, bins, scheme)
        part = assigned.groupBy(*keys, "bin").agg(
            F.count(F.lit(1)).alias("rows"), F.sum("p").alias("sum_pred"), F.sum("y").alias("sum_label"),
            F.min("p").alias("min_pred"), F.max("p").alias("max_pred")).withColumn("scheme", F.lit(scheme))
        bin_rows = part if bin_rows is None else bin_rows.unionByName(part)
    bin_rows = bin_rows.select(*keys, "scheme", "bin", "rows", "sum_pred", "sum_label", "min_pred", "max_pred")
    ece = (bin_rows.groupBy(*keys).pivot("scheme", list(schemes))
           .agg(F.sum(F.abs(F.col("sum_label") - F.col("sum_pred")))))

    negatives = F.col("rows") - F.col("positives")
    ctr = F.col("positives") / F.col("rows")
    base_entropy = -(ctr * F.log(ctr) + (1 - ctr) * F.log1p(-ctr))
    metrics = (totals.join(ranked, keys).join(ece, keys).select(
        *keys, F.col("rows"), F.col("positives").cast("long").alias("positives"),
        (F.col("positives") / F.col("rows")).alias("ctr"), (F.col("_sum_p") / F.col("rows")).alias("mean_pred"),
        F.when(F.col("positives") > 0, F.col("_ap_sum") / F.col("positives")).alias("auc_pr"),
        F.when((F.col("positives") > 0) & (negatives > 0),
               F.col("_auc_sum") / (F.col("positives") * negatives)).alias("roc_auc"),
        (F.col("_loss") / F.col("rows")).alias("log_loss"),
        F.when((F.col("positives") > 0) & (negatives > 0), (F.col("_loss") / F.col("rows")) / base_entropy)
        .alias("normalized_entropy"),
        F.when(F.col("positives") > 0, F.col("_sum_p") / F.col("positives")).alias("calibration_ratio"),
        *[(F.col(s) / F.col("rows")).alias(f"ece_{s}") for s in schemes]))
    return metrics, bin_rows


def truth_metrics(df, segment_cols: Sequence[str], score_col: str, truth_col: str, base_col: str,
                  ceiling_col: str | None = None):
    """Label-free metrics of ``score_col`` per segment, computed by Spark against the true click
    probability ``truth_col`` (no label noise): the definitions of ``excess_log_loss``,
    ``true_calibration_ratio`` and ``signal_gain`` above, with predictions clipped the same way.

    ``base_col``: each row's base rate (e.g. its slot's mean true_ctr), so a pooled segment's
    gain is measured against per-slot constants. Returns one row per segment with
    excess_log_loss (mean KL(t || p), 0 = oracle), true_calibration_ratio (sum p / sum t),
    signal_gain (mean [CE(t, base) - CE(t, p)]), signal_fraction_of_oracle (gain / the
    oracle's) and signal_fraction_of_ceiling (gain / that of ``ceiling_col``; null without it).
    Rows whose truth is null are left out.
    """
    from pyspark.sql import functions as F

    def clip(c):
        return F.least(F.greatest(c, F.lit(LOG_LOSS_EPS)), F.lit(1 - LOG_LOSS_EPS))

    def cross_entropy(t, q):
        q = clip(q)
        return -(t * F.log(q) + (1 - t) * F.log1p(-q))

    def xlogx(x):
        return F.when(x > 0, x * F.log(x)).otherwise(F.lit(0.0))

    t, p, base = F.col(truth_col).cast("double"), F.col(score_col).cast("double"), F.col(base_col).cast("double")
    kl = xlogx(t) + xlogx(1 - t) + cross_entropy(t, p)
    gain = cross_entropy(t, base) - cross_entropy(t, p)
    oracle_gain = cross_entropy(t, base) - cross_entropy(t, t)
    ceiling_gain = (cross_entropy(t, base) - cross_entropy(t, F.col(ceiling_col).cast("double"))
                    if ceiling_col else F.lit(None).cast("double"))
    sums = df.where(F.col(truth_col).isNotNull()).groupBy(*segment_cols).agg(
        F.avg(kl).alias("excess_log_loss"), (F.sum(p) / F.sum(t)).alias("true_calibration_ratio"),
        F.avg(gain).alias("signal_gain"), F.avg(oracle_gain).alias("_oracle_gain"),
        F.avg(ceiling_gain).alias("_ceiling_gain"))
    return sums.select(
        *segment_cols, "excess_log_loss", "true_calibration_ratio", "signal_gain",
        F.when(F.col("_oracle_gain") > 0, F.col("signal_gain") / F.col("_oracle_gain")).alias("signal_fraction_of_oracle"),
        F.when(F.col("_ceiling_gain") > 0, F.col("signal_gain") / F.col("_ceiling_gain"))
        .alias("signal_fraction_of_ceiling"))


def _assign_bins(base, keys: list[str], bins: int, scheme: str):
    """Adds ``bin`` = the number of inner edges below p (as ``bin_edges`` + searchsorted)."""
    from pyspark.sql import functions as F

    if scheme == "equal_width":
        return base.withColumn("bin", F.least(F.greatest(F.ceil(F.col("p") * bins) - 1, F.lit(0)),
                                              F.lit(bins - 1)).cast("int"))
    if scheme != "equal_mass":
        raise ValueError(f"scheme must be one of {ECE_SCHEMES}, got {scheme!r}")
    fractions = F.array(*[F.lit(k / bins) for k in range(1, bins)])
    edges = base.groupBy(*keys).agg(F.percentile_approx("p", fractions, QUANTILE_ACCURACY).alias("_edges"))
    return (base.join(F.broadcast(edges), keys)
            .withColumn("bin", F.size(F.filter("_edges", lambda e: e < F.col("p"))).cast("int"))
            .drop("_edges"))
