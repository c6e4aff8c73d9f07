"""The pinned delta-spark jar works with the pinned pyspark: writes, time travel, replaceWhere."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.errors import AnalysisException

from core import delta_versions, faults, lineage, tables


def test_delta_round_trip_time_travel_and_idempotent_date_replace(spark, fresh_db):
    cfg = fresh_db()
    name = cfg.table("roundtrip")
    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
    df = spark.createDataFrame([(1, d1), (2, d1), (3, d2)], "k int, event_date date")
    v0 = tables.replace_date_range(df, name, "event_date", d1, d2, ["event_date"])
    assert v0 == 0
    assert spark.sql(f"DESCRIBE DETAIL {name}").first()["format"] == "delta"

    redo = spark.createDataFrame([(10, d2), (11, d2)], "k int, event_date date")
    v1 = tables.replace_date_range(redo, name, "event_date", d2, d2, ["event_date"])
    assert v1 == 1
    assert sorted(r.k for r in tables.read_table(spark, name).collect()) == [1, 2, 10, 11]
    # the same write again changes nothing but the version
    tables.replace_date_range(redo, name, "event_date", d2, d2, ["event_date"])
    assert sorted(r.k for r in tables.read_table(spark, name).collect()) == [1, 2, 10, 11]
    assert sorted(r.k for r in tables.read_table(spark, name, version=0).collect()) == [1, 2, 3]


def test_the_latest_version_from_deltas_log_matches_its_history_also_after_a_write_by_path(spark, fresh_db,
                                                                                          monkeypatch):
    """latest_version reads Delta's log through its Scala API, and falls back to the public
    history(1) when that call fails (a Delta upgrade that moves it): both give the same answer,
    for the session's own writes and for one that did not go through the catalog (another job)."""
    cfg = fresh_db()
    name = cfg.table("versions")
    spark.range(3).write.format("delta").saveAsTable(name)
    spark.range(2).write.format("delta").mode("append").saveAsTable(name)
    assert delta_versions._log_version(spark, name) == delta_versions._history_version(spark, name) == 1
    location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
    spark.range(1).write.format("delta").mode("append").save(location)
    assert delta_versions._log_version(spark, name) == delta_versions._history_version(spark, name) == 2

    def moved(*_):
        raise AttributeError("org.apache.spark.sql.delta.DeltaLog.forTable does not exist in the JVM")
    monkeypatch.setattr(delta_versions, "_delta_log", moved)
    assert tables.latest_version(spark, name) == 2
    # the fallback's own error for a table that does not exist (Delta's history(1) names it): not a
    # -1 or a 0 returned for it, nor the AttributeError of the moved class leaking out
    with pytest.raises(AnalysisException, match=r"^\[DELTA_MISSING_DELTA_TABLE\] `[^`]+`\.`absent` is not a "
                                                r"Delta table\.$") as missing:
        tables.latest_version(spark, cfg.table("absent"))
    assert missing.value.getCondition() == "DELTA_MISSING_DELTA_TABLE"


def test_the_latest_version_of_a_table_that_is_not_delta_is_refused_by_name(spark, fresh_db):
    """A Parquet table in the metastore (a team's own log registered where the impressions table
    belongs): DeltaLog answers -1 for it, which a pinned read would turn into VERSION AS OF -1.
    Breakage caught: returning that -1 (or any number) instead of naming the table."""
    cfg = fresh_db()
    name = cfg.table("parquet_log")
    spark.range(3).write.format("parquet").saveAsTable(name)
    with pytest.raises(delta_versions.NotADeltaTable, match=rf"^{name} is not a Delta table \(no commit"):
        tables.latest_version(spark, name)


def test_a_write_returns_its_own_version_when_another_driver_committed_after_it(spark, fresh_db, monkeypatch):
    """Lineage names the version a write made: its tagged commit, found in the log's files or,
    where they cannot be read, in Delta's history; not the newest, another job's."""
    cfg = fresh_db()
    name = cfg.table("run_rows")
    mine = []
    real_after_commit = faults.after_commit

    def another_driver_commits(table):        # between this write's commit and its version lookup
        real_after_commit(table)
        if table == name and len(mine) == 1:
            location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
            spark.createDataFrame([("other", 9)], "run_id string, x int").write.format("delta") \
                .mode("append").save(location)
    monkeypatch.setattr(faults, "after_commit", another_driver_commits)
    mine.append(tables.replace_run_rows(spark.createDataFrame([("a", 1)], "run_id string, x int"), name, "a"))
    mine.append(tables.replace_run_rows(spark.createDataFrame([("b", 2)], "run_id string, x int"), name, "b"))
    assert mine == [0, 1] and tables.latest_version(spark, name) == 2
    assert sorted(r.run_id for r in tables.read_table(spark, name, version=1).collect()) == ["a", "b"]

    writer, tag = delta_versions.tag_write(spark.createDataFrame([("c", 3)], "run_id string, x int")
                                           .write.format("delta").mode("append"))
    writer.saveAsTable(name)                                                   # version 3
    spark.createDataFrame([("d", 4)], "run_id string, x int").write.format("delta").mode("append").saveAsTable(name)
    assert delta_versions.written_version(spark, name, tag) == 3
    log_dir = delta_versions._delta_log(spark, name)[0].logPath().toString()
    assert delta_versions._commit_metadata(log_dir, 3) == tag                  # found in the commit's file
    monkeypatch.setattr(delta_versions, "_commit_metadata", lambda *_: 1 / 0)  # log files unreadable
    assert delta_versions.written_version(spark, name, tag) == 3               # from Delta's history


def test_replace_date_range_refuses_rows_outside_the_range(spark, fresh_db):
    cfg = fresh_db()
    name = cfg.table("guarded")
    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
    tables.replace_date_range(spark.createDataFrame([(1, d1)], "k int, event_date date"),
                              name, "event_date", d1, d1, ["event_date"])
    stray = spark.createDataFrame([(2, d2)], "k int, event_date date")
    # Delta's replaceWhere check refuses the stray row itself (not a later read or a partial write)
    with pytest.raises(AnalysisException, match=r"^\[DELTA_REPLACE_WHERE_MISMATCH\] Written data does not conform "
                                                r"to partial table overwrite condition or constraint 'event_date >= "
                                                r"'2026-01-01' AND event_date <= '2026-01-01''") as refused:
        tables.replace_date_range(stray, name, "event_date", d1, d1, ["event_date"])
    assert refused.value.getCondition() == "DELTA_REPLACE_WHERE_MISMATCH"
    assert [r.k for r in tables.read_table(spark, name).collect()] == [1]


def test_replacing_dates_with_other_columns_names_them_and_keeps_the_table(spark, fresh_db):
    cfg = fresh_db()
    name = cfg.table("shaped")
    d1 = dt.date(2026, 1, 1)
    tables.replace_date_range(spark.createDataFrame([(1, d1)], "k int, event_date date"),
                              name, "event_date", d1, d1, ["event_date"])
    newer = spark.createDataFrame([(2, 7, d1)], "k long, slot_id int, event_date date")
    with pytest.raises(tables.SchemaChanged, match=r"new: \['slot_id'\].*k int -> bigint.*DROP TABLE"):
        tables.replace_date_range(newer, name, "event_date", d1, d1, ["event_date"])
    assert [r.k for r in tables.read_table(spark, name).collect()] == [1]


def test_a_run_table_gains_new_columns_and_keeps_earlier_runs(spark, fresh_db):
    cfg = fresh_db()
    name = cfg.table("run_rows")
    tables.replace_run_rows(spark.createDataFrame([("r1", 1.0)], "run_id string, auc double"), name, "r1")
    newer = spark.createDataFrame([("r2", 2.0, 0.5)], "run_id string, auc double, excess_log_loss double")
    tables.replace_run_rows(newer, name, "r2")
    tables.replace_run_rows(newer, name, "r2")                      # idempotent per run id
    rows = sorted(tuple(r) for r in tables.read_table(spark, name).collect())
    assert rows == [("r1", 1.0, None), ("r2", 2.0, 0.5)]

    # a run id this process minted is appended on its first write, replaced on the next, and so
    # are the ids derived from it (an experiment's trainings)
    minted = lineage.new_run_id("job")
    for run_id in (minted, f"{minted}-train-camoe"):
        for auc in (0.1, 0.2):
            tables.replace_run_rows(spark.createDataFrame([(run_id, auc, None)], newer.schema), name, run_id)
    rows = sorted(tuple(r) for r in tables.read_table(spark, name).collect())
    assert rows == sorted([("r1", 1.0, None), ("r2", 2.0, 0.5), (minted, 0.2, None),
                           (f"{minted}-train-camoe", 0.2, None)])
    history = spark.sql(f"DESCRIBE HISTORY {name}").orderBy("version").collect()
    modes = [r.operationParameters.get("mode") for r in history]
    assert modes[-4:] == ["Append", "Overwrite", "Append", "Overwrite"]


def test_tables_are_visible_to_spark_sql_through_the_metastore(spark, fresh_db):
    cfg = fresh_db()
    tables.overwrite_table(spark.range(5), cfg.table("visible"))
    assert spark.sql(f"SELECT COUNT(*) AS n FROM {cfg.table('visible')}").first().n == 5
    names = [t.name for t in spark.catalog.listTables(cfg.database)]
    assert "visible" in names
