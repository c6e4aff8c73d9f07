"""The feature build: the raw impressions of some days -> their partitions of the daily store.

Each day is built once (re-running a day replaces it, its ids unchanged): schema check -> row
rules (bad rows to ``quarantine``) -> point-in-time history from the ``entity_daily`` aggregates of
the days before and the rows of the built days -> the persistent vocabularies extended by the new
days (features/vocabulary.py: a value keeps its id in every later build) -> encoding, raw (or
log1p) dense values -> idempotent writes of the day partitions of ``features``, ``entity_daily``
and ``quarantine``. Nothing here depends on a training window: splits, down-sampling and dense
statistics are chosen when a model is trained (core/training_sets.py).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from core import tables
from core.config import Config
from core.delta_versions import partition_days
from core.feature_table import OLD_LAYOUT_COLUMN, dense_feature_names, feature_columns, old_layout_error
from features import entity_history, expectations, quality, transforms, vocabulary

log = logging.getLogger(__name__)


class MissingHistoryDays(ValueError):
    """Days a build needs are in neither the store nor the log (history days), or are logged but
    unbuilt between the vocabulary's last counted day and the build (their ids)."""


@dataclass
class BuildResult:
    run_id: str
    start: dt.date
    end: dt.date
    input_rows: int
    accepted_rows: int
    quarantined_rows: int
    feature_rows: int
    new_ids: dict[str, int] = field(default_factory=dict)         # feature -> ids admitted by this build
    hashed: dict[str, int] = field(default_factory=dict)          # feature -> of them, sent to hash buckets
    recounted_days: tuple[dt.date, ...] = ()                       # rebuilt days: ids and counts as they were
    short_history_days: tuple[dt.date, ...] = ()                   # history days missing, built without
    versions_read: dict[str, int] = field(default_factory=dict)
    versions_written: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return {"input_rows": self.input_rows, "accepted_rows": self.accepted_rows,
                "quarantined_rows": self.quarantined_rows, "feature_rows": self.feature_rows,
                "new_ids": self.new_ids, "hashed_ids": self.hashed,
                "rebuilt_days": [d.isoformat() for d in self.recounted_days],
                "short_history_days": [d.isoformat() for d in self.short_history_days]}


def build_features(spark: SparkSession, cfg: Config, start: dt.date, end: dt.date, run_id: str,
                   short_history: bool = False, history_only: bool = False) -> BuildResult:
    """Build the days [start, end] into the daily store. History days the log holds but the store
    does not are aggregated first; ``short_history``: build even though history days after the
    log's first day are in neither (their events are then not counted).
    ``history_only``: write only the days' ``entity_daily`` aggregates, the history later days read
    (what a build does first for logged days of its history window that were never built)."""
    s = cfg.schema
    check_store_layout(spark, cfg)
    raw_name = cfg.table(tables.IMPRESSIONS)
    raw_version = tables.latest_version(spark, raw_name) if tables.table_exists(spark, raw_name) else None
    raw = tables.read_date_range(spark, raw_name, s.date, start, end, raw_version)
    quality.check_raw_schema(raw, s, raw_name)
    day_counts = {r[0]: r[1] for r in raw.groupBy(s.date).count().collect() if r[0] is not None}
    quality.check_days_present(day_counts, start, end, raw_name, cfg.quality.min_rows_per_day)
    input_rows = sum(day_counts.values())

    state_name, daily_name = cfg.table(tables.VOCABULARIES), cfg.table(tables.ENTITY_DAILY)
    read = {tables.IMPRESSIONS: raw_version}
    if history_only:
        return _aggregate_history(spark, cfg, raw, start, end, run_id, input_rows, read)
    state = vocabulary.empty_state(spark)
    if tables.table_exists(spark, state_name):
        read[tables.VOCABULARIES] = tables.latest_version(spark, state_name)
        state = tables.read_table(spark, state_name, read[tables.VOCABULARIES])
    watermark = vocabulary.counted_through(state)
    days = _history_days(spark, cfg, raw_name, daily_name, watermark, start)
    if days.uncounted:
        raise MissingHistoryDays(
            f"{state_name} is counted through {watermark}, but {raw_name} holds unbuilt day(s) "
            f"{_days_text(days.uncounted)} before {start}: build them first (the ids of later days "
            "depend on the values seen on them)")
    if days.missing and not short_history:
        raise MissingHistoryDays(
            f"the {cfg.features.history_days}-day history of {start} needs day(s) {_days_text(days.missing)}, "
            f"which neither {raw_name} nor {daily_name} holds: restore their log, or pass --short-history "
            "to build without their events")
    if days.missing:
        log.warning("building %s..%s without the events of missing history day(s) %s (--short-history)",
                    start, end, _days_text(days.missing))
    for first, last in _ranges(days.unaggregated):        # logged, not built: their aggregates only
        build_features(spark, cfg, first, last, run_id, history_only=True)
    log.info("read %s rows for %s..%s from %s (version %s)", f"{input_rows:,}", start, end, raw_name, raw_version)

    annotated = quality.annotate_row_rules(raw, cfg)
    quarantined = quality.quarantined_rows(annotated, cfg, run_id)
    labelled = transforms.with_modality(quality.accepted_rows(annotated), cfg, s.slot) \
        .persist(StorageLevel.MEMORY_AND_DISK)
    accepted_rows = labelled.count()

    # the vocabulary counts the days after its watermark; a day at or before it is a rebuild,
    # encoded with the ids it had (a value first seen in its changed rows stays OOV there)
    recounted = tuple(sorted(d for d in day_counts if watermark is not None and d <= watermark))
    new_ids: dict[str, int] = {}
    hashed: dict[str, int] = {}
    written: dict[str, int] = {}
    if watermark is None or end > watermark:
        fresh = labelled if watermark is None else labelled.where(F.col(s.date) > F.lit(watermark))
        counts = vocabulary.count_days(fresh, s.categorical, s.date).persist(StorageLevel.MEMORY_AND_DISK)
        extended = vocabulary.extend(state, counts, cfg.features.min_count, cfg.features.vocabulary_caps, end)
        admissions = Observation()
        extended = extended.observe(admissions, *_admissions_observed(s.categorical, watermark))
        # the state is written before the features that use it, and read back: a plan of one scan
        written[tables.VOCABULARIES] = tables.overwrite_table(extended, state_name)
        counts.unpersist()
        state = tables.read_table(spark, state_name, written[tables.VOCABULARIES])
        observed = admissions.get
        new_ids = {c: int(observed[f"new:{c}"]) for c in s.categorical if observed[f"new:{c}"]}
        hashed = {c: int(observed[f"hashed:{c}"]) for c in s.categorical if observed[f"hashed:{c}"]}
        for feature, n in sorted(hashed.items()):
            log.warning("vocabulary of %s is at capacity: %d value(s) went to hash buckets", feature, n)
    if recounted:
        log.info("rebuilding day(s) %s, already counted into %s: their ids stay as they were",
                 _days_text(recounted), state_name)

    earlier = _entity_days(spark, daily_name, start, cfg.features.history_days, read)
    with_hist = entity_history.with_history_from_aggregates(labelled, earlier, cfg, start, end)
    encoded = vocabulary.encode(with_hist, state, s.categorical, s.date)
    valued = transforms.dense_values(encoded, dense_feature_names(cfg), transforms.log1p_feature_names(cfg))
    renamed = valued.withColumns({      # one projection: each DataFrame call re-analyses the plan
        "impression_id": F.col(s.id).cast("string"), "event_ts": F.col(s.timestamp).cast("timestamp"),
        "event_date": F.col(s.date).cast("date"), "slot": F.col(s.slot),
        "slot_id": transforms.slot_id_column(F.col(s.slot), cfg), "label": F.col(s.label).cast("int"),
        "build_run_id": F.lit(run_id)})
    features = renamed.select(*feature_columns(cfg, renamed.columns))
    aggregates = entity_history.entity_day_aggregates(labelled, cfg)

    # the day partitions of the three tables, written concurrently (core.tables.concurrently); the
    # rows each wrote are observed as the writes run, not counted by reading the tables back
    features_written, quarantine_written = Observation(), Observation()
    features = features.observe(features_written, F.count(F.lit(1)).alias("rows"))
    quarantined = quarantined.observe(quarantine_written, F.count(F.lit(1)).alias("rows"))
    written |= tables.concurrently({
        tables.QUARANTINE: lambda: tables.replace_date_range(
            quarantined, cfg.table(tables.QUARANTINE), "event_date", start, end, ["event_date"],
            only_where="stage = 'build_features'"),   # an ingest's rejects of these days stay
        tables.FEATURES: lambda: tables.replace_date_range(
            features, cfg.table(tables.FEATURES), "event_date", start, end, ["event_date"]),
        tables.ENTITY_DAILY: lambda: tables.replace_date_range(
            aggregates, daily_name, "event_date", start, end, ["event_date"])})
    quarantined_rows, feature_rows = quarantine_written.get["rows"], features_written.get["rows"]
    labelled.unpersist()
    quality.check_row_accounting(input_rows, accepted_rows, quarantined_rows)
    log.info("wrote %s feature rows and %s quarantined rows for %s..%s", f"{feature_rows:,}",
             f"{quarantined_rows:,}", start, end)
    return BuildResult(run_id, start, end, input_rows, accepted_rows, quarantined_rows, feature_rows, new_ids,
                       hashed, recounted, tuple(days.missing), read, written)


def days_to_build(spark: SparkSession, cfg: Config, start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """The consecutive ranges of [start, end] to build, oldest first: the days ``features`` does
    not hold yet, and ``end`` always (a daily run rebuilds its own day when retried)."""
    name = cfg.table(tables.FEATURES)
    held = partition_days(spark, name, "event_date") if tables.table_exists(spark, name) else set()
    return _ranges(d for d in (start + dt.timedelta(days=i) for i in range((end - start).days + 1))
                   if d not in held or d == end)


def check_store_layout(spark: SparkSession, cfg: Config) -> None:
    """Refuse, in one line, a warehouse whose features were written by the layout before the daily
    store (a ``split`` column, vocabularies refit per build)."""
    name = cfg.table(tables.FEATURES)
    if tables.table_exists(spark, name) and OLD_LAYOUT_COLUMN in spark.table(name).columns:
        raise ValueError(old_layout_error(name))
    state = cfg.table(tables.VOCABULARIES)
    if tables.table_exists(spark, state) and "counted_through" not in spark.table(state).columns:
        raise ValueError(old_layout_error(name))


def _aggregate_history(spark: SparkSession, cfg: Config, raw: DataFrame, start: dt.date, end: dt.date,
                       run_id: str, input_rows: int, read: dict) -> BuildResult:
    """The ``entity_daily`` partitions of [start, end] alone, from the accepted rows of ``raw``."""
    labelled = transforms.with_modality(quality.accepted_rows(quality.annotate_row_rules(raw, cfg)), cfg,
                                        cfg.schema.slot)
    daily = entity_history.entity_day_aggregates(labelled, cfg)
    written = {tables.ENTITY_DAILY: tables.replace_date_range(
        daily, cfg.table(tables.ENTITY_DAILY), "event_date", start, end, ["event_date"])}
    log.info("wrote the entity aggregates of %s..%s, the history of the days after them", start, end)
    return BuildResult(run_id, start, end, input_rows, 0, 0, 0, versions_read=read, versions_written=written)


@dataclass(frozen=True)
class HistoryDays:
    """What the days before a build's first day hold. ``uncounted``: logged days after the vocabulary's
    watermark, never built (their values would be missing from the ids); ``unaggregated``: logged
    days of the history window without aggregates (the build writes them first); ``missing``:
    history days after the log's first day that neither the log nor the store holds (nor the
    vocabulary counted: a built day without a row has no partition)."""
    uncounted: tuple[dt.date, ...]
    unaggregated: tuple[dt.date, ...]
    missing: tuple[dt.date, ...]


def _history_days(spark: SparkSession, cfg: Config, raw_name: str, daily_name: str, watermark: dt.date | None,
                  start: dt.date) -> HistoryDays:
    """From the tables' file lists (no data read): the log's days before ``start`` (from the
    earlier of the history window and the watermark) and its first day, and the store's
    aggregated days. Days before the log's first day are no loss: there are no events to count."""
    window = [start - dt.timedelta(days=i) for i in range(cfg.features.history_days, 0, -1)]
    first = window[0] if watermark is None else min(window[0], watermark + dt.timedelta(days=1))
    if first >= start:
        return HistoryDays((), (), ())
    aggregated = partition_days(spark, daily_name, "event_date") if tables.table_exists(spark, daily_name) else set()
    if all(d in aggregated for d in window) and (watermark is None or watermark >= start - dt.timedelta(days=1)):
        return HistoryDays((), (), ())          # the daily case: the day before was built
    in_log = partition_days(spark, raw_name, cfg.schema.date)
    logged = {d for d in in_log if first <= d < start}
    log_start = min(in_log, default=None)
    return HistoryDays(
        uncounted=tuple(sorted(d for d in logged if watermark is not None and d > watermark)),
        unaggregated=tuple(d for d in window if d in logged and d not in aggregated),
        # a day counted into the vocabulary was built: without aggregates, it had no accepted row
        missing=tuple(d for d in window if d not in logged and d not in aggregated
                      and log_start is not None and d >= log_start and (watermark is None or d > watermark)))


def _ranges(days) -> list[tuple[dt.date, dt.date]]:
    """Sorted days as consecutive (first, last) ranges."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):
        if ranges and ranges[-1][1] == day - dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _entity_days(spark: SparkSession, name: str, start: dt.date, history_days: int, read: dict) -> DataFrame:
    """The ``entity_daily`` rows the history of rows from ``start`` on reads (one day of zone slack)."""
    if not tables.table_exists(spark, name):
        return spark.createDataFrame([], entity_history.ENTITY_DAILY_SCHEMA)
    read[tables.ENTITY_DAILY] = tables.latest_version(spark, name)
    return tables.read_date_range(spark, name, "event_date", start - dt.timedelta(days=history_days + 1),
                                  start - dt.timedelta(days=1), read[tables.ENTITY_DAILY])


def _admissions_observed(columns: tuple[str, ...], watermark: dt.date | None) -> list:
    """Aggregates, for ``DataFrame.observe`` on the vocabulary's write, of the ids the counting of
    the days after ``watermark`` admitted per feature (``new:<f>``), and of those hash buckets
    (``hashed:<f>``): the write reports them, no read of the state it wrote."""
    new = F.col("index").isNotNull()
    if watermark is not None:
        new = new & (F.date_sub(F.col("admitted_on"), 1) > F.lit(watermark))
    return [agg for c in columns for agg in (
        F.count_if(new & (F.col("feature") == c)).alias(f"new:{c}"),
        F.count_if(new & F.col("hashed") & (F.col("feature") == c)).alias(f"hashed:{c}"))]


def _days_text(days) -> str:
    days = sorted(days)
    return ", ".join(d.isoformat() for d in days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")


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
