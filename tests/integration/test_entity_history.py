"""features/entity_history.py against tests/history_oracle.py (with_history), the raw-event form it
replaces: the same history to the last count, from per-day entity aggregates, for one built day
or a range, on a generated log and on hand-placed events at the window's edges."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from core.config import load_config
from core.feature_table import history_feature_names
from features import transforms
from features.entity_history import entity_day_aggregates, with_history_from_aggregates
from features.synthetic import generate_impressions
from tests.history_oracle import with_history

START, DAYS = dt.date(2026, 2, 2), 12          # 7 days of history, then 5 days to build


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def log(spark, cfg):
    rows = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=START, days=DAYS, rows_per_day=1500,
                                num_partitions=2)
    return transforms.with_modality(rows, cfg, cfg.schema.slot).cache()


def history(df, cfg):
    """(impression id, history columns) as Python rows, keyed by id."""
    return {r[0]: tuple(r[1:]) for r in df.select(cfg.schema.id, *history_feature_names(cfg)).collect()}


def from_raw_events(log, cfg, first, last):
    """The raw-event form: every event from ``history_days`` before ``first`` to ``last``."""
    d = F.col(cfg.schema.date)
    window = log.where((d >= F.lit(first - dt.timedelta(days=cfg.features.history_days))) & (d <= F.lit(last)))
    return history(with_history(window, cfg, last_day=last, first_day=first), cfg)


def from_aggregates(log, cfg, first, last, aggregates):
    d = F.col(cfg.schema.date)
    rows = log.where((d >= F.lit(first)) & (d <= F.lit(last)))
    earlier = aggregates.where(F.col("event_date") < F.lit(first))
    return history(with_history_from_aggregates(rows, earlier, cfg, first, last), cfg)


def test_one_day_or_a_range_from_aggregates_equals_the_raw_event_history(spark, log, cfg):
    """Breakage caught: a carry-in folded at the wrong time (a row that sees an event of its own
    second or later), an expiry dropped or kept one second off, the aggregates of a key merged
    with another's (user per modality), the days before the window read or the built days' own
    events left out."""
    aggregates = entity_day_aggregates(log, cfg).cache()
    first = START + dt.timedelta(days=cfg.features.history_days)
    last = START + dt.timedelta(days=DAYS - 1)
    expected = from_raw_events(log, cfg, first, last)
    assert len(expected) == 1500 * (DAYS - cfg.features.history_days)
    # the log has history to find: most rows' ads were shown before, some users clicked before
    names = history_feature_names(cfg)
    ad_impressions, user_clicks = names.index("hist_ad_impressions_7d"), names.index("hist_user_modality_clicks_7d")
    assert sum(v[ad_impressions] > 0 for v in expected.values()) > 0.9 * len(expected)
    assert sum(v[user_clicks] > 0 for v in expected.values()) > 0.01 * len(expected)
    assert from_aggregates(log, cfg, first, last, aggregates) == expected
    one_at_a_time = {}
    for offset in (0, 3):                      # the first built day and one of later ones, alone
        day = first + dt.timedelta(days=offset)
        alone = from_aggregates(log, cfg, day, day, aggregates)
        assert alone == from_raw_events(log, cfg, day, day)
        one_at_a_time |= alone
    assert one_at_a_time == {k: v for k, v in expected.items() if k in one_at_a_time}


def test_events_at_the_windows_edges_count_exactly_as_in_the_raw_event_form(spark, cfg):
    """Hand-placed events of one user and ad around a row at 2026-03-09 10:00:00: one at exactly
    t - 7 days (counted), one a second earlier (not), one in the row's own second (not), one a
    second before (counted), and a day-boundary pair at 23:59:59 / 00:00:00 of the day before.
    Breakage caught: a window of (t - span, t] or [t - span, t], or one that uses whole days."""
    s = cfg.schema
    t = dt.datetime(2026, 3, 9, 10, 0, 0)
    events = [("edge", t - dt.timedelta(days=7), 1), ("too_old", t - dt.timedelta(days=7, seconds=1), 1),
              ("same_second", t, 1), ("just_before", t - dt.timedelta(seconds=1), 0),
              ("day_end", dt.datetime(2026, 3, 8, 23, 59, 59), 1), ("day_start", dt.datetime(2026, 3, 9), 0),
              ("row", t, 0)]
    rows = spark.createDataFrame(
        [(name, ts, ts.date(), "stream_audio", "u1", "a1", click) for name, ts, click in events],
        f"{s.id} string, {s.timestamp} timestamp, {s.date} date, {s.slot} string, {s.user} string, "
        f"{s.ad} string, {s.label} int")
    rows = transforms.with_modality(rows, cfg, s.slot)
    day = dt.date(2026, 3, 9)
    expected = history(with_history(rows, cfg, last_day=day, first_day=day), cfg)
    # row: edge, day_end, day_start, just_before (4 impressions, 2 clicks: edge and day_end)
    assert expected["row"][:2] == (4.0, 2.0)
    aggregates = entity_day_aggregates(rows.where(F.col(s.date) < F.lit(day)), cfg)
    built = with_history_from_aggregates(rows.where(F.col(s.date) == F.lit(day)), aggregates, cfg, day, day)
    assert history(built, cfg) == expected


def test_a_days_aggregates_count_each_entity_per_second(spark, cfg):
    """Two impressions of one user in one second, in two modalities' slots: the user counts per
    modality, the ad once for both. Breakage caught: keys of another entity or modality merged."""
    s = cfg.schema
    ts = dt.datetime(2026, 3, 9, 8, 0, 0)
    rows = spark.createDataFrame(
        [("i1", ts, ts.date(), "stream_audio", "u1", "a1", 1), ("i2", ts, ts.date(), "stream_video", "u1", "a1", 0),
         ("i3", ts, ts.date(), "podcast", "u1", "a1", 1)],
        f"{s.id} string, {s.timestamp} timestamp, {s.date} date, {s.slot} string, {s.user} string, "
        f"{s.ad} string, {s.label} int")
    got = {(r.entity, r.key): (r.impressions, r.clicks)
           for r in entity_day_aggregates(transforms.with_modality(rows, cfg, s.slot), cfg).collect()}
    assert got == {("user_modality", "audio:u1"): (2, 2), ("user_modality", "video:u1"): (1, 0), ("ad", "a1"): (3, 2)}
