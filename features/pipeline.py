"""The feature build: raw impressions for a date range -> quarantine + features tables.

Steps: schema check -> row rules (bad rows to ``quarantine``) -> point-in-time history ->
time splits -> train-window vocabularies and dense statistics -> encoding and scaling ->
stratified down-sampling of the train split -> idempotent writes of every output table.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F

from core import tables
from core.config import Config
from core.feature_table import dense_feature_names, feature_columns
from features import expectations, quality, sampling, transforms

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    run_id: str
    start: dt.date
    end: dt.date
    day_split: dict[dt.date, str]
    input_rows: int
    accepted_rows: int
    quarantined_rows: int
    feature_rows: int
    versions_read: dict[str, int] = field(default_factory=dict)
    versions_written: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return {"input_rows": self.input_rows, "accepted_rows": self.accepted_rows,
                "quarantined_rows": self.quarantined_rows, "feature_rows": self.feature_rows,
                "splits": {d.isoformat(): s for d, s in self.day_split.items()}}


def build_features(spark: SparkSession, cfg: Config, start: dt.date, end: dt.date,
                   run_id: str) -> BuildResult:
    s = cfg.schema
    day_split = transforms.assign_splits(start, end, cfg.splits)
    raw_name = cfg.table(tables.IMPRESSIONS)
    raw_version = tables.latest_version(spark, raw_name) if tables.table_exists(spark, raw_name) else None
    lookback_start = start - dt.timedelta(days=cfg.features.history_days)
    raw = tables.read_date_range(spark, raw_name, s.date, lookback_start, end, raw_version)
    quality.check_raw_schema(raw, s, raw_name)

    # Actions: day counts (the partition column only), repeated ids (the id column only),
    # history (row rules and the two entity windows, cached), vocabulary sizes, dense
    # statistics, then one write per table. The rule-annotated rows are not cached: building
    # the cache cost more than scanning the log again for the quarantine.
    rows_per_day = {r[0]: r[1] for r in raw.groupBy(s.date).count().collect()}
    day_counts = {d: n for d, n in rows_per_day.items() if d is not None and start <= d <= end}
    quality.check_days_present(day_counts, start, end, raw_name, cfg.quality.min_rows_per_day)
    input_rows = sum(day_counts.values())
    log.info("read %s rows for %s..%s from %s (version %s), %s more for %d days of history",
             f"{input_rows:,}", start, end, raw_name, raw_version,
             f"{sum(rows_per_day.values()) - input_rows:,}", cfg.features.history_days)

    in_range = (F.col(s.date) >= F.lit(start)) & (F.col(s.date) <= F.lit(end))
    annotated = quality.annotate_row_rules(raw, cfg).withColumn("_in_range", in_range)
    quarantined = quality.quarantined_rows(annotated.where("_in_range").drop("_in_range"), cfg, run_id)
    accepted = quality.accepted_rows(annotated)

    labelled = transforms.with_modality(accepted, cfg, s.slot)
    with_hist = transforms.with_history(labelled, cfg, last_day=end, first_day=start) \
        .where("_in_range").drop("_in_range")
    with_hist = with_hist.withColumn("split", transforms.split_column(F.col(s.date), day_split))
    with_hist = with_hist.persist(StorageLevel.MEMORY_AND_DISK)
    accepted_rows = with_hist.count()
    log.info("point-in-time history (%d days) on %s accepted rows", cfg.features.history_days,
             f"{accepted_rows:,}")

    train = with_hist.where(F.col("split") == "train")
    train_start, train_end = transforms.train_window(day_split)
    fitted = transforms.build_vocabularies(train, s.categorical, cfg.features.min_count).withColumns({
        "run_id": F.lit(run_id), "train_start": F.lit(train_start), "train_end": F.lit(train_end)})
    dense_names = dense_feature_names(cfg)
    log1p = transforms.log1p_feature_names(cfg)
    stats = transforms.dense_statistics(train, dense_names, log1p)

    # The vocabularies and dense statistics commit before the features that use them, so no
    # reader meets features whose vocabulary is missing; and the encoding reads the vocabulary
    # back from its table: a plan of one scan, where the fitted frame carries the whole history
    # plan into each of the per-column joins (~5 s more driver time per build, measured).
    fitted_tables = {tables.VOCABULARIES: fitted, tables.FEATURE_STATS: stats.withColumn("run_id", F.lit(run_id))}
    versions = tables.replace_run_rows_of_tables({cfg.table(t): df for t, df in fitted_tables.items()}, run_id)
    written = {t: versions[cfg.table(t)] for t in fitted_tables}
    vocab = tables.read_table(spark, cfg.table(tables.VOCABULARIES), written[tables.VOCABULARIES]) \
        .where(F.col("run_id") == run_id)

    encoded = transforms.encode_categoricals(with_hist, vocab, s.categorical)
    scaled = transforms.scale_dense(encoded, stats, log1p)
    renamed = scaled.withColumns({      # one projection: each DataFrame call re-analyses the plan
        "impression_id": F.col(s.id).cast("string"), "event_ts": F.col(s.timestamp).cast("timestamp"),
        "event_date": F.col(s.date).cast("date"), "slot": F.col(s.slot),
        "slot_id": transforms.slot_id_column(F.col(s.slot), cfg), "label": F.col(s.label).cast("int"),
        "build_run_id": F.lit(run_id)})
    sampled = sampling.stratified_downsample(renamed, cfg.sampling.rates, cfg.sampling.seed)
    features = sampled.select(*feature_columns(cfg, sampled.columns))
    log.info("vocabularies and dense statistics fitted on %s..%s and written; encoding and writing",
             train_start, train_end)

    # The two fitted tables went together, now the two date-range writes (each pair overlaps its
    # Delta commits' driver-side waits: core.tables.concurrently), then the sampling report. The
    # rows each write wrote, and the train rows per stratum after sampling, are observed as the
    # writes run (DataFrame.observe), not counted by reading the tables back.
    features_written, quarantine_written = Observation(), Observation()
    features = features.observe(features_written, F.count(F.lit(1)).alias("rows"),
                                *sampling.train_rows_observed(cfg.sampling.rates))
    quarantined = quarantined.observe(quarantine_written, F.count(F.lit(1)).alias("rows"))
    written |= tables.concurrently({
        tables.QUARANTINE: lambda: tables.replace_date_range(
            quarantined, cfg.table(tables.QUARANTINE), "event_date", start, end, ["event_date"],
            only_where="stage = 'build_features'"),   # an ingest's rejects of these days stay
        tables.FEATURES: lambda: tables.replace_date_range(
            features, cfg.table(tables.FEATURES), "event_date", start, end, ["event_date"])})
    # rows before sampling from the cache: the encoded rows are never computed a second time
    before = sampling.train_rows_by_stratum(with_hist, s.slot, s.label)
    after = sampling.observed_train_rows(features_written.get, cfg.sampling.rates)
    report = sampling.sampling_report(spark, before, after, cfg.sampling.rates, run_id)
    written[tables.SAMPLING_RATES] = tables.replace_run_rows(report, cfg.table(tables.SAMPLING_RATES), run_id)
    quarantined_rows, feature_rows = quarantine_written.get["rows"], features_written.get["rows"]
    with_hist.unpersist()
    quality.check_row_accounting(input_rows, accepted_rows, quarantined_rows)
    log.info("wrote %s feature rows (train split down-sampled), %s quarantined rows", f"{feature_rows:,}",
             f"{quarantined_rows:,}")
    return BuildResult(run_id, start, end, day_split, input_rows, accepted_rows, quarantined_rows,
                       feature_rows, {tables.IMPRESSIONS: raw_version}, written)


def validate_tables(spark: SparkSession, cfg: Config, start: dt.date, end: dt.date,
                    run_id: str) -> tuple[list[expectations.SuiteResult], dict[str, int]]:
    """Run the raw and feature suites on [start, end]; write one ``dq_results`` row each, naming
    the suite's result page in the GX Data Docs under storage.artifacts_dir/great_expectations."""
    raw_name, feat_name = cfg.table(tables.IMPRESSIONS), cfg.table(tables.FEATURES)
    versions = {tables.IMPRESSIONS: tables.latest_version(spark, raw_name),
                tables.FEATURES: tables.latest_version(spark, feat_name)}
    raw = tables.read_date_range(spark, raw_name, cfg.schema.date, start, end, versions[tables.IMPRESSIONS])
    feats = tables.read_date_range(spark, feat_name, "event_date", start, end, versions[tables.FEATURES])
    project = expectations.gx_project(cfg)          # Data Docs: expectations.data_docs_index(project)
    results = [expectations.run_suite(expectations.numeric_label(raw, cfg), raw_name,
                                      expectations.raw_expectations(cfg, start, end), project, run_id),
               expectations.run_suite(feats, feat_name, expectations.feature_expectations(cfg), project, run_id)]
    rows = [(run_id, o.table, o.expectation, o.column, o.success, o.observed,
             json.dumps(o.details, default=str, sort_keys=True), start, end, r.data_docs)
            for r in results for o in r.outcomes]
    df = spark.createDataFrame(rows, DQ_RESULTS_SCHEMA).withColumn("validated_at", F.current_timestamp())
    tables.replace_run_rows(df, cfg.table(tables.DQ_RESULTS), run_id)
    return results, versions


DQ_RESULTS_SCHEMA = (
    "run_id string, table string, expectation string, column string, success boolean, "
    "observed string, details string, start_date date, end_date date, data_docs string")
