"""Slot-level evaluation tables from scored rows: pure functions over Spark DataFrames.

Input: rows scored by ``training.table_scoring.score_table`` (slot, task, label, true_ctr and
ceiling_ctr when the log has them, pctr_raw = corrected for down-sampling, pctr =
temperature-calibrated). Output DataFrames for
``slot_metrics`` (one row per level x segment x calibrated flag), ``calibration_bins``
(reliability-diagram data) and ``expert_mask_metrics``. Segments are every slot, every task
of the model's grouping and ``all``; the ``level`` column says which.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.metrics import ECE_SCHEMES

SEGMENT_KEYS = ("level", "slot")
# % change vs the baseline run
CHANGE_METRICS = ("auc_pr", "roc_auc", "log_loss", "normalized_entropy", "ece_equal_mass")


def with_segments(scored: DataFrame) -> DataFrame:
    """Each row three times: under its slot, its task and ``all`` (columns level, slot)."""
    segments = F.array(
        F.struct(F.lit("slot").alias("level"), F.col("slot").alias("segment")),
        F.struct(F.lit("task").alias("level"), F.col("task").alias("segment")),
        F.struct(F.lit("all").alias("level"), F.lit("all").alias("segment")))
    return (scored.withColumn("_seg", F.explode(segments))
            .withColumn("level", F.col("_seg.level")).withColumn("_slot", F.col("_seg.segment"))
            .drop("_seg", "slot").withColumnRenamed("_slot", "slot"))


# slot_metrics' label metrics, in the table's column order (core.metrics.score_metrics)
LABEL_METRICS = (("rows", "long"), ("positives", "long"), ("ctr", "double"), ("mean_pred", "double"),
                 ("auc_pr", "double"), ("roc_auc", "double"), ("log_loss", "double"),
                 ("normalized_entropy", "double"), ("calibration_ratio", "double"))
REFERENCE_METRICS = ("auc_pr", "roc_auc", "log_loss", "ece_equal_mass")      # of the oracle and the ceiling
TRUTH_METRICS = ("excess_log_loss", "true_calibration_ratio", "signal_gain", "signal_fraction_of_oracle",
                 "signal_fraction_of_ceiling")                                # core.metrics.truth_summary
BIN_COLUMNS = (("scheme", "string"), ("bin", "int"), ("rows", "long"), ("sum_pred", "double"),
               ("sum_label", "double"), ("min_pred", "double"), ("max_pred", "double"))
VARIANTS = ((False, "pctr_raw"), (True, "pctr"))           # calibrated flag -> the score it rates


def _schema(columns) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in columns)


def _ece_columns(schemes) -> list[tuple[str, str]]:
    """The plug-in ECE per scheme, then the debiased RMS calibration error (equal-mass bins)."""
    return [(f"ece_{s}", "double") for s in schemes] + [("rms_ce_debiased", "double")]


def slot_tables(scored: DataFrame, bins: int, with_oracle: bool, with_ceiling: bool = False
                ) -> tuple[DataFrame, DataFrame]:
    """(slot_metrics rows, calibration_bins rows) without run columns.

    ``scored``: slot, task, label, pctr_raw, pctr (and true_ctr, ceiling_ctr). Each segment's
    rows are rated on an executor by ``core.metrics.score_metrics``, the numpy
    definitions the bootstrap uses: two shuffles in all, where one aggregation per metric took
    dozens of stages. The metrics and the reliability bins come from that one pass (the bins
    ride along as an array column, then become the bins table's rows), computed eagerly once
    (a local checkpoint): the two tables' writes would each run it again. A segment's rows must
    fit in one Python worker's memory (about 100 bytes a row: tens of millions of rows per
    segment).

    With ``with_oracle`` the true click probability is scored as a model
    too (oracle_* columns, auc_pr_oracle_fraction = auc_pr / oracle_auc_pr), and the label-free
    metrics against it are added (``truth_summary``: excess_log_loss, true_calibration_ratio,
    signal_gain and its fractions of the oracle's and the ceiling's, the base rate being each
    row's slot mean true_ctr over these rows). With ``with_ceiling`` also ceiling_auc_pr and
    auc_pr_ceiling_fraction, the learnable ceiling ``ceiling_ctr`` scored as a model.
    """
    import pandas as pd

    from core.metrics import score_metrics, truth_summary

    references = ([("oracle", "true_ctr")] + ([("ceiling", "ceiling_ctr")] if with_ceiling else [])
                  if with_oracle else [])
    frame = scored.select("slot", "task", "label", "pctr_raw", "pctr", *[c for _, c in references])
    if with_oracle:
        slot_base = frame.groupBy("slot").agg(F.avg("true_ctr").alias("base_ctr"))
        frame = frame.join(F.broadcast(slot_base), "slot")
    segmented = with_segments(frame)
    keys = [("level", "string"), ("slot", "string"), ("calibrated", "boolean")]
    columns = [*keys, *LABEL_METRICS, *_ece_columns(ECE_SCHEMES),
               *[(column, "double") for name, _ in references
                 for column in (*[f"{name}_{m}" for m in REFERENCE_METRICS], f"auc_pr_{name}_fraction")],
               *([(m, "double") for m in TRUTH_METRICS] if with_oracle else []),
               ("_reliability", f"array<struct<{', '.join(f'{n}: {k}' for n, k in BIN_COLUMNS)}>>")]

    def metrics_of(group: pd.DataFrame) -> pd.DataFrame:
        labels = group["label"].to_numpy(np.float64)
        reference = {}
        for name, column in references:
            known = group[column].notna().to_numpy()
            rated, _ = (score_metrics(labels[known], group.loc[known, column].to_numpy(np.float64), bins,
                                      ("equal_mass",)) if known.any() else ({}, None))
            reference.update({f"{name}_{m}": rated.get(m, np.nan) for m in REFERENCE_METRICS})
        rows = []
        for calibrated, column in VARIANTS:
            scores = group[column].to_numpy(np.float64)
            row, bin_rows = score_metrics(labels, scores, bins)
            row.update(reference, level=group["level"].iat[0], slot=group["slot"].iat[0], calibrated=calibrated,
                       _reliability=bin_rows)
            for name, _ in references:
                row[f"auc_pr_{name}_fraction"] = row["auc_pr"] / reference[f"{name}_auc_pr"]
            if with_oracle:
                known = group["true_ctr"].notna().to_numpy()
                ceiling = group.loc[known, "ceiling_ctr"].to_numpy(np.float64) if with_ceiling else None
                row.update(truth_summary(group.loc[known, "true_ctr"], scores[known],
                                         group.loc[known, "base_ctr"].to_numpy(np.float64), ceiling))
            rows.append(row)
        return pd.DataFrame(rows, columns=[name for name, _ in columns])

    per_segment = segmented.groupBy(*SEGMENT_KEYS).applyInPandas(metrics_of, _schema(columns)).localCheckpoint()
    metrics = (per_segment.drop("_reliability").withColumnRenamed("mean_pred", "mean_pctr")
               .withColumn("ece_bins", F.lit(bins))
               .withColumn("note", segment_note(F.col("rows"), F.col("positives"))))
    order = [name for name, _ in (*keys, *LABEL_METRICS, *_ece_columns(ECE_SCHEMES))]
    order = [("mean_pctr" if c == "mean_pred" else c) for c in order] + ["ece_bins", "note"]
    metrics = metrics.select(*order, *[c for c in metrics.columns if c not in order])
    key_names = [name for name, _ in keys]
    bin_rows = (per_segment.select(*key_names, F.explode("_reliability").alias("_bin"))
                .select(*key_names, *[F.col(f"_bin.{name}").alias(name) for name, _ in BIN_COLUMNS])
                .withColumn("mean_pctr", F.col("sum_pred") / F.col("rows"))
                .withColumn("observed_ctr", F.col("sum_label") / F.col("rows")).withColumn("bins", F.lit(bins)))
    return metrics, bin_rows


# ECE stays defined without clicks (|0 - sum of pCTR| / rows: the mean pCTR)
NO_POSITIVES_NOTE = ("no clicks in this window: AUC-PR, ROC-AUC, normalized entropy and the calibration ratio "
                     "are undefined (NULL)")
ALL_POSITIVES_NOTE = ("every impression clicked in this window: ROC-AUC and normalized entropy are undefined, "
                      "AUC-PR is trivially 1")


def segment_note(rows: Column, positives: Column) -> Column:
    """Why a segment's ranking metrics are NULL (null when they are defined)."""
    return (F.when(positives == 0, F.lit(NO_POSITIVES_NOTE))
            .when(positives == rows, F.lit(ALL_POSITIVES_NOTE)).otherwise(F.lit(None).cast("string")))


def change_vs_baseline(metrics: DataFrame, baseline: DataFrame | None, baseline_run_id: str | None) -> DataFrame:
    """Adds baseline_run_id and <metric>_change_pct = 100 * (metric / baseline metric - 1)."""
    out = metrics.withColumn("baseline_run_id", F.lit(baseline_run_id).cast("string"))
    keys = [*SEGMENT_KEYS, "calibrated"]
    if baseline is None:
        for m in CHANGE_METRICS:
            out = out.withColumn(f"{m}_change_pct", F.lit(None).cast("double"))
        return out
    base = baseline.select(*keys, *[F.col(m).alias(f"_base_{m}") for m in CHANGE_METRICS])
    out = out.join(base, keys, "left")
    for m in CHANGE_METRICS:
        out = out.withColumn(f"{m}_change_pct", 100.0 * (F.col(m) / F.col(f"_base_{m}") - 1.0))
    return out.drop(*[f"_base_{m}" for m in CHANGE_METRICS])


def expert_mask_tables(scored: DataFrame, experts: int, bins: int) -> DataFrame:
    """Calibrated metrics with each expert masked at scoring time (paper appendix A.2).

    ``scored`` carries ``masked_pctr`` (array, one entry per expert). masked_expert = -1 is
    the unmasked model; auc_pr_change_pct is vs that row.
    """
    import pandas as pd

    from core.metrics import score_metrics

    keys = [("level", "string"), ("slot", "string"), ("masked_expert", "int")]
    columns = [*keys, *LABEL_METRICS, *_ece_columns(("equal_mass",)), ("auc_pr_change_pct", "double")]

    def masked_metrics(group: pd.DataFrame) -> pd.DataFrame:
        labels = group["label"].to_numpy(np.float64)
        masked = np.stack(group["masked_pctr"].to_numpy()).reshape(len(group), experts)
        scores = [group["pctr"].to_numpy(np.float64), *masked.T]
        rows = [{**score_metrics(labels, s, bins, ("equal_mass",))[0], "level": group["level"].iat[0],
                 "slot": group["slot"].iat[0], "masked_expert": i - 1} for i, s in enumerate(scores)]
        for row in rows:
            row["auc_pr_change_pct"] = 100.0 * (row["auc_pr"] / rows[0]["auc_pr"] - 1.0)
        return pd.DataFrame(rows, columns=[name for name, _ in columns])

    segmented = with_segments(scored.select("slot", "task", "label", "pctr", "masked_pctr"))
    return (segmented.groupBy(*SEGMENT_KEYS).applyInPandas(masked_metrics, _schema(columns))
            .withColumn("experts", F.lit(experts)))


def with_run_columns(df: DataFrame, run_id: str, model: str, model_run_id: str, features_version: int,
                     first: Sequence[str] = ()) -> DataFrame:
    """Prefix the identifying columns every evaluation table starts with."""
    cols = [c for c in df.columns if c not in first]
    return df.select(F.lit(run_id).alias("run_id"), F.lit(model).alias("model"),
                     F.lit(model_run_id).alias("model_run_id"),
                     F.lit(int(features_version)).alias("features_version"), *first, *cols,
                     F.current_timestamp().alias("evaluated_at"))


def prediction_rows(scored: DataFrame, run_id: str, model: str, model_run_id: str, features_version: int):
    """Rows of the ``predictions`` table (shared with jobs/score.py)."""
    label = F.col("label").cast("int") if "label" in scored.columns else F.lit(None).cast("int")
    truth = F.col("true_ctr") if "true_ctr" in scored.columns else F.lit(None).cast("double")
    return scored.select(
        F.lit(run_id).alias("run_id"), F.lit(model).alias("model"), F.lit(model_run_id).alias("model_run_id"),
        F.lit(int(features_version)).alias("features_version"), F.current_timestamp().alias("scored_at"),
        "impression_id", "event_date", "slot", "task", "logit", "pctr_raw", "pctr",
        label.alias("label"), truth.alias("true_ctr"),
        # evaluation of a multi-expert model: each expert zeroed in turn (paper app. A.2)
        *(["masked_pctr"] if "masked_pctr" in scored.columns else []))
