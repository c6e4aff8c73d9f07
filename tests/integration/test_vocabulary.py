"""The persistent vocabulary (features/vocabulary.py) on real Spark: append-only ids, point-in-time
admission, one range == its days one by one, capped features' hash buckets, encoding."""
from __future__ import annotations

import datetime as dt
import random

import pytest
from pyspark.sql import functions as F

from features import vocabulary as V

D1 = dt.date(2026, 1, 1)
EVENTS = "event_date date, user_id string, ad_id int"


def day(n: int) -> dt.date:
    """Day n of the test calendar (day 1 is D1)."""
    return D1 + dt.timedelta(days=n - 1)


@pytest.fixture(scope="module")
def events(spark):
    """30 days of a small log whose user and ad ranges grow, so every day brings new values."""
    rng = random.Random(5)
    rows = [(day(n), f"u{rng.randint(0, 4 + n // 2)}" if rng.random() > 0.05 else None, rng.randint(0, 3 + n // 3))
            for n in range(1, 31) for _ in range(12)]
    return spark.createDataFrame(rows, EVENTS).cache()


def counts(spark, rows):
    """Day counts from (feature, value, day number, count) tuples."""
    return spark.createDataFrame([(f, v, day(n), c) for f, v, n, c in rows], V.DAY_COUNTS_SCHEMA)


def materialised(spark, state):
    """The state as the caller would read it back from its table: a plan of one scan."""
    return spark.createDataFrame(state.collect(), V.VOCABULARY_SCHEMA)


def between(events, first: int, last: int):
    return events.where(F.col("event_date").between(day(first), day(last)))


def ids(state, feature="user_id"):
    return {r["value"]: r["index"] for r in state.where(F.col("feature") == feature).collect()
            if r["index"] is not None}


def test_ids_of_earlier_days_survive_counting_later_days_with_new_values(spark, events):
    """Catches a refit: an id or admission day of days 1-10 that changes (renumbered by count, or
    shifted by new values) once days 11-20 are counted, and new values reusing old ids."""
    cols = ("user_id", "ad_id")
    first = materialised(spark, V.extend(V.empty_state(spark), V.count_days(between(events, 1, 10), cols,
                                                                             "event_date"), 2))
    later = V.extend(first, V.count_days(between(events, 11, 20), cols, "event_date"), 2)
    assert V.counted_through(first) == day(10) and V.counted_through(later) == day(20)
    for feature in cols:
        old, new = ids(first, feature), ids(later, feature)
        assert old and {v: new[v] for v in old} == old
        added = set(new) - set(old)
        assert added, f"days 11-20 admit new {feature} values"
        assert sorted(new.values()) == list(range(1, len(new) + 1))           # no gap, no reuse
        assert min(new[v] for v in added) == max(old.values()) + 1
    before = {(r.feature, r.value): r.admitted_on for r in first.collect() if r.admitted_on}
    after = {(r.feature, r.value): r.admitted_on for r in later.collect() if r.admitted_on}
    assert {k: after[k] for k in before} == before


def test_counting_days_one_at_a_time_equals_counting_them_as_one_range(spark, events):
    """Catches ids or admissions that depend on how the days were batched: 30 single-day extensions
    (each read back as from the table) against one 30-day extension, every state row equal, with a
    capped feature spilling into hash buckets mid-range (a candidate of an earlier day admitted
    into a bucket once lost its hashed flag this way)."""
    cols, caps = ("user_id", "ad_id"), {"user_id": (8, 5)}
    state = V.empty_state(spark)
    for n in range(1, 31):
        one_day = V.count_days(between(events, n, n), cols, "event_date")
        state = materialised(spark, V.extend(state, one_day, 3, caps))
    whole = V.extend(V.empty_state(spark), V.count_days(events, cols, "event_date"), 3, caps)
    by_day, at_once = sorted(state.collect()), sorted(whole.collect())
    assert by_day == at_once
    assert V.hashed_counts(whole)["user_id"] > 0 and "ad_id" not in V.hashed_counts(whole)
    assert all(r.counted_through == day(30) for r in at_once)


def test_a_value_is_admitted_the_day_after_its_sightings_reach_min_count(spark):
    """Catches look-ahead: an id used on the day its min_count-th sighting happens (its earlier rows
    would depend on that day's later events), admission counted per day instead of cumulatively,
    or a candidate's earlier count lost between extensions."""
    first = materialised(spark, V.extend(V.empty_state(spark), counts(spark, [
        ("user_id", "a", 1, 2), ("user_id", "b", 1, 1), ("user_id", "c", 1, 3)]), 3))
    def rows(state):
        return {r["value"]: (r["index"], r["admitted_on"], r["count"], r["first_seen"]) for r in state.collect()}

    assert rows(first) == {"c": (1, day(2), 3, day(1)), "a": (None, None, 2, day(1)), "b": (None, None, 1, day(1))}
    state = V.extend(first, counts(spark, [("user_id", "a", 2, 1), ("user_id", "b", 2, 1),
                                           ("user_id", "b", 3, 4)]), 3)
    assert rows(state) == {"c": (1, day(2), 3, day(1)), "a": (2, day(3), 3, day(1)), "b": (3, day(4), 6, day(1))}
    df = spark.createDataFrame([(day(n), v, 0) for n in (1, 2, 3, 4) for v in "abc"], EVENTS)
    got = {(r.event_date, r.user_id): r.cat_user_id for r in
           V.encode(df, state, ("user_id",), "event_date").collect()}
    assert [got[(day(n), "a")] for n in (1, 2, 3, 4)] == [0, 0, 2, 2]       # the eve of day 3: OOV
    assert [got[(day(n), "b")] for n in (1, 2, 3, 4)] == [0, 0, 0, 3]
    assert [got[(day(n), "c")] for n in (1, 2, 3, 4)] == [0, 1, 1, 1]


def test_new_ids_follow_admission_day_then_count_then_value_whatever_the_input_order(spark):
    """Catches ids that follow Spark's partitioning or row order instead of (admission day, running
    count at admission descending, value), or that restart at 1 instead of after the largest id."""
    rows = [("ad_id", "x", 1, 5), ("ad_id", "y", 1, 5), ("ad_id", "z", 1, 7), ("ad_id", "w", 1, 2),
            ("ad_id", "big", 2, 50), ("ad_id", "w0", 1, 1), ("ad_id", "w0", 2, 1), ("ad_id", "late", 1, 1)]
    orders = []
    for seed in (1, 2, 3):
        shuffled = random.Random(seed).sample(rows, len(rows))
        orders.append(ids(V.extend(V.empty_state(spark), counts(spark, shuffled).repartition(3), 2), "ad_id"))
    assert orders[0] == orders[1] == orders[2] == {"z": 1, "x": 2, "y": 3, "w": 4, "big": 5, "w0": 6}
    more = V.extend(materialised(spark, V.extend(V.empty_state(spark), counts(spark, rows), 2)),
                    counts(spark, [("ad_id", "late", 3, 1), ("ad_id", "new", 3, 2)]), 2)
    assert ids(more, "ad_id") == orders[0] | {"late": 7, "new": 8}          # ties at count 2: by value


def test_a_full_feature_sends_later_values_to_counted_hash_buckets(spark):
    """Catches a capacity that is not enforced, buckets outside [capacity+1, capacity+hash_buckets]
    or not from the value's stable hash, hashed values left unflagged or uncounted, and a cap of
    one feature leaking into another's ids or cardinality."""
    caps = {"user_id": (3, 4)}
    first = materialised(spark, V.extend(V.empty_state(spark), counts(
        spark, [("user_id", f"u{i}", 1, 10 - i) for i in range(5)] + [("ad_id", "a1", 1, 1)]), 1, caps))
    state = V.extend(first, counts(spark, [("user_id", f"v{i}", 2, 1) for i in range(6)]), 1, caps)
    users = state.where(F.col("feature") == "user_id").withColumn(
        "expected", F.when(F.col("hashed"), 4 + F.expr("pmod(xxhash64(value), 4)")).otherwise(F.col("index")))
    rows = {r.value: r for r in users.collect()}
    assert {v: rows[v]["index"] for v in ("u0", "u1", "u2")} == {"u0": 1, "u1": 2, "u2": 3}
    spilled = [r for r in rows.values() if r.hashed]
    assert sorted(r.value for r in spilled) == ["u3", "u4"] + [f"v{i}" for i in range(6)]
    assert all(4 <= r["index"] <= 7 and r["index"] == r.expected for r in spilled)
    assert V.hashed_counts(state) == {"user_id": 8}
    assert V.hashed_counts(state, counted_after=V.counted_through(first)) == {"user_id": 6}
    assert V.cardinality(state, "user_id", caps) == 8 and V.cardinality(state, "ad_id", caps) == 2
    df = spark.createDataFrame([(day(3), "v0", 1), (day(3), "u1", 1)], EVENTS)
    got = {r.user_id: r.cat_user_id for r in V.encode(df, state, ("user_id",), "event_date").collect()}
    assert got == {"v0": rows["v0"]["index"], "u1": 2}
    with pytest.raises(ValueError, match=r"'user_id' already holds id 3, above its capacity 2"):
        V.extend(state, counts(spark, [("user_id", "w", 3, 1)]), 1, {"user_id": (2, 4)})


def test_counting_a_day_already_counted_is_refused_naming_the_feature_and_day(spark):
    """Catches a rerun of a day (or a range overlapping the watermark) doubling its sightings
    instead of failing."""
    state = materialised(spark, V.extend(V.empty_state(spark), counts(
        spark, [("user_id", "a", n, 1) for n in range(1, 11)]), 2))
    assert V.counted_through(state) == day(10)
    with pytest.raises(ValueError, match=r"'ad_id': day 2026-01-10 is already counted .* through 2026-01-10"):
        V.extend(state, counts(spark, [("user_id", "a", 11, 1), ("ad_id", "b", 10, 1)]), 2)
    with pytest.raises(ValueError, match=r"'user_id': day 2026-01-09 is already counted"):
        V.extend(state, counts(spark, [("user_id", "a", n, 1) for n in (9, 10, 11)]), 2)
    assert V.counted_through(V.extend(state, counts(spark, [("user_id", "a", 11, 1)]), 2)) == day(11)


def test_nulls_unseen_values_and_undated_rows_encode_to_oov(spark):
    """Catches nulls counted as a value or given an id, unseen values getting one, numeric columns
    missing their string-keyed ids, and an undated row treated as admitted."""
    df = spark.createDataFrame([(day(1), "a", 7), (day(1), None, 7), (day(1), "a", None), (day(2), "a", 7),
                                (day(2), None, None), (day(3), "zz", 99), (None, "a", 7)], EVENTS)
    day_counts = V.count_days(df, ("user_id", "ad_id"), "event_date")
    assert sorted(tuple(r) for r in day_counts.collect()) == [
        ("ad_id", "7", day(1), 2), ("ad_id", "7", day(2), 1), ("ad_id", "99", day(3), 1),
        ("user_id", "a", day(1), 2), ("user_id", "a", day(2), 1), ("user_id", "zz", day(3), 1)]
    state = V.extend(V.empty_state(spark), day_counts.where(F.col("event_date") < day(3)), 1)
    got = V.encode(df, state, ("user_id", "ad_id"), "event_date") \
        .select("event_date", "user_id", "ad_id", "cat_user_id", "cat_ad_id").collect()
    assert sorted((tuple(r) for r in got if r.event_date is not None), key=repr) == sorted([
        (day(1), "a", 7, 0, 0), (day(1), None, 7, 0, 0), (day(1), "a", None, 0, 0),
        (day(2), "a", 7, 1, 1), (day(2), None, None, 0, 0), (day(3), "zz", 99, 0, 0)], key=repr)
    assert [(r.cat_user_id, r.cat_ad_id) for r in got if r.event_date is None] == [(0, 0)]
    assert V.cardinality(state, "user_id") == 2 and V.cardinality(V.empty_state(spark), "user_id") == 1
