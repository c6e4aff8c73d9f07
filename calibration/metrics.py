"""Ranking and calibration metrics: the one place each metric is defined.

Two implementations of the same definitions: numpy (training-time validation, small sets)
and Spark (``segment_metrics``: test sets of any size, aggregated per segment without
collecting rows to the driver). Both follow scikit-learn (ties handled by distinct
thresholds) and the tests hold them to it and to each other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC-PR as average precision: sum_k (R_k - R_{k-1}) P_k over distinct thresholds."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    positives = y.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = last_of_run + 1 - tps
    precision = tps / (tps + fps)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney U) statistic with average ranks for ties."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_s))[0] + 1]
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):           # one iteration per distinct score
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration_ratio(labels: np.ndarray, probs: np.ndarray) -> float:
    """sum p / sum y: 1.0 is calibrated in aggregate, > 1 over-predicts."""
    y = np.asarray(labels, dtype=np.float64)
    return float(np.sum(probs) / y.sum()) if y.sum() > 0 else float("nan")


ECE_SCHEMES = ("equal_mass", "equal_width")


def bin_edges(probs: np.ndarray, bins: int, scheme: str) -> np.ndarray:
    """The ``bins - 1`` inner edges; a prediction's bin is the number of edges below it.

    equal_mass: edges are the k/bins quantiles of the predictions (the lower order statistic,
    as Spark's percentile_approx returns), so every bin holds ~n/bins predictions (the paper's
    ECE: predicted CTRs crowd near 0 and equal-width bins would put nearly all in bin 0).
    equal_width: k/bins.
    """
    if scheme == "equal_width":
        return np.arange(1, bins) / bins
    if scheme != "equal_mass":
        raise ValueError(f"scheme must be one of {ECE_SCHEMES}, got {scheme!r}")
    p = np.sort(np.asarray(probs, dtype=np.float64))
    ranks = np.ceil(np.arange(1, bins) / bins * p.size).astype(int) - 1
    return p[np.clip(ranks, 0, p.size - 1)]


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int, scheme: str) -> list[dict]:
    """Per non-empty bin: rows, mean prediction, observed rate (the reliability diagram)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    index = np.searchsorted(bin_edges(p, bins, scheme), p, side="left")
    out = []
    for b in np.unique(index):
        sel = index == b
        out.append({"bin": int(b), "rows": int(sel.sum()), "sum_pred": float(p[sel].sum()),
                    "sum_label": float(y[sel].sum()), "min_pred": float(p[sel].min()),
                    "max_pred": float(p[sel].max())})
    return out


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15,
                               scheme: str = "equal_mass") -> float:
    """ECE = sum_b |sum_{i in b} y_i - sum_{i in b} p_i| / n over ``bins`` bins of ``scheme``."""
    n = np.asarray(labels).size
    if n == 0:
        return float("nan")
    return float(sum(abs(b["sum_label"] - b["sum_pred"]) for b in reliability_bins(labels, probs, bins, scheme)) / n)


# ----------------------------------------------------------------------------- Spark
LOG_LOSS_EPS = 1e-7
QUANTILE_ACCURACY = 100_000     # percentile_approx is exact below this many rows per segment


def segment_metrics(df, segment_cols: Sequence[str], label_col: str, score_col: str, bins: int,
                    schemes: Sequence[str] = ECE_SCHEMES):
    """Metrics of ``score_col`` against ``label_col`` per segment, computed by Spark.

    Returns (metrics, bins): one row per segment with rows, positives, ctr, mean_pred,
    auc_pr, roc_auc, log_loss, calibration_ratio and ece_<scheme>; and one row per
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
    metrics = (totals.join(ranked, keys).join(ece, keys).select(
        *keys, F.col("rows"), F.col("positives").cast("long").alias("positives"),
        (F.col("positives") / F.col("rows")).alias("ctr"), (F.col("_sum_p") / F.col("rows")).alias("mean_pred"),
        F.when(F.col("positives") > 0, F.col("_ap_sum") / F.col("positives")).alias("auc_pr"),
        F.when((F.col("positives") > 0) & (negatives > 0),
               F.col("_auc_sum") / (F.col("positives") * negatives)).alias("roc_auc"),
        (F.col("_loss") / F.col("rows")).alias("log_loss"),
        F.when(F.col("positives") > 0, F.col("_sum_p") / F.col("positives")).alias("calibration_ratio"),
        *[(F.col(s) / F.col("rows")).alias(f"ece_{s}") for s in schemes]))
    return metrics, bin_rows


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
