"""Data quality of rows: the raw-log schema check and the row-level rules with quarantine
(table-level gates: features/expectations.py).

Row-level rules split a raw batch into accepted and quarantined rows (accepted +
quarantined = input, always); every quarantined row keeps its full content as JSON and the
reasons it was rejected.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.config import Config, RawLogSchema

REASONS = "_reasons"
RAW_ROW = "_raw_row"        # the row as read from a raw source, before type coercion (JSON)
# Repeated impression ids up to this many are collected and broadcast to the duplicate rule's joins.
BROADCAST_MAX_IDS = 100_000


class SchemaDriftError(ValueError):
    """The raw log's columns differ from conf/schema.yaml."""


class EmptyInputError(ValueError):
    """A requested day has no rows at all."""


# ----------------------------------------------------------------------------- schema
def check_raw_schema(df: DataFrame, schema: RawLogSchema, table: str) -> None:
    columns = set(df.columns)
    missing = [c for c in schema.required_columns if c not in columns]
    if missing:
        raise SchemaDriftError(
            f"{table}: missing column(s) {', '.join(missing)} required by conf/schema.yaml "
            f"(present: {', '.join(df.columns)})")
    expected = set(schema.required_columns) | set(schema.passthrough)
    extra = [c for c in df.columns if c not in expected]
    if extra and not schema.allow_extra_columns:
        raise SchemaDriftError(
            f"{table}: unexpected column(s) {', '.join(extra)} not declared in conf/schema.yaml; "
            f"declare them (categorical/dense/passthrough) or set schema.allow_extra_columns: true")


def check_days_present(day_counts: dict[dt.date, int], start: dt.date, end: dt.date,
                       table: str, min_rows: int) -> None:
    """Fail on days below ``min_rows`` (quality.min_rows_per_day; 0 allows empty days)."""
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    short = [f"{d.isoformat()} ({day_counts.get(d, 0)} rows)" for d in days
             if day_counts.get(d, 0) < min_rows]
    if short:
        raise EmptyInputError(
            f"{table}: day(s) with fewer than {min_rows} rows in the requested range "
            f"{start}..{end}: {', '.join(short)}")


# ----------------------------------------------------------------------------- row rules
def row_rule_reasons(cfg: Config) -> list[Column]:
    """One nullable string per rule: the reason a row breaks it, or null."""
    s, q = cfg.schema, cfg.quality
    slots = list(cfg.taxonomy.slot_names)
    label = F.col(s.label).cast("double")
    rules = [
        F.when(F.col(s.id).isNull(), F.lit(f"{s.id}: null")),
        F.when(F.col(s.timestamp).isNull(), F.lit(f"{s.timestamp}: null")),
        F.when(F.col(s.slot).isNull(), F.lit(f"{s.slot}: null"))
         .when(~F.col(s.slot).isin(*slots),
               F.concat(F.lit(f"{s.slot}: '"), F.col(s.slot), F.lit("' is not in the taxonomy"))),
        F.when(label.isNull() | ~label.isin(0.0, 1.0),
               F.concat(F.lit(f"{s.label}: "), F.coalesce(F.col(s.label).cast("string"), F.lit("null")),
                        F.lit(" is not 0 or 1"))),
        F.when(F.to_date(F.col(s.timestamp)) != F.col(s.date),
               F.concat(F.lit(f"{s.timestamp}: "), F.col(s.timestamp).cast("string"),
                        F.lit(f" is outside its {s.date} "), F.col(s.date).cast("string"))),
    ]
    for c in s.dense:
        v = F.col(c).cast("double")
        rules.append(F.when(v.isNull() | F.isnan(v) | (F.abs(v) > q.dense_abs_max),
                            F.concat(F.lit(f"{c}: "), F.coalesce(F.col(c).cast("string"), F.lit("null")),
                                     F.lit(" is not a finite number"))))
    return rules


def annotate_row_rules(df: DataFrame, cfg: Config) -> DataFrame:
    """Add ``_reasons`` (array<string>, empty when the row is accepted).

    Duplicate impression ids: the features table is keyed by (event_date, impression_id), so a
    copy is a row with the id and the date of another: the earliest (by timestamp, then full
    content) is kept, every later copy is quarantined, so reruns pick the same survivor. An id on
    two days is two rows: a day is built alone, and days built one at a time or as a range must
    agree.
    """
    s = cfg.schema
    rules = row_rule_reasons(cfg)
    # the array filter runs interpreted (no codegen): only for rows that break a rule
    reasons = F.when(F.coalesce(*rules).isNull(), F.array().cast("array<string>")) \
        .otherwise(F.filter(F.array(*rules), lambda r: r.isNotNull()))
    with_reasons = df.withColumn(REASONS, reasons)
    # Only rows of repeated ids need the tie-break window, which shuffles and sorts every
    # column: the ids are counted on a one-column projection (an action), and rows of ids
    # seen once pass through without a shuffle. The repeated ids are few on real logs: they
    # are collected once and broadcast from the driver (a lazy broadcast would count the ids
    # again for every join of every action), unless there are too many.
    repeated = df.where(F.col(s.id).isNotNull()).groupBy(s.date, s.id).count().where(F.col("count") > 1) \
        .select(F.col(s.date).alias("_repeated_date"), F.col(s.id).alias("_repeated_id"))
    ids = repeated.limit(BROADCAST_MAX_IDS + 1).collect()
    if not ids:
        return with_reasons
    if len(ids) <= BROADCAST_MAX_IDS:
        repeated = F.broadcast(df.sparkSession.createDataFrame(ids, repeated.schema))
    content = F.to_json(F.struct(*[F.col(c) for c in df.columns]))
    order = Window.partitionBy(s.date, s.id).orderBy(F.col(s.timestamp).asc_nulls_last(), content)
    duplicate = F.lit(f"{s.id}: duplicate of an earlier row")
    is_repeated = (F.col(s.id) == F.col("_repeated_id")) & F.col(s.date).eqNullSafe(F.col("_repeated_date"))
    copies = with_reasons.join(repeated, is_repeated, "left_semi").withColumn(
        REASONS, F.when(F.row_number().over(order) > 1, F.array_append(F.col(REASONS), duplicate))
        .otherwise(F.col(REASONS)))
    return with_reasons.join(repeated, is_repeated, "left_anti").unionByName(copies)


def check_row_accounting(input_rows: int, accepted: int, quarantined: int) -> None:
    """accepted + quarantined = input: no row is lost or counted twice between the two tables."""
    if accepted + quarantined != input_rows:
        raise RuntimeError(f"row accounting broke: {input_rows} input rows but {accepted} accepted "
                           f"+ {quarantined} quarantined")


def accepted_rows(annotated: DataFrame) -> DataFrame:
    return annotated.where(F.size(REASONS) == 0).drop(REASONS, RAW_ROW)


def quarantined_rows(annotated: DataFrame, cfg: Config, run_id: str, stage: str = "build_features") -> DataFrame:
    """Rejected rows in the ``quarantine`` table's shape: key, reason, whole row as JSON, and the
    ``stage`` that rejected them (build_features, or ``ingest:<source>`` for a raw log's ingest:
    each stage replaces only its own rows of a date range). The row as it was read is kept:
    ``_raw_row`` when the rows were coerced (features.ingest), else every column."""
    s = cfg.schema
    content = [c for c in annotated.columns if c not in (REASONS, RAW_ROW)]
    raw = F.col(RAW_ROW) if RAW_ROW in annotated.columns else F.to_json(F.struct(*[F.col(c) for c in content]))
    return annotated.where(F.size(REASONS) > 0).select(
        F.col(s.id).cast("string").alias("impression_id"),
        F.col(s.date).cast("date").alias("event_date"),
        F.array_join(F.col(REASONS), "; ").alias("reason"),
        raw.alias("raw_row"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
        F.lit(stage).alias("stage"),
    )
