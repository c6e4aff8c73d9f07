"""Stratified down-sampling per (slot, label) stratum, a training set's train days only.

A row is kept when a seeded hash of its id falls below its stratum's rate, so reruns keep
the same rows. Kept rows carry ``sample_weight = 1 / rate``; the rates are recorded in
``sampling_rates`` (one set of rows per training set, keyed by its ``set_id``) and in the model
artifact, so predictions can be corrected back: q = p / (p + (1 - p) / w).
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.columns import uniform


def stratum_rate(slot: Column, label: Column, rates: Mapping[tuple[str, int], float]) -> Column:
    expr = None
    for (s, lab), rate in rates.items():
        cond = (slot == s) & (label == lab)
        expr = F.when(cond, F.lit(float(rate))) if expr is None else expr.when(cond, F.lit(float(rate)))
    return F.lit(1.0) if expr is None else expr.otherwise(F.lit(1.0))      # no rates: every row kept


def stratified_downsample(df: DataFrame, rates: Mapping[tuple[str, int], float], seed: int,
                          id_col: str = "impression_id", slot_col: str = "slot",
                          label_col: str = "label", split_col: str = "split") -> DataFrame:
    """Down-sample the rows whose ``split_col`` is train; every kept row gets ``sample_weight``
    (1.0 elsewhere)."""
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


Stratum = tuple[str, int]          # (slot, label)


def train_rows_observed(rates: Mapping[Stratum, float], slot_col: str = "slot", label_col: str = "label",
                        split_col: str = "split") -> list[Column]:
    """Aggregates counting the train rows of each stratum in ``rates``, for ``DataFrame.observe``
    on a training set's write: the report's rows before and after sampling come from the write
    itself instead of a read back of what it wrote (``observed_train_rows`` reads them)."""
    is_train = F.col(split_col) == "train"
    return [F.count_if(is_train & (F.col(slot_col) == slot) & (F.col(label_col) == label))
            .alias(_stratum_key(slot, label)) for slot, label in rates]


def observed_train_rows(observed: Mapping[str, int], rates: Mapping[Stratum, float]) -> dict[Stratum, int]:
    """The per-stratum counts ``train_rows_observed`` left in an Observation's result."""
    return {stratum: int(observed[_stratum_key(*stratum)]) for stratum in rates}


def _stratum_key(slot: str, label: int) -> str:
    return f"train_rows[{slot}|{int(label)}]"


def train_rows_by_stratum(df: DataFrame, slot_col: str = "slot", label_col: str = "label",
                          split_col: str = "split") -> dict[Stratum, int]:
    """Train rows of ``df`` per (slot, label): one small collect."""
    counts = df.where(F.col(split_col) == "train").groupBy(slot_col, F.col(label_col).cast("int")).count().collect()
    return {(r[0], r[1]): r[2] for r in counts}


SAMPLING_REPORT_SCHEMA = ("set_id string, slot string, label int, rate double, rows_before bigint, rows_after bigint, "
                          "created_at timestamp")


def every_stratum(slots: Sequence[str], rates: Mapping[Stratum, float]) -> dict[Stratum, float]:
    """Each (slot, label) of ``slots`` with its rate (1.0 where ``rates`` names none): what a
    training set's report lists, so every slot's correction can be read from it."""
    return {(slot, label): float(rates.get((slot, label), 1.0)) for slot in slots for label in (0, 1)}


def sampling_report(spark, rows_before: Mapping[Stratum, int], rows_after: Mapping[Stratum, int],
                    rates: Mapping[Stratum, float], set_id: str, created_at: dt.datetime | None = None) -> DataFrame:
    """One ``sampling_rates`` row per (slot, label) of ``rates``: rate, train rows before and
    after sampling (0 for a stratum without rows), of training set ``set_id``, made ``created_at``
    (default: now)."""
    created_at = created_at or dt.datetime.now()
    rows = [(set_id, slot, int(label), float(rate), rows_before.get((slot, label), 0),
             rows_after.get((slot, label), 0), created_at) for (slot, label), rate in rates.items()]
    return spark.createDataFrame(rows, SAMPLING_REPORT_SCHEMA)
