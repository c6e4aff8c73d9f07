"""Bring a team's own raw impression log into the platform's ``impressions`` table.

A raw source (Parquet, CSV or JSON files, or a Delta table by path or name) is read as it is,
every column conf/schema.yaml names is coerced to the type its role needs, and the row rules of
the feature build are applied. Accepted rows replace the days they cover in ``impressions``
(re-ingesting a day replaces it); rejected rows go to ``quarantine`` with a reason naming the
column and the value, and the row as it was read. accepted + quarantined = rows read, always.

Types by role: id, slot, user, ad and categorical columns -> string; timestamp -> timestamp
(ISO text or epoch seconds); date -> date (derived from the timestamp when the source has no
such column); label -> int 0/1 (also true/false and "0"/"1"); dense -> double; passthrough
columns are kept as read.

A log that does not hold the schema's columns as such is reshaped by configuration (the optional
``ingest:`` section): ``lookups`` join dimension tables by key (a raw row without a match keeps
NULLs, which the row rules then quarantine), ``derived`` computes columns with Spark SQL
expressions. The quarantined ``_raw_row`` is always the source's row as read.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core import tables
from core.config import Config, ConfigError, IngestSettings, RawLogSchema
from core.config_data import RAW_SOURCE_FORMATS as SOURCE_FORMATS
from core.config_data import Lookup
from features import quality

log = logging.getLogger(__name__)

COERCION_REASONS = "_coercion_reasons"
LABEL_WORDS = {"1": 1, "true": 1, "0": 0, "false": 0}


class SourceError(ValueError):
    """The raw source cannot be read (missing path or table, unknown format, no rows)."""


class IngestConfigError(ConfigError):
    """An ``ingest:`` lookup or derived expression does not fit the raw log; names the key (a
    configuration error: the job exits 2, not retried)."""


@dataclass(frozen=True)
class RawSource:
    """Where a raw log is: ``location`` is a path (file, folder or glob) or, for ``delta``, a
    path or a table name; ``options`` go to Spark's reader (e.g. ``sep`` for CSV)."""
    location: str
    format: str
    options: Mapping[str, str] | None = None

    @property
    def stage(self) -> str:
        """The quarantine's ``stage`` of this source's rejects (each source replaces its own)."""
        return f"ingest:{self.location}"


@dataclass(frozen=True)
class IngestResult:
    start: dt.date
    end: dt.date
    read_rows: int
    accepted_rows: int
    quarantined_rows: int
    derived_date: bool                  # the source had no date column: it came from the timestamp
    impressions_version: int
    quarantine_version: int | None


def read_source(spark: SparkSession, source: RawSource) -> DataFrame:
    """The source's rows as stored; CSV columns are strings (coercion types them, naming bad values)."""
    if source.format not in SOURCE_FORMATS:
        raise SourceError(f"unknown source format {source.format!r}; choose from {', '.join(SOURCE_FORMATS)}")
    options = dict(source.options or {})
    is_path = "/" in source.location or Path(source.location).exists()
    if source.format == "delta" and not is_path:
        if not tables.table_exists(spark, source.location):
            raise SourceError(f"Delta table {source.location!r} does not exist (give a path or a table name)")
        return spark.table(source.location)
    if not _any_path(source.location):
        raise SourceError(f"raw source {source.location} does not exist")
    reader = spark.read.format(source.format).options(**options)
    if source.format == "csv":
        reader = reader.option("header", options.get("header", "true")).option("inferSchema", "false")
    return reader.load(source.location)


def _any_path(location: str) -> bool:
    if "://" in location and not location.startswith("file:"):
        return True                     # remote filesystems: Spark's reader says what is missing
    path = Path(location.removeprefix("file://").removeprefix("file:"))
    if path.exists():
        return True
    return path.parent.is_dir() and any(path.parent.glob(path.name))       # a glob such as logs/*.csv


# ----------------------------------------------------------------------------- reshaping
def read_lookup(spark: SparkSession, lookup: Lookup, settings: IngestSettings) -> DataFrame:
    """The lookup's rows; a key held twice would multiply raw rows, so it fails naming the key."""
    where = f"{settings.source}: ingest.lookups.{lookup.name}"
    try:
        table = read_source(spark, RawSource(lookup.location, lookup.format, lookup.options))
    except SourceError as exc:
        raise IngestConfigError(f"{where}: {exc}") from None
    missing = [c for c in lookup.key if c not in table.columns]
    if missing:
        raise IngestConfigError(f"{where}: key column(s) {', '.join(missing)} not in {lookup.location} "
                                f"(it has: {', '.join(table.columns)})")
    twice = table.groupBy(*lookup.key).count().where("count > 1").limit(5).collect()
    if twice:
        keys = ", ".join("/".join(str(r[c]) for c in lookup.key) for r in twice)
        raise IngestConfigError(f"{where}: key {'/'.join(lookup.key)} is not unique in {lookup.location} "
                                f"(e.g. {keys}): each raw row must match at most one row")
    return table


def reshape(spark: SparkSession, raw: DataFrame, cfg: Config) -> DataFrame:
    """The raw rows with ``_raw_row`` (as read), the lookups joined and the derived columns
    computed; with either configured, only the schema's columns (and ``_raw_row``) are kept."""
    settings, s = cfg.ingest, cfg.schema

    def log_columns() -> str:
        return ", ".join(c for c in shaped.columns if c != quality.RAW_ROW)

    shaped = raw.withColumn(quality.RAW_ROW, F.to_json(F.struct(*[F.col(f"`{c}`") for c in raw.columns])))
    for lookup in settings.lookups:
        table = read_lookup(spark, lookup, settings)
        unmatched = [c for c in lookup.key if c not in shaped.columns]
        if unmatched:
            raise IngestConfigError(f"{settings.source}: ingest.lookups.{lookup.name}: key column(s) "
                                    f"{', '.join(unmatched)} not in the raw log (it has: {log_columns()})")
        clash = sorted((set(table.columns) - set(lookup.key)) & set(shaped.columns))
        if clash:
            raise IngestConfigError(f"{settings.source}: ingest.lookups.{lookup.name}: column(s) "
                                    f"{', '.join(clash)} are in the raw log too; drop them from one side")
        shaped = shaped.join(F.broadcast(table), list(lookup.key), "left")
    for column, expression in settings.derived.items():
        try:
            shaped = shaped.withColumn(column, F.expr(expression))
            _ = shaped.schema                           # analyse now: a bad name fails here
        except Exception as exc:                        # ParseException / AnalysisException
            first_line = str(exc).strip().splitlines()[0]
            raise IngestConfigError(f"{settings.source}: ingest.derived.{column}: {expression!r} does not "
                                    f"fit the raw log: {first_line} (columns: {log_columns()})") from None
    if settings.reshapes:
        keep = [c for c in (*s.required_columns, *s.passthrough) if c in shaped.columns]
        shaped = shaped.select(*keep, quality.RAW_ROW)
    return shaped


# ----------------------------------------------------------------------------- coercion
def _reason(column: str, raw: Column, what: str) -> Column:
    return F.concat(F.lit(f"{column}: '"), raw.cast("string"), F.lit(f"' is not {what}"))


def _label(raw: Column, kind: T.DataType) -> Column:
    if isinstance(kind, T.BooleanType):
        return raw.cast("int")
    number = raw.try_cast("double") if not isinstance(kind, T.StringType) else F.coalesce(
        F.lower(F.trim(raw)).try_cast("boolean").cast("double"), F.trim(raw).try_cast("double"))
    return F.when(number == 1.0, F.lit(1)).when(number == 0.0, F.lit(0))


def coerce_to_schema(raw: DataFrame, schema: RawLogSchema, source_name: str) -> tuple[DataFrame, bool]:
    """(rows typed by conf/schema.yaml's roles, whether the date was derived from the timestamp).

    Keeps ``_raw_row`` (the row as read, JSON: see ``reshape``) and adds ``_coercion_reasons``
    (one reason per value that did not coerce, naming the column and the value). Missing columns
    fail here, naming them."""
    derived = schema.date not in raw.columns
    if derived and schema.timestamp in raw.columns:
        raw = raw.withColumn(schema.date, F.lit(None).cast("date"))    # filled from the timestamp below
    columns = [c for c in raw.columns if c != quality.RAW_ROW]
    quality.check_raw_schema(raw.select(*columns), schema, source_name)
    kinds = {f.name: f.dataType for f in raw.schema.fields}
    typed: dict[str, Column] = {}
    reasons: list[Column] = []

    def coerce(column: str, value: Column, what: str) -> None:
        typed[column] = value
        reasons.append(F.when(F.col(column).isNotNull() & value.isNull(), _reason(column, F.col(column), what)))

    for column in dict.fromkeys((schema.id, schema.slot, schema.user, schema.ad, *schema.categorical)):
        typed[column] = F.col(column).cast("string")
    timestamp = F.col(schema.timestamp)
    if isinstance(kinds[schema.timestamp], T.NumericType):
        ts_value = F.timestamp_seconds(timestamp.try_cast("double"))
    else:                               # text: ISO, or epoch seconds as CSV files hold them
        epoch = F.trim(timestamp).rlike(r"^-?[0-9]+(\.[0-9]+)?$")
        ts_value = F.when(epoch, F.timestamp_seconds(F.trim(timestamp).try_cast("double"))) \
            .otherwise(timestamp.try_cast("timestamp"))
    coerce(schema.timestamp, ts_value, "a timestamp")
    if derived:
        typed[schema.date] = F.to_date(ts_value)
    else:
        coerce(schema.date, F.col(schema.date).try_cast("date"), "a date (YYYY-MM-DD)")
        # the build reads days by this column: a row without one would never be read again
        reasons.append(F.when(F.col(schema.date).isNull(), F.lit(f"{schema.date}: null")))
    coerce(schema.label, _label(F.col(schema.label), kinds[schema.label]), "0 or 1")
    for column in schema.dense:
        coerce(column, F.col(column).try_cast("double"), "a number")
    conformed = raw.select(
        *[typed[c].alias(c) if c in typed else F.col(c) for c in columns],
        F.col(quality.RAW_ROW),
        F.filter(F.array(*reasons), lambda r: r.isNotNull()).alias(COERCION_REASONS))
    return conformed, derived


def annotate(conformed: DataFrame, cfg: Config) -> DataFrame:
    """The build's row rules on coerced rows; a column whose value did not coerce is named once
    (by its coercion reason, not again by the rule its null then breaks)."""
    annotated = quality.annotate_row_rules(conformed, cfg)
    column_of = lambda r: F.substring_index(r, ":", 1)                    # noqa: E731
    rules = F.filter(F.col(quality.REASONS), lambda rule: ~F.exists(
        F.col(COERCION_REASONS), lambda bad: column_of(bad) == column_of(rule)))
    return annotated.withColumn(quality.REASONS, F.concat(F.col(COERCION_REASONS), rules)).drop(COERCION_REASONS)


# ----------------------------------------------------------------------------- the job's work
def ingest(spark: SparkSession, cfg: Config, source: RawSource, run_id: str,
           start: dt.date | None = None, end: dt.date | None = None) -> IngestResult:
    """Read ``source``, keep the days [start, end] (default: every day it holds) plus rows whose
    date cannot be read, and replace those days of ``impressions`` / this source's quarantine."""
    s = cfg.schema
    raw = reshape(spark, read_source(spark, source), cfg)
    conformed, derived = coerce_to_schema(raw, s, f"raw source {source.location}")
    if start is None or end is None:
        first, last = conformed.agg(F.min(s.date), F.max(s.date)).first()
        if first is None:
            raise SourceError(f"raw source {source.location} has no row with a readable {s.date}"
                              + (f" (derived from {s.timestamp})" if derived else ""))
        start, end = start or first, end or last
    if end < start:
        raise ValueError(f"--end-date {end} is before --start-date {start}")
    date = F.col(s.date)
    selected = conformed.where(date.isNull() | ((date >= F.lit(start)) & (date <= F.lit(end))))
    annotated = annotate(selected, cfg).persist()
    try:
        read_rows = annotated.count()
        accepted = quality.accepted_rows(annotated)
        rejected = quality.quarantined_rows(annotated, cfg, run_id, stage=source.stage)
        impressions = tables.replace_log_range(accepted, cfg, start, end)
        quarantine_name = cfg.table(tables.QUARANTINE)
        quarantine_version = None
        rejected_count = rejected.count()
        if rejected_count or tables.table_exists(spark, quarantine_name):
            stage = source.stage.replace("'", "''")
            quarantine_version = tables.replace_date_range(
                rejected, quarantine_name, "event_date", start, end, ["event_date"],
                only_where=f"stage = '{stage}'", with_undated=True)
        accepted_count = tables.read_date_range(spark, cfg.table(tables.IMPRESSIONS), s.date, start, end,
                                                impressions).count()
    finally:
        annotated.unpersist()
    quality.check_row_accounting(read_rows, accepted_count, rejected_count)
    return IngestResult(start, end, read_rows, accepted_count, rejected_count, derived, impressions,
                        quarantine_version)
