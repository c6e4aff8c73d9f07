"""Bad raw input: each case is a clear error or a quarantined row with its reason, and no
accepted row is lost or duplicated."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core import tables
from features.pipeline import build_features
from features.quality import EmptyInputError, SchemaDriftError
from tests.helpers import generated, write_raw

START, END = dt.date(2026, 1, 1), dt.date(2026, 1, 3)
NO_SAMPLING = "sampling.slots={}"


def _bad_rows(good):
    """Copies of real rows, each broken in one way, keyed by the id they get."""
    base = good.limit(12).collect()
    nan, inf = float("nan"), float("inf")

    def broken(i, **changes):
        return {**base[i].asDict(), "impression_id": f"bad-{i}", **changes}

    rows = [
        broken(0, slot=None),
        broken(1, slot="car_radio"),
        broken(2, clicked=2),
        broken(3, clicked=None),
        broken(4, ad_duration_s=nan),
        broken(5, user_tenure_days=inf),
        broken(6, event_ts=dt.datetime(2025, 12, 31, 23, 59, 0), event_date=dt.date(2026, 1, 1)),
        broken(7, impression_id=None),
        # an exact duplicate of a good row, and a later copy of another good row
        {**base[8].asDict()},
        {**base[9].asDict(), "event_ts": base[9].event_ts + dt.timedelta(seconds=30)},
    ]
    reasons = {
        "bad-0": "slot: null", "bad-1": "slot: 'car_radio' is not in the taxonomy",
        "bad-2": "clicked: 2 is not 0 or 1", "bad-3": "clicked: null is not 0 or 1",
        "bad-4": "ad_duration_s: NaN is not a finite number",
        "bad-5": "user_tenure_days: Infinity is not a finite number",
        "bad-6": "event_ts: 2025-12-31 23:59:00 is outside its event_date 2026-01-01",
        None: "impression_id: null",
        base[8].impression_id: "impression_id: duplicate of an earlier row",
        base[9].impression_id: "impression_id: duplicate of an earlier row",
    }
    return rows, reasons


def test_bad_rows_are_quarantined_with_reasons_and_nothing_else_is_lost(spark, fresh_db):
    cfg = fresh_db(NO_SAMPLING)
    good = generated(spark, cfg, START, 3, 400)
    rows, reasons = _bad_rows(good)
    nullable = T.StructType([T.StructField(f.name, f.dataType, True) for f in good.schema])
    bad = spark.createDataFrame(rows, nullable)
    write_raw(good.unionByName(bad), cfg, START, END)

    result = build_features(spark, cfg, START, END, "bad-input")
    assert result.input_rows == 1200 + len(rows)
    assert result.quarantined_rows == len(rows)
    assert result.accepted_rows == 1200

    quarantine = spark.table(cfg.table(tables.QUARANTINE)).collect()
    got = {}
    for q in quarantine:
        got[q.impression_id] = q.reason
        raw = json.loads(q.raw_row)            # the whole row is kept
        assert raw.get("impression_id") == q.impression_id
    assert got == reasons
    # the duplicate kept is the earliest copy, and exactly once
    feats = spark.table(cfg.table(tables.FEATURES))
    assert feats.count() == 1200
    assert feats.select("impression_id").distinct().count() == 1200
    good_ids = good.select("impression_id")
    assert feats.select("impression_id").exceptAll(good_ids).count() == 0
    assert good_ids.exceptAll(feats.select("impression_id")).count() == 0
    kept = feats.where(F.col("impression_id") == rows[9]["impression_id"]).first()
    original = good.where(F.col("impression_id") == rows[9]["impression_id"]).first()
    assert kept.event_ts == original.event_ts


def test_missing_column_is_named(spark, fresh_db):
    cfg = fresh_db()
    write_raw(generated(spark, cfg, START, 3, 50).drop("device"), cfg, START, END)
    with pytest.raises(SchemaDriftError, match=r"missing column\(s\) device"):
        build_features(spark, cfg, START, END, "drift")


def test_extra_column_is_named_unless_allowed(spark, fresh_db):
    cfg = fresh_db(NO_SAMPLING)
    write_raw(generated(spark, cfg, START, 3, 50).withColumn("mood", F.lit("happy")), cfg, START, END)
    with pytest.raises(SchemaDriftError, match=r"unexpected column\(s\) mood"):
        build_features(spark, cfg, START, END, "drift")
    tolerant = fresh_db(NO_SAMPLING, "schema.allow_extra_columns=true")
    write_raw(generated(spark, tolerant, START, 3, 50).withColumn("mood", F.lit("happy")), tolerant, START, END)
    result = build_features(spark, tolerant, START, END, "drift-ok")
    assert result.feature_rows == 150
    assert "mood" not in spark.table(tolerant.table(tables.FEATURES)).columns


def test_empty_day_is_a_clear_error_naming_the_day(spark, fresh_db):
    cfg = fresh_db()
    logs = generated(spark, cfg, START, 4, 50).where(F.col("event_date") != dt.date(2026, 1, 2))
    write_raw(logs, cfg, START, dt.date(2026, 1, 4))
    with pytest.raises(EmptyInputError, match=r"2026-01-02 \(0 rows\)"):
        build_features(spark, cfg, START, dt.date(2026, 1, 4), "empty")
    assert not tables.table_exists(spark, cfg.table(tables.FEATURES))


def test_a_repeated_id_is_a_duplicate_within_its_day_and_a_row_of_its_own_on_another(spark, fresh_db):
    """The store's key is (event_date, impression_id): days built one at a time or as a range agree."""
    cfg = fresh_db()
    logs = generated(spark, cfg, START, 2, 30)
    first = logs.where(F.col("event_date") == START).first().impression_id
    copy = logs.where(F.col("impression_id") == first) \
        .withColumn("event_ts", F.col("event_ts") + F.expr("INTERVAL 1 SECOND"))
    other_day = copy.withColumns({"event_date": F.lit(dt.date(2026, 1, 2)),
                                  "event_ts": F.col("event_ts") + F.expr("INTERVAL 1 DAY")})
    write_raw(logs.unionByName(copy).unionByName(other_day), cfg, START, dt.date(2026, 1, 2))
    build_features(spark, cfg, START, dt.date(2026, 1, 2), "dupes")
    kept = spark.table(cfg.table(tables.FEATURES)).where(F.col("impression_id") == first)
    assert sorted(r.event_date for r in kept.collect()) == [START, dt.date(2026, 1, 2)]
    rejected = spark.table(cfg.table(tables.QUARANTINE)).where(F.col("impression_id") == first).collect()
    assert len(rejected) == 1 and "duplicate of an earlier row" in rejected[0].reason
