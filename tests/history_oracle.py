"""The raw-event definition of point-in-time history: the oracle the daily build's aggregate form
(features/entity_history.py) is tested against, to the last count. Every event of the window
is a row here, sorted with the rows (what the daily store avoids)."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core.config import Config
from core.feature_table import HISTORY_FEATURES, history_feature_names
from features.transforms import day_start_second, smoothed_ctr


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
