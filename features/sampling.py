"""Stratified down-sampling per (slot, label) stratum, train split only.

A row is kept when a seeded hash of its id falls below its stratum's rate, so reruns keep
the same rows. Kept rows carry ``sample_weight = 1 / rate``; the rates are recorded in
``sampling_rates`` so predictions can be corrected back: q = p / (p + (1 - p) / w).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.columns import uniform


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
    # the rate is recomputed rather than kept in a column: two DataFrame calls, not four, each
    # of which re-analyses the build's whole plan
    return df.where(keep | (rate >= 1.0)).withColumn("sample_weight", (1.0 / rate).cast("double"))


def downsampling_logit_shift(rates: Mapping[tuple[str, int], float], slots: tuple[str, ...]) -> dict[str, float]:
    """Per slot, log(r_neg / r_pos): added to a logit it undoes (slot, label) down-sampling.

    In probability terms q = p / (p + (1 - p) / w) with w = r_neg / r_pos. It is exact only when the model's p is
    conditional on the sampling stratum, i.e. when the slot is a model input."""
    return {slot: math.log(rates.get((slot, 0), 1.0) / rates.get((slot, 1), 1.0)) for slot in slots}


def build_logit_shift(spark, rates_table: str, build_run_id: str, slots: tuple[str, ...]) -> dict[str, float]:
    """``downsampling_logit_shift`` for the rates a feature build recorded in ``sampling_rates``."""
    rates = {(r.slot, int(r.label)): float(r.rate) for r in spark.table(rates_table)
             .where(F.col("run_id") == build_run_id).collect()}
    if not rates:
        raise ValueError(f"no {rates_table} rows for feature build {build_run_id}")
    return downsampling_logit_shift(rates, slots)


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
