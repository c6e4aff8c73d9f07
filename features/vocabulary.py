"""Persistent, append-only vocabularies: each categorical value keeps its id forever.

The feature table is a daily store (each day built once), so ids cannot be refit per build: a
day's ids must mean tomorrow what they mean today, and yesterday's model must score today.
Here the vocabulary is a state extended day by day. Pure functions of DataFrames: the caller
reads and writes the vocabularies table.

The state (``VOCABULARY_SCHEMA``) has one row per (feature, value) ever seen:

- ``index``: the value's id; null while the value is a candidate (fewer than ``min_count``
  sightings so far). Ids start at 1; 0 (``OOV_INDEX``) is out-of-vocabulary.
- ``count``: sightings over every day counted so far.
- ``first_seen``: the first day the value was seen.
- ``admitted_on``: the first event_date whose rows get ``index``: the day after the one on which
  its cumulative sightings reached ``min_count`` (that day's rows were encoded before its later
  events were known, so they keep OOV). Null while a candidate.
- ``hashed``: the feature's capacity was full when the value was admitted; ``index`` is then its
  hash bucket, ``capacity + 1 + pmod(xxhash64(value), hash_buckets)`` (Spark's xxhash64, whose seed
  is fixed at 42: a value's bucket is the same in every run), so encoding stays a lookup.
- ``counted_through``: the state's watermark, the last day counted into it, the same on every row
  (``counted_through(state)`` reads it). Counting a day at or before it again is refused.

``min_count`` must stay the same over a state's life: a candidate is admitted on the day its
running count reaches it, which a later, lower ``min_count`` does not revisit.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.columns import lookup
from core.config_data import MAX_CATEGORICAL_ID
from features.transforms import OOV_INDEX, encode_categoricals, feature_value_pairs

VOCABULARY_SCHEMA = ("feature string, value string, index int, count long, first_seen date, "
                     "admitted_on date, hashed boolean, counted_through date")
COLUMNS = tuple(part.split()[0] for part in VOCABULARY_SCHEMA.split(", "))
DAY_COUNTS_SCHEMA = "feature string, value string, event_date date, count long"
Caps = Mapping[str, tuple[int, int]]       # feature -> (capacity, hash_buckets)
_KEY = ["feature", "value"]


def empty_state(spark: SparkSession) -> DataFrame:
    """The state before any day is counted."""
    return spark.createDataFrame([], VOCABULARY_SCHEMA)


def count_days(df: DataFrame, columns: tuple[str, ...], date_col: str) -> DataFrame:
    """(feature, value, event_date, count): sightings of each column's values per day.

    Values are cast to string (the state's key); null values and rows without a date are not
    sightings.
    """
    return (df.select(F.col(date_col).cast("date").alias("event_date"), feature_value_pairs(columns).alias("p"))
            .select("p.feature", "p.value", "event_date")
            .where(F.col("value").isNotNull() & F.col("event_date").isNotNull())
            .groupBy("feature", "value", "event_date")
            .agg(F.count(F.lit(1)).cast("long").alias("count")))


def counted_through(state: DataFrame) -> dt.date | None:
    """The last day counted into ``state`` (None: nothing counted yet)."""
    return state.agg(F.max("counted_through")).first()[0]


def extend(state: DataFrame, day_counts: DataFrame, min_count: int, caps: Caps | None = None,
           through: dt.date | None = None) -> DataFrame:
    """The state after counting ``day_counts`` (``count_days``' rows of one or more days, all after
    ``counted_through(state)``); the new watermark is ``through`` (default: their last day).

    Existing ids, admission days and hash buckets never change. A value whose running count
    (over the state's count and then day by day) reaches ``min_count`` on day d is admitted with
    ``admitted_on = d + 1``. A feature's new ids follow its largest own id, in the order
    (admission day, running count at admission descending, value): the order in which counting
    the days one at a time would assign them, so one range or its days one by one give the same
    state row for row. Under ``caps`` a feature holding ``capacity`` own ids sends later
    admissions to hash buckets (``hashed_counts`` says how many). One small job checks the inputs
    (the watermark, each feature's largest id and days); persist ``day_counts`` if it is costly.
    """
    caps = dict(caps or {})
    if min_count < 1:
        raise ValueError(f"vocabulary min_count must be >= 1, got {min_count}")
    for feature, (capacity, buckets) in caps.items():
        if capacity < 1 or buckets < 1 or capacity + buckets > MAX_CATEGORICAL_ID:
            raise ValueError(f"vocabulary cap of {feature!r}: capacity {capacity} and hash_buckets "
                             f"{buckets} must be >= 1 and sum to at most {MAX_CATEGORICAL_ID}")
    top, watermark, days = _profile(state, day_counts)
    for feature, (capacity, _) in caps.items():
        if top.get(feature, 0) > capacity:
            raise ValueError(f"vocabulary of {feature!r} already holds id {top[feature]}, above its "
                             f"capacity {capacity}: its hash buckets would reuse own ids")
    last = _checked_days(days, watermark, through)
    if last is None:
        return state if through is None else state.withColumn("counted_through", F.lit(through))
    through = through or last

    daily = day_counts.groupBy(*_KEY, "event_date").agg(F.sum("count").cast("long").alias("count"))
    prior = state.select(*_KEY, F.col("count").alias("_prior"), F.col("index").alias("_old"))
    running = Window.partitionBy(*_KEY).orderBy("event_date").rowsBetween(Window.unboundedPreceding, 0)
    reached = (daily.join(prior, _KEY, "left")
               .where(F.col("_old").isNull())
               .withColumn("_running", F.coalesce(F.col("_prior"), F.lit(0)) + F.sum("count").over(running))
               .where(F.col("_running") >= min_count)
               .groupBy(*_KEY).agg(F.min(F.struct("event_date", "_running")).alias("_at")))
    order = Window.partitionBy("feature").orderBy(
        F.col("_at.event_date"), F.col("_at._running").desc(), F.col("value"))
    own = lookup(F.col("feature"), top, 0).cast("long") + F.row_number().over(order)
    capacity = lookup(F.col("feature"), {f: c for f, (c, _) in caps.items()}).cast("long")
    buckets = lookup(F.col("feature"), {f: b for f, (_, b) in caps.items()}).cast("long")
    admitted = (reached.withColumn("_own", own)
                .withColumn("_hashed", F.coalesce(F.col("_own") > capacity, F.lit(False)))
                .select(*_KEY, "_hashed",
                        F.when(F.col("_hashed"), capacity + 1 + F.pmod(F.xxhash64("value"), buckets))
                        .otherwise(F.col("_own")).cast("int").alias("_index"),
                        F.date_add(F.col("_at.event_date"), 1).alias("_admitted_on")))
    added = daily.groupBy(*_KEY).agg(F.sum("count").alias("_added"), F.min("event_date").alias("_first"))
    new = added.join(admitted, _KEY, "left")
    return state.join(new, _KEY, "full").select(
        *_KEY,
        F.coalesce(F.col("index"), F.col("_index")).alias("index"),
        (F.coalesce(F.col("count"), F.lit(0)) + F.coalesce(F.col("_added"), F.lit(0))).cast("long").alias("count"),
        F.coalesce(F.col("first_seen"), F.col("_first")).alias("first_seen"),
        F.coalesce(F.col("admitted_on"), F.col("_admitted_on")).alias("admitted_on"),
        F.when(F.col("index").isNotNull(), F.col("hashed"))               # a candidate's false is no verdict
        .otherwise(F.coalesce(F.col("_hashed"), F.lit(False))).alias("hashed"),
        F.lit(through).cast("date").alias("counted_through"))


def _profile(state: DataFrame, day_counts: DataFrame) -> tuple[dict, dt.date | None, list]:
    """(largest own id per feature, the state's watermark, each feature's first and last counted
    day), in one small job."""
    none = F.lit(None).cast("date")
    rows = state.groupBy("feature").agg(
        F.max(F.when(~F.coalesce(F.col("hashed"), F.lit(False)), F.col("index"))).alias("top"),
        F.max("counted_through").alias("through"), none.alias("first"), none.alias("last"),
        F.lit(True).alias("in_state")).unionByName(day_counts.groupBy("feature").agg(
            F.lit(None).cast("int").alias("top"), none.alias("through"), F.min("event_date").alias("first"),
            F.max("event_date").alias("last"), F.lit(False).alias("in_state"))).collect()
    top = {r["feature"]: r["top"] or 0 for r in rows if r["in_state"]}
    watermark = max((r["through"] for r in rows if r["through"] is not None), default=None)
    return top, watermark, [r for r in rows if not r["in_state"]]


def _checked_days(spans: list, watermark: dt.date | None, through: dt.date | None) -> dt.date | None:
    """The last day counted (None if none), after refusing a day at or before the watermark (its
    sightings are in the state already) or after ``through``, and a ``through`` not after it."""
    if through is not None and watermark is not None and through <= watermark:
        raise ValueError(f"vocabulary through={through} is not after the state's watermark {watermark}")
    if not spans:
        return None
    if any(r["first"] is None for r in spans):
        raise ValueError("vocabulary day counts hold a row without an event_date")
    if watermark is not None:
        again = sorted((r["first"], r["feature"]) for r in spans if r["first"] <= watermark)
        if again:
            day, feature = again[0]
            raise ValueError(f"vocabulary of {feature!r}: day {day} is already counted (the state is "
                             f"counted through {watermark}); counting it again would double its sightings")
    last = max(r["last"] for r in spans)
    if through is not None and last > through:
        raise ValueError(f"vocabulary day counts reach {last}, after through={through}")
    return last


def encode(df: DataFrame, state: DataFrame, columns: tuple[str, ...], date_col: str) -> DataFrame:
    """Add ``cat_<column>`` int ids: a row of day d gets a value's id when the value was admitted
    on or before d (``admitted_on <= d``); candidates, later admissions, unseen and null values,
    and rows without a date get ``OOV_INDEX``.

    ``transforms.encode_categoricals`` with the admission day (one broadcast probe per column,
    one projection). The state must be counted through at least the day before the
    last day of ``df``, or values admitted since are encoded as OOV.
    """
    return encode_categoricals(df, state.where(F.col("index").isNotNull()), columns, date_col)


def cardinality(state: DataFrame, feature: str, caps: Caps | None = None) -> int:
    """Rows the model's embedding of ``feature`` needs: its largest id + 1 (OOV included).

    A capped feature reserves its whole budget, ``capacity + hash_buckets + 1``, from the start:
    any later day may fill a bucket, and its ids never outgrow that size.
    """
    if caps and feature in caps:
        capacity, buckets = caps[feature]
        return capacity + buckets + 1
    top = state.where(F.col("feature") == feature).agg(F.max("index")).first()[0]
    return (top or OOV_INDEX) + 1


def hashed_counts(state: DataFrame, counted_after: dt.date | None = None) -> dict[str, int]:
    """Per feature, how many values were sent to hash buckets; given ``counted_after``, only those
    admitted by counting later days (pass the watermark before an extension to count its own)."""
    hashed = state.where(F.col("hashed"))
    if counted_after is not None:
        hashed = hashed.where(F.date_sub(F.col("admitted_on"), 1) > F.lit(counted_after))
    return {r["feature"]: r["count"] for r in hashed.groupBy("feature").count().collect()}
