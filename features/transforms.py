"""Feature transforms: time splits, point-in-time history, vocabularies, dense scaling.

Pure functions of DataFrames. Anything fitted (vocabularies, dense statistics) is fitted on
the train window only and applied to every split, so validation and test never leak into it.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.columns import lookup
from core.config import Config, SplitSettings
from core.feature_table import (
    HISTORY_FEATURES,
    TEST,
    TRAIN,
    VALIDATION,
    categorical_column,
    dense_column,
    history_feature_names,
)

OOV_INDEX = 0
_CTR_PRIOR_IMPRESSIONS = 20.0   # smoothing: ctr = (clicks + prior_ctr * k) / (impressions + k)
_CTR_PRIOR = 0.01
# Vocabularies up to this many values are broadcast to every task (~100 bytes a value).
BROADCAST_MAX_VALUES = 2_000_000


def log1p_feature_names(cfg: Config) -> tuple[str, ...]:
    counts = tuple(name for stem, name in zip(HISTORY_FEATURES, history_feature_names(cfg))
                   if not stem.endswith("_ctr"))
    return cfg.features.log1p_dense + counts


# ----------------------------------------------------------------------------- splits
def assign_splits(start: dt.date, end: dt.date, splits: SplitSettings) -> dict[dt.date, str]:
    """Train days, then validation days, then test days: a split never mixes time."""
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    held_out = splits.validation_days + splits.test_days
    if len(days) <= held_out:
        raise ValueError(
            f"date range {start}..{end} has {len(days)} day(s); it needs more than "
            f"splits.validation_days + splits.test_days = {held_out} to leave a train day")
    n_train = len(days) - held_out
    labels = [TRAIN] * n_train + [VALIDATION] * splits.validation_days + [TEST] * splits.test_days
    return dict(zip(days, labels))


def split_column(date_col: Column, day_split: Mapping[dt.date, str]) -> Column:
    return lookup(date_col, day_split)


def train_window(day_split: Mapping[dt.date, str]) -> tuple[dt.date, dt.date]:
    train_days = [d for d, s in day_split.items() if s == "train"]
    return min(train_days), max(train_days)


# ----------------------------------------------------------------------------- taxonomy
def with_modality(df: DataFrame, cfg: Config, slot_col: str) -> DataFrame:
    return df.withColumn("modality", lookup(F.col(slot_col), cfg.taxonomy.modality_of()))


def slot_id_column(slot: Column, cfg: Config) -> Column:
    """The slot's position in the taxonomy, stored so readers need no string decoding."""
    return lookup(slot, {name: i for i, name in enumerate(cfg.taxonomy.slot_names)}).cast("int")


# ----------------------------------------------------------------------------- history
def with_history(df: DataFrame, cfg: Config, last_day: dt.date | None = None,
                 first_day: dt.date | None = None) -> DataFrame:
    """Past-window impressions, clicks and smoothed CTR per (user, modality) and per ad.

    The window covers [t - history_days, t - 1 second] on whole epoch seconds: strictly before
    the event, so an impression never sees its own label, a same-second event or anything
    later. ``df`` must include the ``history_days`` before the first day to be featurised, or
    early days see short history. Cost O(n log n) per entity: see ``_window_counts``. Given
    ``last_day`` (the last day whose rows need history), events whose window ends after it
    are not expired (they would only change later rows). Given ``first_day``, only rows dated
    on or after it are returned: earlier rows (the burn-in) are events only, and go through
    the windows' shuffles and sorts as narrow records instead of whole rows.
    """
    s = cfg.schema
    n = dict(zip(HISTORY_FEATURES, history_feature_names(cfg)))
    span = cfg.features.history_days * 86400
    # a day after last_day's UTC end: the session time zone may put last_day's rows up to ~a day later
    horizon = None if last_day is None else day_start_second(last_day + dt.timedelta(days=2))
    earlier = None
    if first_day is not None:
        keep = F.coalesce(F.col(s.date) >= F.lit(first_day), F.lit(False))
        df, earlier = df.where(keep), df.where(~keep).select(s.user, "modality", s.ad, s.timestamp, s.label)
    out = _window_counts(df, earlier, [s.user, "modality"], s.timestamp, s.label, span, horizon,
                         n["user_modality_impressions"], n["user_modality_clicks"])
    out = _window_counts(out, earlier, [s.ad], s.timestamp, s.label, span, horizon,
                         n["ad_impressions"], n["ad_clicks"])
    return (out
            .withColumn(n["user_modality_ctr"],
                        smoothed_ctr(n["user_modality_clicks"], n["user_modality_impressions"]))
            .withColumn(n["ad_ctr"], smoothed_ctr(n["ad_clicks"], n["ad_impressions"])))


def day_start_second(day: dt.date) -> int:
    """Epoch second of ``day``'s UTC midnight."""
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def _window_counts(df: DataFrame, earlier: DataFrame | None, keys: list[str], timestamp: str, label: str,
                   span_seconds: int, horizon: int | None, impressions: str, clicks: str) -> DataFrame:
    """Add per-``keys`` counts of rows and of clicks in [t - span, t - 1] (whole seconds).

    A sliding ``rangeBetween(-span, -1)`` frame re-aggregates its whole buffer whenever rows
    leave it: O(rows x rows in the window) per key, and an ad has thousands of impressions a
    week. Here every row adds (+1, +label) at its own second and an expiry record subtracts
    them again at t + span, so one running sum over (unbounded preceding, 1 second preceding)
    gives exactly the old window: an event at e is counted for t iff e <= t - 1 and
    e + span > t - 1, i.e. t - span <= e. Running frames are evaluated incrementally. Expiries
    at or after ``horizon`` (epoch seconds; None: none dropped) precede no row of interest.
    ``earlier`` (or None): events that count but are not returned, as (keys, timestamp, label).
    """
    t, dn, dc, is_row = "_hist_t", "_hist_dn", "_hist_dc", "_hist_row"
    rows = (df.withColumn(t, F.col(timestamp).cast("long"))
            .withColumn(dn, F.lit(1).cast("long"))
            .withColumn(dc, F.col(label).cast("double"))
            .withColumn(is_row, F.lit(True)))

    def records(events: DataFrame, shift: int, sign: int) -> DataFrame:
        return events.select(*keys, (F.col(timestamp).cast("long") + shift).alias(t),
                             F.lit(sign).cast("long").alias(dn), (F.col(label).cast("double") * sign).alias(dc),
                             F.lit(False).alias(is_row))

    events = df if earlier is None else \
        df.select(*keys, timestamp, label).unionByName(earlier.select(*keys, timestamp, label))
    expiries = records(events, span_seconds, -1)
    if horizon is not None:
        expiries = expiries.where(F.col(t) < horizon)
    parts = rows.unionByName(expiries, allowMissingColumns=True)
    if earlier is not None:
        parts = parts.unionByName(records(earlier, 0, 1), allowMissingColumns=True)
    running = Window.partitionBy(*keys).orderBy(t).rangeBetween(Window.unboundedPreceding, -1)
    return (parts
            .withColumn(impressions, F.coalesce(F.sum(dn).over(running), F.lit(0)).cast("double"))
            .withColumn(clicks, F.coalesce(F.sum(dc).over(running), F.lit(0.0)))
            .where(F.col(is_row))
            .drop(t, dn, dc, is_row))


def smoothed_ctr(clicks: str, impressions: str) -> Column:
    k = _CTR_PRIOR_IMPRESSIONS
    return (F.col(clicks) + _CTR_PRIOR * k) / (F.col(impressions) + k)


# ----------------------------------------------------------------------------- vocabularies
def feature_value_pairs(columns: tuple[str, ...]) -> Column:
    """One (feature, value) struct per column of a row, exploded: the value cast to string, the
    key vocabularies are stored under."""
    return F.explode(F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value"))
                               for c in columns]))


def build_vocabularies(train: DataFrame, columns: tuple[str, ...], min_count: int) -> DataFrame:
    """(feature, value, index, count): values seen >= min_count times in ``train``.

    Indices start at 1 in descending count order (ties by value), 0 is out-of-vocabulary.
    """
    counts = (train.select(feature_value_pairs(columns).alias("p")).select("p.feature", "p.value")
              .where(F.col("value").isNotNull())
              .groupBy("feature", "value").agg(F.count(F.lit(1)).alias("count"))
              .where(F.col("count") >= min_count))
    order = Window.partitionBy("feature").orderBy(F.col("count").desc(), F.col("value"))
    return counts.withColumn("index", F.row_number().over(order).cast("int")) \
        .select("feature", "value", "index", "count")


def encode_categoricals(df: DataFrame, vocabularies: DataFrame, columns: tuple[str, ...],
                        date_col: str | None = None) -> DataFrame:
    """Add ``cat_<column>`` int ids from ``vocabularies``; unseen or null values get 0. With
    ``date_col``, ``vocabularies`` also has ``admitted_on`` (features/vocabulary.py): a row gets
    a value's id only from that day on, 0 before it and where its date is null.

    One pass over ``df``: each column probes a hash table of its vocabulary broadcast once
    per build, so the rows are never shuffled (a shuffle join per column moved every row 15
    times). A vocabulary too large to broadcast (over ``BROADCAST_MAX_VALUES``) is joined
    the shuffled way. The ids are added in one projection after the joins: each DataFrame call
    re-analyses the whole plan, and a withColumn and a drop per join took ~2/3 of this
    function's ~9 s of driver time on the build's plan (tests/integration/test_features.py's
    lake, measured in-process).
    """
    sizes = {r["feature"]: r["count"] for r in
             vocabularies.where(F.col("feature").isin(list(columns)))
             .groupBy("feature").agg(F.count(F.lit(1)).alias("count")).collect()}
    kept = ("v", "i") if date_col is None else ("v", "i", "a")
    out = df
    for c in columns:
        vocab = vocabularies.where(F.col("feature") == c).select(
            F.col("value").alias(f"_v_{c}"), F.col("index").alias(f"_i_{c}"),
            *([] if date_col is None else [F.col("admitted_on").alias(f"_a_{c}")]))
        if sizes.get(c, 0) <= BROADCAST_MAX_VALUES:
            vocab = F.broadcast(vocab)
        out = out.join(vocab, F.col(c).cast("string") == F.col(f"_v_{c}"), "left")
    day = None if date_col is None else F.col(date_col).cast("date")
    ids = {categorical_column(c): F.coalesce(F.col(f"_i_{c}") if day is None else
                                             F.when(F.col(f"_a_{c}") <= day, F.col(f"_i_{c}")),
                                             F.lit(OOV_INDEX)).cast("int") for c in columns}
    return out.withColumns(ids).drop(*[f"_{k}_{c}" for c in columns for k in kept])


# ----------------------------------------------------------------------------- dense
def _pre_scale(column: str, log1p: tuple[str, ...]) -> Column:
    v = F.col(column).cast("double")
    return F.log1p(F.greatest(v, F.lit(0.0))) if column in log1p else v


def dense_statistics(train: DataFrame, columns: tuple[str, ...], log1p: tuple[str, ...]) -> DataFrame:
    """(feature, transform, mean, std) on the train window, after the log1p transform."""
    aggs = []
    for c in columns:
        v = _pre_scale(c, log1p)
        aggs += [F.avg(v).alias(f"{c}__mean"), F.stddev_pop(v).alias(f"{c}__std")]
    row = train.agg(*aggs).first()
    spark = train.sparkSession
    rows = [(c, "log1p" if c in log1p else "identity", float(row[f"{c}__mean"] or 0.0),
             float(row[f"{c}__std"] or 0.0)) for c in columns]
    return spark.createDataFrame(rows, "feature string, transform string, mean double, std double")


def scale_dense(df: DataFrame, stats: DataFrame, log1p: tuple[str, ...]) -> DataFrame:
    """Add ``dense_<column>`` = (transform(x) - mean) / std as float, in one projection."""
    scaled = {}
    for r in stats.collect():
        std = r["std"] if r["std"] and r["std"] > 1e-9 else 1.0
        scaled[dense_column(r["feature"])] = ((_pre_scale(r["feature"], log1p) - F.lit(r["mean"])) / F.lit(std)) \
            .cast("float")
    return df.withColumns(scaled)
