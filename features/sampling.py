"""Stratified down-sampling per (slot, label) stratum, train split only.

A row is kept when a seeded hash of its id falls below its stratum's rate, so reruns keep
the same rows. Kept rows carry ``sample_weight = 1 / rate``; the rates are recorded in
``sampling_rates`` so predictions can be corrected back: q = p / (p + (1 - p) / w).
"""
from __future__ import annotations

from typing import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.columns import uniform


def stratum_rate(slot: Column, label: Column, rates: Mapping[tuple[str, int], float]) -> Column:
    expr = None
    for (s, lab), rate in rates.items():
        cond = (slot == s) & (label == lab)
        expr = F.when(cond, F.lit(float(rate))) if expr is None else expr.when(cond, F.lit(float(rate)))
    return expr.otherwise(F.lit(1.0))


def stratified_downsample(df: DataFrame, rates: Mapping[tuple[str, int], float], seed: int,
                          id_col: str = "impression_id", slot_col: str = "slot",
                          label_col: str = "label", split_col: str = "split") -> DataFrame:
    """Down-sample the train split; every kept row gets ``sample_weight`` (1.0 elsewhere)."""
    is_train = F.col(split_col) == "train"
    rate = F.when(is_train, stratum_rate(F.col(slot_col), F.col(label_col), rates)).otherwise(1.0)
    keep = uniform(seed, "downsample", F.col(id_col).cast("string")) < rate
    return (df.withColumn("_rate", rate).where(keep | (F.col("_rate") >= 1.0))
            .withColumn("sample_weight", (1.0 / F.col("_rate")).cast("double")).drop("_rate"))


def correct_for_downsampling(p: Column, weight: Column) -> Column:
    """Undo negative down-sampling on a predicted probability: q = p / (p + (1 - p) / w)."""
    return p / (p + (1.0 - p) / weight)


def sampling_report(before: DataFrame, after: DataFrame, rates: Mapping[tuple[str, int], float],
                    run_id: str, slot_col: str = "slot", label_col: str = "label") -> DataFrame:
    """One ``sampling_rates`` row per (slot, label): rate, train rows before and after."""
    def counts(df: DataFrame, name: str) -> DataFrame:
        return df.where(F.col("split") == "train").groupBy(
            F.col(slot_col).alias("slot"), F.col(label_col).cast("int").alias("label")
        ).agg(F.count(F.lit(1)).alias(name))

    spark = before.sparkSession
    rate_df = spark.createDataFrame([(s, int(lab), float(r)) for (s, lab), r in rates.items()],
                                    "slot string, label int, rate double")
    return (rate_df.join(counts(before, "rows_before"), ["slot", "label"], "left")
            .join(counts(after, "rows_after"), ["slot", "label"], "left")
            .fillna(0, ["rows_before", "rows_after"])
            .withColumn("run_id", F.lit(run_id))
            .select("run_id", "slot", "label", "rate", "rows_before", "rows_after"))
