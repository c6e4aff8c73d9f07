"""The daily feature store on real Spark + Delta: each day built once with stable ids, days one at a
time equal to one range, point-in-time history from the daily aggregates, reruns, bad input."""
from __future__ import annotations

import datetime as dt
import math

import pytest
from pyspark.sql import Row, Window
from pyspark.sql import functions as F

from core import feature_table, tables
from features import transforms
from features.pipeline import MissingHistoryDays, build_features, days_to_build
from tests.helpers import built_lake, generated, recreate_database, write_raw
from tests.history_oracle import with_history

START = dt.date(2026, 1, 1)
END = dt.date(2026, 1, 6)


@pytest.fixture(scope="module")
def built(spark, make_config):
    cfg = make_config(database="features_suite")
    return cfg, built_lake(spark, cfg, START, 6, 12_000, "build-1")


def test_every_accepted_row_of_each_day_lands_once_with_raw_dense_values(spark, built):
    """No split, no sampling: each day's partition holds every accepted row; dense columns hold the
    raw value (or its log1p), not a build's standardisation."""
    cfg, result = built
    assert result.input_rows == 72_000
    assert result.accepted_rows + result.quarantined_rows == result.input_rows == result.feature_rows + \
        result.quarantined_rows
    feats = spark.table(cfg.table(tables.FEATURES))
    assert feature_table.OLD_LAYOUT_COLUMN not in feats.columns and "sample_weight" not in feats.columns
    assert feats.count() == feats.select("event_date", "impression_id").distinct().count() == result.feature_rows
    raw = spark.table(cfg.table(tables.IMPRESSIONS)).where(F.col("event_date").between(START, END))
    quarantined = spark.table(cfg.table(tables.QUARANTINE)).where("stage = 'build_features'")
    per_day = {r.event_date: r["count"] for r in feats.groupBy("event_date").count().collect()}
    raw_day = {r.event_date: r["count"] for r in raw.groupBy("event_date").count().collect()}
    bad_day = {r.event_date: r["count"] for r in quarantined.groupBy("event_date").count().collect()}
    assert per_day == {d: n - bad_day.get(d, 0) for d, n in raw_day.items()}
    joined = feats.join(raw.select("impression_id", "event_date", "ad_duration_s", "session_ad_index"),
                        ["impression_id", "event_date"])
    assert joined.where(F.abs(F.col("dense_ad_duration_s") - F.col("ad_duration_s")) > 1e-3).count() == 0
    assert "session_ad_index" in cfg.features.log1p_dense
    assert joined.where(F.abs(F.col("dense_session_ad_index") - F.log1p("session_ad_index")) > 1e-5).count() == 0
    dense = [c for c in feats.columns if c.startswith("dense_")]
    assert "dense_hist_user_modality_clicks_7d" in dense
    for c in dense:
        assert feats.where(F.isnan(c) | F.col(c).isNull()).count() == 0, c


def test_the_vocabulary_counts_every_built_day_and_admits_after_min_count(spark, built):
    cfg, result = built
    state = spark.table(cfg.table(tables.VOCABULARIES))
    assert state.agg(F.max("counted_through")).first()[0] == END
    admitted = state.where(F.col("index").isNotNull())
    assert admitted.agg(F.min("count")).first()[0] >= cfg.features.min_count
    assert state.where("feature = 'slot'").count() == 0            # roles are not categorical features
    assert result.new_ids["user_id"] == admitted.where("feature = 'user_id'").count() > 0
    # a row gets a value's id from its admission day on, OOV before
    feats = spark.table(cfg.table(tables.FEATURES))
    users = admitted.where("feature = 'user_id'").select(F.col("value").alias("user_id"), "index", "admitted_on")
    raw = spark.table(cfg.table(tables.IMPRESSIONS)).select("impression_id", "event_date", "user_id")
    rows = feats.select("impression_id", "event_date", "cat_user_id").join(raw, ["impression_id", "event_date"]) \
        .join(users, "user_id", "left")
    expected = F.when(F.col("admitted_on") <= F.col("event_date"), F.col("index")).otherwise(0)
    assert rows.where(F.col("cat_user_id") != expected).count() == 0
    assert rows.where("cat_user_id = 0").count() > 0 and rows.where("cat_user_id > 0").count() > 0


def test_rebuilding_a_day_replaces_it_with_its_ids_unchanged(spark, built):
    cfg, first = built
    feats_name = cfg.table(tables.FEATURES)
    before = tables.read_table(spark, feats_name, first.versions_written[tables.FEATURES]).drop("build_run_id")
    state_version = tables.latest_version(spark, cfg.table(tables.VOCABULARIES))
    again = build_features(spark, cfg, dt.date(2026, 1, 3), dt.date(2026, 1, 3), "build-2")
    assert again.recounted_days == (dt.date(2026, 1, 3),) and again.new_ids == {}
    # the vocabulary is not counted again: its state keeps its version
    assert tables.latest_version(spark, cfg.table(tables.VOCABULARIES)) == state_version
    feats = spark.table(feats_name)
    builds = {r.event_date: r.build_run_id for r in feats.select("event_date", "build_run_id").distinct().collect()}
    assert builds[dt.date(2026, 1, 3)] == "build-2" and builds[dt.date(2026, 1, 4)] == "build-1"
    after = feats.drop("build_run_id")
    assert before.exceptAll(after).count() == 0 and after.exceptAll(before).count() == 0


def test_history_days_logged_but_unbuilt_are_aggregated_and_missing_ones_fail_naming_them(spark, fresh_db):
    cfg = fresh_db()
    logs = generated(spark, cfg, dt.date(2026, 4, 1), 6, 300)
    write_raw(logs.where(F.col("event_date") != dt.date(2026, 4, 3)), cfg, dt.date(2026, 4, 1), dt.date(2026, 4, 6))
    # the log's first days: nothing before them to miss; 04-02 is logged, so it is aggregated first
    result = build_features(spark, cfg, dt.date(2026, 4, 2), dt.date(2026, 4, 2), "d2")
    assert result.short_history_days == ()
    daily = spark.table(cfg.table(tables.ENTITY_DAILY))
    assert sorted(r[0] for r in daily.select("event_date").distinct().collect()) == [
        dt.date(2026, 4, 1), dt.date(2026, 4, 2)]
    assert spark.table(cfg.table(tables.FEATURES)).select("event_date").distinct().count() == 1
    # 04-03 is in neither the log nor the store: 04-04's history would silently miss its events
    with pytest.raises(MissingHistoryDays, match=r"needs day\(s\) 2026-04-03, which neither .*--short-history"):
        build_features(spark, cfg, dt.date(2026, 4, 4), dt.date(2026, 4, 4), "d4", short_history=False)
    assert build_features(spark, cfg, dt.date(2026, 4, 4), dt.date(2026, 4, 4), "d4",
                          short_history=True).short_history_days == (dt.date(2026, 4, 3),)
    # the vocabulary's watermark refuses a gap in the built days, even with the flag: ids depend on it
    with pytest.raises(MissingHistoryDays, match=r"counted through 2026-04-04, but .* unbuilt day\(s\) 2026-04-05"):
        build_features(spark, cfg, dt.date(2026, 4, 6), dt.date(2026, 4, 6), "d6", short_history=True)
    assert days_to_build(spark, cfg, dt.date(2026, 4, 1), dt.date(2026, 4, 6)) == [
        (dt.date(2026, 4, 1), dt.date(2026, 4, 1)), (dt.date(2026, 4, 3), dt.date(2026, 4, 3)),
        (dt.date(2026, 4, 5), dt.date(2026, 4, 6))]


def test_a_warehouse_of_the_old_layout_is_refused_in_one_line(spark, fresh_db):
    cfg = fresh_db()
    spark.createDataFrame([("i1", "train")], "impression_id string, split string") \
        .write.format("delta").saveAsTable(cfg.table(tables.FEATURES))
    write_raw(generated(spark, cfg, dt.date(2026, 4, 1), 1, 100), cfg, dt.date(2026, 4, 1), dt.date(2026, 4, 1))
    with pytest.raises(ValueError, match=r"older feature layout .* --drop-old-layout") as error:
        build_features(spark, cfg, dt.date(2026, 4, 1), dt.date(2026, 4, 1), "old")
    assert "\n" not in str(error.value)


def _hand_log(spark, cfg):
    template = generated(spark, cfg, dt.date(2026, 2, 1), 1, 1).first().asDict()
    t0 = dt.datetime(2026, 2, 1, 12, 0, 0)

    def event(i, ts, clicked, user="u_hist", slot="stream_audio"):
        return Row(**{**template, "impression_id": f"h{i}", "event_ts": ts, "event_date": ts.date(),
                      "user_id": user, "ad_id": "ad_hist", "clicked": clicked, "slot": slot})

    return spark.createDataFrame([
        event(0, t0, 1),
        event(1, t0 + dt.timedelta(seconds=10), 0),
        event(2, t0 + dt.timedelta(seconds=10), 1),                 # same second as h1
        event(3, t0 + dt.timedelta(days=1), 0),
        event(4, t0 + dt.timedelta(days=1), 0, slot="stream_video"),  # other modality
        event(5, t0 + dt.timedelta(days=7, seconds=5), 0),           # h0 is > 7 days old
        event(6, t0 + dt.timedelta(days=9), 0),
        event(7, t0 + dt.timedelta(days=10), 0),
        event(8, dt.datetime(2026, 2, 3, 23, 59, 59), 1),            # the last second of a day ...
        event(9, dt.datetime(2026, 2, 4, 0, 0, 0), 0),               # ... and the next day's first
    ])


HAND_HISTORY = {
    "h0": (0, 0, 0),
    "h1": (1, 1, 1), "h2": (1, 1, 1),   # neither sees the other (same second)
    "h3": (3, 2, 3),
    "h4": (0, 0, 3),                    # first video event of the user; h3 is the same second
    "h8": (4, 2, 5),                    # h0..h3 (audio); the ad saw h0..h4
    "h9": (5, 3, 6),                    # sees h8, one second before it, across midnight
    "h5": (5, 2, 6),                    # h0 fell out of the 7-day window; h1..h3, h8, h9 remain
}


@pytest.mark.parametrize("one_day_at_a_time", [False, True], ids=["one range", "day by day"])
def test_history_counts_only_strictly_earlier_events(spark, fresh_db, one_day_at_a_time):
    """The hand-made log: same-second events, the window's far edge, another modality, midnight;
    built as one range (history from its rows) and day by day (from the daily aggregates)."""
    cfg = fresh_db("features.min_count=1", "quality.min_rows_per_day=0")
    first, last = dt.date(2026, 2, 1), dt.date(2026, 2, 11)
    write_raw(_hand_log(spark, cfg), cfg, first, last)
    days = [(first + dt.timedelta(days=i),) * 2 for i in range(11)] if one_day_at_a_time else [(first, last)]
    for a, b in days:
        build_features(spark, cfg, a, b, f"hist-{a:%d}")
    feats = spark.table(cfg.table(tables.FEATURES))

    def count(row, name):                      # counts are stored as log1p
        return round(math.expm1(row[f"dense_{name}"]))

    got = {r.impression_id: (count(r, "hist_user_modality_impressions_7d"),
                             count(r, "hist_user_modality_clicks_7d"),
                             count(r, "hist_ad_impressions_7d")) for r in feats.collect()}
    oracle = with_history(transforms.with_modality(spark.table(cfg.table(tables.IMPRESSIONS)), cfg, "slot"), cfg)
    names = feature_table.history_feature_names(cfg)
    expected = {r.impression_id: (round(r[names[0]]), round(r[names[1]]), round(r[names[3]])) for r in oracle.collect()}
    assert got == expected
    assert {k: got[k] for k in HAND_HISTORY} == HAND_HISTORY


# days built one at a time (each build's fixed cost, ~10-20 s on 2 cores, is this test's time);
# the first KEPT_DAYS are those whose ids and rows must survive the later days' builds
STORE_DAYS, KEPT_DAYS = 12, 6


def test_days_built_one_at_a_time_equal_one_range_and_keep_their_ids(spark, make_config):
    """Every row, id and value: STORE_DAYS one-day builds (each reading the days before from the
    store) against one build of the same days, on a log whose users and ads grow (new values every
    day) and a capped user vocabulary (hash buckets in use). Ids of values admitted by day
    KEPT_DAYS are unchanged after the later days, and the rows of days 1..KEPT_DAYS are never
    rewritten."""
    overrides = ("generator.num_users=3000", "generator.num_ads=120", "features.min_count=2",
                 "features.vocabulary_caps={user_id: {capacity: 400, hash_buckets: 50}}")
    daily, ranged = make_config(*overrides, database="store_daily"), make_config(*overrides, database="store_range")
    first = dt.date(2026, 6, 1)
    last = first + dt.timedelta(days=STORE_DAYS - 1)
    logs = generated(spark, daily, first, STORE_DAYS, 400).cache()
    for cfg in (daily, ranged):
        recreate_database(spark, cfg)
        write_raw(logs, cfg, first, last)
    build_features(spark, ranged, first, last, "range")
    for i in range(STORE_DAYS):
        day = first + dt.timedelta(days=i)
        build_features(spark, daily, day, day, f"day-{i + 1:02d}")
        if i == KEPT_DAYS - 1:
            kept_ids = spark.table(daily.table(tables.VOCABULARIES)).where("index IS NOT NULL") \
                .select("feature", "value", "index", "admitted_on", "hashed").collect()
            early = spark.table(daily.table(tables.FEATURES))
            early = spark.createDataFrame(early.collect(), early.schema)
    logs.unpersist()
    for table in (tables.FEATURES, tables.ENTITY_DAILY, tables.VOCABULARIES):
        one, other = spark.table(daily.table(table)), spark.table(ranged.table(table))
        if "build_run_id" in one.columns:
            one, other = one.drop("build_run_id"), other.drop("build_run_id")
        assert one.count() == other.count() > 0, table
        assert one.exceptAll(other).count() == 0 and other.exceptAll(one).count() == 0, table
    state = spark.table(daily.table(tables.VOCABULARIES))
    assert state.where("hashed").count() > 0                       # the cap was reached
    def id_of(r):                              # r["index"]: a Row's .index is tuple.index
        return r["index"], r["admitted_on"], r["hashed"]

    now = {(r.feature, r.value): id_of(r) for r in state.collect()}
    changed = [(r.feature, r.value, id_of(r), now.get((r.feature, r.value)))
               for r in kept_ids if now.get((r.feature, r.value)) != id_of(r)]
    assert not changed, changed[:5]
    assert len(now) > len(kept_ids)                                # new values came after KEPT_DAYS
    feats = spark.table(daily.table(tables.FEATURES)).where(
        F.col("event_date") < first + dt.timedelta(days=KEPT_DAYS))
    assert feats.exceptAll(early).count() == 0 and early.exceptAll(feats).count() == 0


def _sliding_window_history(df, cfg):
    """The history definition by sliding rangeBetween frames: the oracle's oracle."""
    s, days = cfg.schema, cfg.features.history_days
    seconds = F.col(s.timestamp).cast("long")
    label = F.col(s.label).cast("double")
    user_w = Window.partitionBy(s.user, "modality").orderBy(seconds).rangeBetween(-days * 86400, -1)
    ad_w = Window.partitionBy(s.ad).orderBy(seconds).rangeBetween(-days * 86400, -1)
    n = dict(zip(feature_table.HISTORY_FEATURES, feature_table.history_feature_names(cfg)))
    return (df
            .withColumn(n["user_modality_impressions"], F.count(F.lit(1)).over(user_w).cast("double"))
            .withColumn(n["user_modality_clicks"], F.coalesce(F.sum(label).over(user_w), F.lit(0.0)))
            .withColumn(n["ad_impressions"], F.count(F.lit(1)).over(ad_w).cast("double"))
            .withColumn(n["ad_clicks"], F.coalesce(F.sum(label).over(ad_w), F.lit(0.0)))
            .withColumn(n["user_modality_ctr"],
                        (F.col(n["user_modality_clicks"]) + 0.2) / (F.col(n["user_modality_impressions"]) + 20.0))
            .withColumn(n["ad_ctr"], (F.col(n["ad_clicks"]) + 0.2) / (F.col(n["ad_impressions"]) + 20.0)))


def test_the_raw_event_oracle_equals_the_sliding_window_definition_at_every_edge(spark, make_config):
    """tests/history_oracle.py (running sums with expiry records) gives exactly the sliding
    [t - 7 d, t - 1 s] window on a generated log (few users, so user histories are long) plus rows on
    every edge: the window's first and last second, one second outside, same-second groups, midnight."""
    cfg = make_config("generator.num_users=200", "generator.num_ads=40")
    logs = generated(spark, cfg, dt.date(2026, 3, 1), 10, 2_000)
    template = logs.first().asDict()
    t0 = dt.datetime(2026, 3, 9, 0, 0, 0)            # midnight
    week = dt.timedelta(days=7)
    offsets = [-week - dt.timedelta(seconds=1), -week, -week, -week + dt.timedelta(seconds=1),
               -dt.timedelta(seconds=1), dt.timedelta(0), dt.timedelta(0), dt.timedelta(seconds=1),
               week - dt.timedelta(seconds=1)]
    edges = [Row(**{**template, "impression_id": f"edge{i}", "event_ts": t0 + o, "event_date": (t0 + o).date(),
                    "user_id": "u_edge", "ad_id": "ad_edge", "clicked": i % 2})
             for i, o in enumerate(offsets)]
    df = transforms.with_modality(logs.unionByName(spark.createDataFrame(edges, logs.schema)), cfg,
                                  cfg.schema.slot).cache()
    columns = ["impression_id", *feature_table.history_feature_names(cfg)]
    new = with_history(df, cfg).select(columns).cache()
    old = _sliding_window_history(df, cfg).select(columns)
    assert new.count() == df.count() == 20_000 + len(edges)
    assert new.exceptAll(old).count() == 0 and old.exceptAll(new).count() == 0
    at_midnight = new.where(F.col("impression_id") == "edge5").first()
    # edge1, edge2 (exactly 7 days earlier), edge3, edge4 (23:59:59); not edge0 nor edge6 (same second)
    assert at_midnight["hist_user_modality_impressions_7d"] == 4.0
    assert at_midnight["hist_user_modality_clicks_7d"] == 2.0      # edge1, edge3
    assert new.where("hist_ad_impressions_7d > 100").count() > 1000   # long windows were exercised
