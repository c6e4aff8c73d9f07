"""Point-in-time history from per-day entity aggregates: each day's events summarised once, read
by the next ``history_days`` days' builds instead of their raw rows.

A day's ``entity_daily`` rows are its accepted impressions counted per (entity, key, second):
impressions and clicks of each user (per modality) and each ad at each epoch second. The
history of a row at t is every event of its key in [t - history_days, t - 1 s], on whole epoch
seconds: strictly before the event, so an impression never sees its own label, a same-second
event or anything later. The events of the built days are their rows; those of the days before
come from the aggregates, and the result equals the raw-event definition to the last count
(tests/history_oracle.py, which the tests hold it to).

Why it is cheaper: a raw-event form sorts every event of the window with the rows. Events before
the built days only ever add before the first row, so all but the last day of them fold into one
carry-in record per key (a hash aggregate, no sort); only that day's records and the expiries
that fall inside the built days are sorted with the rows. A one-day build sorts the day's rows,
about two days of aggregate records and one record per key, where the raw-event form sorts
eight days of rows twice (add and expiry).
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.config import Config
from core.feature_table import HISTORY_FEATURES, history_feature_names
from features.transforms import day_start_second, smoothed_ctr

USER_MODALITY, AD = "user_modality", "ad"
ENTITY_DAILY_SCHEMA = ("event_date date, entity string, key string, event_second long, "
                       "impressions long, clicks long")
# the session time zone may put a day's rows up to ~14 h before its UTC start: a day of slack
_ZONE_SLACK_SECONDS = 86400


def entity_keys(cfg: Config) -> dict[str, Column]:
    """Each entity's key as a string column of a row (with ``modality``): the user per modality
    (``modality:user``; modality names hold no ':'), the ad."""
    s = cfg.schema
    return {USER_MODALITY: F.concat_ws(":", F.col("modality"), F.col(s.user).cast("string")),
            AD: F.col(s.ad).cast("string")}


def entity_day_aggregates(rows: DataFrame, cfg: Config) -> DataFrame:
    """``entity_daily`` rows (ENTITY_DAILY_SCHEMA) of accepted, modality-labelled ``rows``: per
    event_date, entity, key and epoch second, the impressions and clicks there."""
    s = cfg.schema
    keyed = rows.select(F.col(s.date).cast("date").alias("event_date"),
                        F.col(s.timestamp).cast("long").alias("event_second"),
                        F.col(s.label).cast("long").alias("_click"),
                        F.array(*[F.struct(F.lit(entity).alias("entity"), key.alias("key"))
                                  for entity, key in entity_keys(cfg).items()]).alias("_entities"))
    return (keyed.select("event_date", "event_second", "_click", F.explode("_entities").alias("_e"))
            .groupBy("event_date", F.col("_e.entity").alias("entity"), F.col("_e.key").alias("key"),
                     "event_second")
            .agg(F.count(F.lit(1)).alias("impressions"), F.sum("_click").alias("clicks"))
            .select("event_date", "entity", "key", "event_second", "impressions", "clicks"))


def with_history_from_aggregates(rows: DataFrame, earlier: DataFrame, cfg: Config, first_day: dt.date,
                                 last_day: dt.date) -> DataFrame:
    """``rows`` (accepted, modality-labelled, dated first_day..last_day) with the history columns
    of the raw-event definition: impressions, clicks and smoothed CTR per (user, modality) and
    per ad in [t - history_days, t - 1 s]. The rows are each other's events; ``earlier`` holds
    the ``entity_daily`` rows of the days before first_day (at least ``history_days`` of them;
    more are ignored)."""
    s = cfg.schema
    span = cfg.features.history_days * 86400
    first_row = day_start_second(first_day) - _ZONE_SLACK_SECONDS     # no row is earlier
    horizon = day_start_second(last_day + dt.timedelta(days=2))       # no row is this late
    names = dict(zip(HISTORY_FEATURES, history_feature_names(cfg)))
    # an event whose expiry precedes every row adds and expires before any of them: nothing
    prior = earlier.where(F.col("event_second") + span >= first_row)
    out = rows
    for entity, key in entity_keys(cfg).items():
        out = _counts(out.withColumn("_key", key), prior.where(F.col("entity") == entity),
                      F.col(s.timestamp).cast("long"), F.col(s.label).cast("long"), span, first_row, horizon,
                      names[f"{entity}_impressions"], names[f"{entity}_clicks"]).drop("_key")
    return out.withColumns({
        names["user_modality_ctr"]: smoothed_ctr(names["user_modality_clicks"], names["user_modality_impressions"]),
        names["ad_ctr"]: smoothed_ctr(names["ad_clicks"], names["ad_impressions"])})


def _counts(rows: DataFrame, prior: DataFrame, t: Column, click: Column, span: int, first_row: int, horizon: int,
            impressions: str, clicks: str) -> DataFrame:
    """``rows`` (keyed by ``_key``) with the impressions and clicks of their key in [t - span, t - 1].

    A sliding ``rangeBetween(-span, -1)`` frame would re-aggregate its whole buffer whenever rows
    leave it (O(rows x rows in the window) per key). Instead every event adds (+1, +click) at its
    second and an expiry record subtracts them at t + span, so one running sum over (unbounded
    preceding, 1 s preceding) gives the window exactly: an event at e counts for t iff e <= t - 1
    and e + span > t - 1. Running frames are evaluated incrementally. The records are the
    rows' own events and their expiries, and ``prior``'s: the events before ``first_row - 1`` as
    one carry-in per key (their expiries stay, as records of their own), the later ones as they are."""
    own = rows.withColumns({"_t": t, "_dn": F.lit(1).cast("long"), "_dc": click, "_row": F.lit(True)})
    own_expiries = own.select(F.col("_key").alias("key"), (F.col("_t") + span).alias("_t"),
                              (-F.col("_dn")).alias("_dn"), (-F.col("_dc")).alias("_dc"), F.lit(False).alias("_row"))
    folded = F.col("event_second") < first_row
    carry_in = (prior.where(folded).groupBy("key")
                .agg(F.sum("impressions").alias("_dn"), F.sum("clicks").alias("_dc"))
                .select("key", F.lit(first_row - 1).cast("long").alias("_t"), "_dn", "_dc", F.lit(False).alias("_row")))
    adds = prior.where(~folded).select("key", F.col("event_second").alias("_t"), F.col("impressions").alias("_dn"),
                                       F.col("clicks").alias("_dc"), F.lit(False).alias("_row"))
    prior_expiries = prior.select("key", (F.col("event_second") + span).alias("_t"),
                                  (-F.col("impressions")).alias("_dn"), (-F.col("clicks")).alias("_dc"),
                                  F.lit(False).alias("_row"))
    records = own_expiries.unionByName(carry_in).unionByName(adds).unionByName(prior_expiries) \
        .where(F.col("_t") < horizon)
    parts = own.unionByName(records.withColumnRenamed("key", "_key"), allowMissingColumns=True)
    running = Window.partitionBy("_key").orderBy("_t").rangeBetween(Window.unboundedPreceding, -1)
    return (parts
            .withColumns({impressions: F.coalesce(F.sum("_dn").over(running), F.lit(0)).cast("double"),
                          clicks: F.coalesce(F.sum("_dc").over(running), F.lit(0)).cast("double")})
            .where(F.col("_row"))
            .drop("_t", "_dn", "_dc", "_row"))
