"""A training set assembled by Spark from the daily feature table (core/training_sets.py defines
it): the window's train days down-sampled per (slot, label) stratum, every validation and test
row as it is.

The draw is a per-impression uniform of (seed, impression id), compared with the stratum's
rate, so a re-run keeps the same rows, and sets that differ only in rates are nested: a row kept
at rate 0.1 is kept at 0.3. Kept train rows carry ``sample_weight = 1 / rate``.

``ensure_training_set`` materialises a set's train rows once into ``training_sets`` (partitioned
by set_id and event_date, so a set's files hold its rows only) with its ``sampling_rates`` rows;
asking for the same spec again reuses them and writes nothing."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from core import tables
from core.config import Config
from core.delta_versions import tag_write, written_version
from core.feature_table import TEST, TRAIN, TRAINING_SET_COLUMNS, VALIDATION
from core.training_sets import TrainingSetSpec
from features import sampling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSetWritten:
    """A training set in ``training_sets``: its id, the table's version holding it, its rows, and
    whether it was there already (``reused``: nothing was written)."""
    set_id: str
    version: int
    rows: int
    reused: bool


def ensure_training_set(spark, cfg: Config, spec: TrainingSetSpec) -> TrainingSetWritten:
    """The training set of ``spec``: reused when ``training_sets`` and ``sampling_rates`` hold
    it, else its train rows of ``spec.features_table`` at ``spec.features_version`` written (the
    set's own rows replaced, so a re-run after a failed write is whole) with one sampling_rates
    row per (slot, label): rate, rows before and after sampling (observed on the write itself)."""
    name, rates_name = cfg.table(tables.TRAINING_SETS), cfg.table(tables.SAMPLING_RATES)
    held = _rows_held(spark, name, rates_name, spec.set_id)
    if held is not None:
        log.info("training set %s (%s) is in %s already: reused", spec.set_id, spec.window.describe(), name)
        return TrainingSetWritten(spec.set_id, tables.latest_version(spark, name), held, True)
    features = tables.read_table(spark, spec.features_table, spec.features_version)
    strata = sampling.every_stratum(cfg.taxonomy.slot_names, spec.rate_of)
    before, after = Observation(), Observation()
    counted = sampling.train_rows_observed(strata)
    days = _days(features, spec, TRAIN).withColumn("split", F.lit(TRAIN)).observe(before, *counted)
    sampled = sampling.stratified_downsample(days, spec.rate_of, spec.seed).observe(after, *counted)
    rows = sampled.withColumn("set_id", F.lit(spec.set_id)).select(
        *(c for c in features.columns if c not in TRAINING_SET_COLUMNS), *TRAINING_SET_COLUMNS)
    version = tables.replace_date_range(rows, name, "event_date", spec.window.train_start, spec.window.train_end,
                                        ["set_id", "event_date"], only_where=f"set_id = '{spec.set_id}'")
    kept = sampling.observed_train_rows(after.get, strata)
    report = sampling.sampling_report(spark, sampling.observed_train_rows(before.get, strata), kept, strata,
                                      spec.set_id, dt.datetime.now())
    _replace_set_rows(report, rates_name, spec.set_id)
    log.info("training set %s (%s): %s train rows written to %s@%d", spec.set_id, spec.window.describe(),
             f"{sum(kept.values()):,}", name, version)
    return TrainingSetWritten(spec.set_id, version, sum(kept.values()), False)


def _rows_held(spark, name: str, rates_name: str, set_id: str) -> int | None:
    """The rows of set ``set_id`` by its sampling_rates rows, when both tables hold it; else None."""
    if not (tables.table_exists(spark, name) and tables.table_exists(spark, rates_name)):
        return None
    rates = spark.table(rates_name)
    if "set_id" not in rates.columns:
        raise ValueError(f"{rates_name} was written by the layout before the daily store (no set_id): "
                         "spark-submit jobs/maintain.py --drop-old-layout, then train again")
    count, rows = rates.where(F.col("set_id") == set_id).agg(F.count(F.lit(1)), F.sum("rows_after")).first()
    if not count or not spark.table(name).where(F.col("set_id") == set_id).limit(1).count():
        return None
    return int(rows or 0)


def _replace_set_rows(df: DataFrame, name: str, set_id: str) -> int:
    """Write ``df`` as the rows of training set ``set_id`` in table ``name`` (its earlier rows of
    that set replaced, atomically); returns the version."""
    spark = df.sparkSession
    writer = df.write.format("delta").mode("overwrite")
    if tables.table_exists(spark, name):
        tables.check_same_columns(spark.table(name), df, name)
        writer = writer.option("replaceWhere", f"set_id = '{set_id}'")
    else:
        writer = writer.options(**tables.creation_properties(name))
    writer, tag = tag_write(writer)
    with tables.conflicts_named(name, f"the rows of training set {set_id}"), tables.constraints_named(name):
        writer.saveAsTable(name)
    return written_version(spark, name, tag)


def train_rows(features: DataFrame, spec: TrainingSetSpec) -> DataFrame:
    """The set's train rows of ``features`` (one pinned snapshot of the daily table: the caller
    reads ``spec.features_version``): the train days, down-sampled, with ``set_id``, ``split``
    and ``sample_weight``."""
    days = _days(features, spec, TRAIN)
    sampled = sampling.stratified_downsample(days.withColumn("split", F.lit(TRAIN)), spec.rate_of, spec.seed)
    return sampled.withColumn("set_id", F.lit(spec.set_id))


def evaluation_rows(features: DataFrame, spec: TrainingSetSpec, split: str) -> DataFrame:
    """The set's validation or test rows: every row of those days, ``sample_weight`` 1."""
    if split not in (VALIDATION, TEST):
        raise ValueError(f"evaluation rows are validation or test rows, not {split!r}")
    return _days(features, spec, split).withColumns({"split": F.lit(split), "sample_weight": F.lit(1.0),
                                                     "set_id": F.lit(spec.set_id)})


def _days(features: DataFrame, spec: TrainingSetSpec, split: str) -> DataFrame:
    first, last = spec.window.bounds(split)
    return features.where(F.col("event_date").between(F.lit(first), F.lit(last)))

