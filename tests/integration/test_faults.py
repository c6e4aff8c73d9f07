"""Real faults, survived or named: a data file of the pinned features version deleted or cut short."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from core import tables
from tests.helpers import built_lake
from training.runner import prepare


def _local(url: str) -> str:
    from urllib.parse import unquote, urlparse
    return unquote(urlparse(url).path)


def test_a_missing_or_truncated_file_of_the_pinned_version_is_named_before_training(spark, fresh_db):
    cfg = fresh_db("training.batch_size=256")
    built_lake(spark, cfg, dt.date(2026, 1, 1), 4, 600, "faults-build")
    name = cfg.table(tables.FEATURES)
    version = tables.latest_version(spark, name)
    files = tables.table_files(spark, name, version).files
    job, meta = prepare(spark, cfg, "faults-ok", features_version=version, num_proc=1, backend="local")
    assert meta["features_version"] == version          # intact: the run is planned

    cut, gone = _local(files[0]), _local(files[-1])
    with open(cut, "r+b") as handle:                    # a copy cut short: the footer is lost
        handle.truncate(os.path.getsize(cut) // 2)
    with pytest.raises(tables.DataFileError, match=rf"{name} version {version}: data file \S*{os.path.basename(cut)}"
                                                   r" is not a complete Parquet file"):
        prepare(spark, cfg, "faults-cut", features_version=version, num_proc=1, backend="local")
    os.remove(cut)
    os.remove(gone)
    with pytest.raises(tables.DataFileError, match=rf"data file \S*{os.path.basename(files[0])} is missing"):
        prepare(spark, cfg, "faults-gone", features_version=version, num_proc=1, backend="local")


def _slow(df, seconds_per_row: float):
    """``df`` computed slowly (one Python task sleeping per row): a write that stays open."""
    import time

    from pyspark.sql import functions as F

    pause = F.udf(lambda v: time.sleep(seconds_per_row) or v, "long")
    return df.coalesce(1).withColumn("v", pause(F.col("v")))


def test_a_write_that_loses_a_conflict_is_named_and_commits_nothing(spark, fresh_db):
    import threading
    import time

    from pyspark.sql import functions as F

    cfg = fresh_db()
    name = cfg.table("conflict_demo")
    days = lambda v: spark.range(0, 40).select(                              # noqa: E731
        F.date_add(F.lit(dt.date(2026, 1, 1)), (F.col("id") % 4).cast("int")).alias("event_date"),
        F.lit(v).cast("long").alias("v"))
    tables.replace_date_range(days(0), name, "event_date", dt.date(2026, 1, 1), dt.date(2026, 1, 4), ["event_date"])
    outcome = {}

    def slow_writer():
        try:
            tables.replace_date_range(_slow(days(1), 0.25), name, "event_date", dt.date(2026, 1, 1),
                                      dt.date(2026, 1, 4), ["event_date"])
            outcome["slow"] = "committed"
        except tables.ConcurrentWriteError as exc:
            outcome["slow"] = str(exc)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    time.sleep(4.0)                                      # the slow write's transaction is open
    middle = days(2).where(F.col("event_date").between(dt.date(2026, 1, 2), dt.date(2026, 1, 3)))
    tables.replace_date_range(middle, name, "event_date", dt.date(2026, 1, 2), dt.date(2026, 1, 3), ["event_date"])
    thread.join(120)
    assert not thread.is_alive()
    assert outcome["slow"].startswith(f"{name}: another job committed to event_date 2026-01-01..2026-01-04 "
                                      "while this one was writing them (Concurrent"), outcome
    assert "Nothing of this write was committed" in outcome["slow"]
    # the winner's rows stand, the rest as before; no row twice
    counts = spark.table(name).groupBy("event_date", "v").count().collect()
    rows = {(str(r.event_date), r.v, r["count"]) for r in counts}
    assert rows == {("2026-01-01", 0, 10), ("2026-01-02", 2, 10), ("2026-01-03", 2, 10), ("2026-01-04", 0, 10)}
