"""features/training_sets.py on real Spark: two training sets of other windows and rates taken
from one feature table without a rebuild, each re-run selecting exactly the same rows."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from core.training_sets import TrainingSetSpec, TrainingWindow
from features.sampling import train_rows_by_stratum
from features.training_sets import evaluation_rows, train_rows

START, DAYS, PER_DAY = dt.date(2026, 4, 1), 10, 3000
SLOTS = ("stream_audio", "podcast", "stream_video")


@pytest.fixture(scope="module")
def features(spark):
    """A daily table's shape: every row of every day, no split, no sampling."""
    rows = spark.range(DAYS * PER_DAY).select(
        F.concat(F.lit("imp-"), F.col("id").cast("string")).alias("impression_id"),
        F.date_add(F.lit(START), (F.col("id") / PER_DAY).cast("int")).alias("event_date"),
        F.element_at(F.array(*[F.lit(s) for s in SLOTS]), (F.col("id") % 3 + 1).cast("int")).alias("slot"),
        (F.xxhash64("id") % 10 == 0).cast("int").alias("label"))
    return rows.cache()


def spec(window, rates, seed=11):
    return TrainingSetSpec.of("camoe.features", 3, window, rates, seed)


def ids(df):
    return {r[0] for r in df.select("impression_id").collect()}


def test_two_sets_of_other_windows_and_rates_from_one_table_each_rerun_reads_the_same_rows(spark, features):
    """Breakage caught: a draw that is not a function of (seed, impression) (a re-run keeps other
    rows), rates applied to positives or to the validation and test days, a stratum's rate off,
    train rows taken outside the window, or sets of other rates that are not nested."""
    window = TrainingWindow.ending(START + dt.timedelta(days=DAYS - 1), 6, 2, 2)
    hard = spec(window, {("stream_audio", 0): 0.1, ("podcast", 0): 0.3})
    first = train_rows(features, hard)
    assert ids(first) == ids(train_rows(features, hard))                    # the re-run
    dates = {r[0] for r in first.select("event_date").distinct().collect()}
    assert dates == {window.train_start + dt.timedelta(days=i) for i in range(6)}
    before = train_rows_by_stratum(train_rows(features, spec(window, {})))          # every train-day row
    after = train_rows_by_stratum(first)
    for (slot, label), n in before.items():
        rate = hard.rate_of.get((slot, label), 1.0)
        if rate == 1.0:
            assert after[(slot, label)] == n, (slot, label)
        else:                                  # within 4 binomial standard deviations
            assert abs(after[(slot, label)] - rate * n) < 4 * (n * rate * (1 - rate)) ** 0.5, (slot, label)
    weights = {(r.slot, r.label): r.w for r in first.groupBy("slot", "label").agg(F.min("sample_weight").alias("w"),
                                                                                  ).collect()}
    assert weights[("stream_audio", 0)] == pytest.approx(10.0) and weights[("stream_video", 1)] == 1.0
    assert first.select("set_id").distinct().first()[0] == hard.set_id

    # another window and softer rates on the same table: nested in what the harder rates kept
    soft = spec(TrainingWindow.ending(START + dt.timedelta(days=DAYS - 2), 4, 1, 1),
                {("stream_audio", 0): 0.3, ("podcast", 0): 0.3})
    second = train_rows(features, soft)
    assert ids(second) == ids(train_rows(features, soft)) and soft.set_id != hard.set_id
    shared = F.col("event_date").between(soft.window.train_start, soft.window.train_end)
    assert ids(first.where(shared)) <= ids(second.where(shared))

    for split in ("validation", "test"):
        rows = evaluation_rows(features, hard, split)
        first_day, last_day = window.bounds(split)
        assert rows.count() == PER_DAY * ((last_day - first_day).days + 1)
        assert rows.agg(F.max("sample_weight")).first()[0] == rows.agg(F.min("sample_weight")).first()[0] == 1.0
    with pytest.raises(ValueError, match="not 'train'"):
        evaluation_rows(features, hard, "train")
