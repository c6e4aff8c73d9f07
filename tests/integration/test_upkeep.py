"""Delta upkeep on real tables: a row that breaks a CHECK constraint fails its write at the table;
VACUUM keeps every version a still-existing model was trained on and removes the rest; the
retention properties follow; jobs/maintain.py runs it over the platform's tables; training sets
past their retention are deleted unless a recent training run names them; the old feature
layout's tables are dropped on request."""
from __future__ import annotations

import datetime as dt

import pytest
from py4j.protocol import Py4JJavaError
from pyspark.sql import functions as F

from core import lineage, tables
from features import upkeep
from jobs import maintain
from jobs._cli import main as job_main

DAY = dt.date(2026, 2, 2)
FEATURE_COLUMNS = "impression_id string, slot string, modality string, label int, event_date date"


def _features(spark, label: int = 0, rows: int = 4):
    return spark.createDataFrame([(f"i{k}", "podcast", "audio", label, DAY) for k in range(rows)], FEATURE_COLUMNS)


def _properties(spark, name: str) -> dict[str, str]:
    return {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}


def test_a_row_that_breaks_a_constraint_fails_its_write_at_the_table(spark, fresh_db):
    cfg = fresh_db()
    features = cfg.table(tables.FEATURES)
    # the write that creates the table creates its constraints, and checks its own rows with them
    with pytest.raises(tables.ConstraintViolation, match=r"features: .* constraint label_binary .*: label : 2"):
        tables.replace_date_range(_features(spark, label=2), features, "event_date", DAY, DAY)
    assert not tables.table_exists(spark, features)
    tables.replace_date_range(_features(spark), features, "event_date", DAY, DAY)
    assert {f"delta.constraints.{c.lower()}" for c in tables.CONSTRAINTS[tables.FEATURES]} \
        <= set(_properties(spark, features))
    assert tables.ensure_constraints(spark, features) == []
    version = tables.latest_version(spark, features)
    broken = r"features: a row breaks the table's constraint label_binary \(label IN \(0, 1\)\): label : 2; "
    with pytest.raises(tables.ConstraintViolation, match=broken):
        tables.replace_date_range(_features(spark, label=2), features, "event_date", DAY, DAY)
    assert tables.latest_version(spark, features) == version and spark.table(features).count() == 4

    predictions = cfg.table(tables.PREDICTIONS)
    row = "run_id string, impression_id string, pctr double, pctr_raw double, label int"
    # a table an older version created without them gets them from ensure_constraints (a job's end, maintain)
    spark.createDataFrame([("r1", "i1", 0.2, 0.1, None)], row).write.format("delta").saveAsTable(predictions)
    assert tables.ensure_constraints(spark, predictions) == list(tables.CONSTRAINTS[tables.PREDICTIONS])
    assert tables.ensure_constraints(spark, predictions) == []                  # once only
    with pytest.raises(tables.ConstraintViolation, match=r"predictions: .* constraint pctr_probability .*: pctr : 1.5"):
        tables.replace_run_rows(spark.createDataFrame([("r2", "i1", 1.5, 0.1, 1)], row), predictions, "r2")
    assert [r.run_id for r in spark.table(predictions).collect()] == ["r1"]


def test_vacuum_keeps_the_versions_a_model_was_trained_on_and_removes_the_rest(spark, fresh_db, base_overrides,
                                                                                tmp_path, capsys):
    cfg = fresh_db("storage.retain_days=0")
    features = cfg.table(tables.FEATURES)
    for label in (0, 1, 0):                         # versions 0, 1, 2: each rewrites the day's files
        tables.replace_date_range(_features(spark, label), features, "event_date", DAY, DAY)
    first = tables.latest_version(spark, features) - 2
    model = tmp_path / "model"
    model.mkdir()
    run = lineage.RunRecord("train-1", "train", inputs={tables.FEATURES: first},
                           outputs={"model_artifact": str(model)})
    lineage.record_run(spark, cfg, run)
    assert upkeep.protected_versions(spark, cfg) == {tables.FEATURES: {first}}

    kept = upkeep.maintain_table(spark, features, 0, {first}, ("slot",))
    assert kept.files_removed == 0 and kept.retain_hours >= 1 and kept.zorder_by == ("slot",)
    assert spark.sql(f"SELECT * FROM {features} VERSION AS OF {first}").where(F.col("label") == 0).count() == 4
    assert _properties(spark, features)["delta.logRetentionDuration"] == f"interval {kept.retain_hours} hours"

    # the model is gone: its version is no longer protected, and retain_days=0 keeps nothing old
    model.rmdir()
    assert upkeep.protected_versions(spark, cfg) == {}
    code = job_main("maintain", maintain.__doc__, maintain.add_arguments, maintain.run,
                    [*(f"--set={o}" for o in base_overrides), f"--set=database={cfg.database}",
                     "--set=storage.retain_days=0", "--tables", "features,runs"])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(ln for ln in out.splitlines() if ln.startswith("features "))
    _, retain_hours, removed = line.split()[:3]
    assert retain_hours == "0" and int(removed) > 0
    # the old version's data files are gone (VACUUM removed them), while its log entry still
    # resolves: a read of it fails on the missing Parquet file. (A VACUUM that removed nothing
    # reads back 4 rows; pyspark does not convert this SparkException, so it arrives as py4j's.)
    with pytest.raises(Py4JJavaError, match=r"\[FAILED_READ_FILE\.FILE_NOT_EXIST\] Encountered error while reading "
                                            r"file file:\S+/features/part-\S+\.parquet\. File does not exist\."):
        spark.sql(f"SELECT * FROM {features} VERSION AS OF {first}").collect()
    assert spark.table(features).count() == 4          # the latest version reads as before


def _training_set(spark, cfg, set_id: str, created: dt.datetime | None) -> None:
    """Two rows of training set ``set_id`` and, with ``created``, its sampling_rates rows."""
    rows = spark.createDataFrame([(f"{set_id}-{k}", "podcast", k % 2, 1.0 + k, set_id, DAY) for k in range(2)],
                                 "impression_id string, slot string, label int, sample_weight double, "
                                 "set_id string, event_date date")
    rows.write.format("delta").mode("append").partitionBy("set_id", "event_date") \
        .saveAsTable(cfg.table(tables.TRAINING_SETS))
    if created is not None:
        spark.createDataFrame([(set_id, "podcast", label, 0.5, 10, 5, created) for label in (0, 1)],
                              "set_id string, slot string, label int, rate double, rows_before long, "
                              "rows_after long, created_at timestamp") \
            .write.format("delta").mode("append").saveAsTable(cfg.table(tables.SAMPLING_RATES))


def test_training_sets_past_their_retention_are_deleted_unless_a_recent_training_run_names_them(spark, fresh_db):
    cfg = fresh_db()
    now = dt.datetime.now()
    for set_id, age_days in (("ts-old", 30), ("ts-old-in-use", 30), ("ts-new", 1)):
        _training_set(spark, cfg, set_id, now - dt.timedelta(days=age_days))
    _training_set(spark, cfg, "ts-orphan", None)       # its write stopped before sampling_rates: its files' age
    lineage.record_run(spark, cfg, lineage.RunRecord("train-1", "train", params={"training_set": "ts-old-in-use"}))
    lineage.record_run(spark, cfg, lineage.RunRecord("train-2", "train", params={"training_set": "ts-old"}),
                       status="failed")             # a failed run protects nothing

    def held(short: str) -> set[str]:
        return {r.set_id for r in spark.table(cfg.table(short)).select("set_id").distinct().collect()}

    cleaned = upkeep.clean_training_sets(spark, cfg, 14, now=now)
    assert cleaned.deleted == ("ts-old",) and cleaned.kept_in_use == ("ts-old-in-use",)
    assert set(cleaned.versions) == {tables.TRAINING_SETS, tables.SAMPLING_RATES}
    assert held(tables.TRAINING_SETS) == {"ts-old-in-use", "ts-new", "ts-orphan"}
    assert held(tables.SAMPLING_RATES) == {"ts-old-in-use", "ts-new"}
    assert upkeep.clean_training_sets(spark, cfg, 14, now=now).deleted == ()      # nothing more to delete

    # three weeks later the run that named it is past the retention too, and every set goes
    later = upkeep.clean_training_sets(spark, cfg, 14, now=now + dt.timedelta(days=21))
    assert later.deleted == ("ts-new", "ts-old-in-use", "ts-orphan") and later.kept_in_use == ()
    assert spark.table(cfg.table(tables.TRAINING_SETS)).count() == 0
    assert spark.table(cfg.table(tables.SAMPLING_RATES)).count() == 0


def test_drop_old_layout_drops_the_old_layouts_tables_only(spark, fresh_db, base_overrides, capsys):
    cfg = fresh_db()
    old = {tables.FEATURES: "impression_id string, split string, label int, event_date date",
           tables.VOCABULARIES: "feature string, value string, index int",
           "feature_stats": "feature string, mean double, std double",
           tables.SAMPLING_RATES: "run_id string, slot string, label int, rate double"}
    for short, schema in old.items():
        spark.createDataFrame([], schema).write.format("delta").saveAsTable(cfg.table(short))
    tables.replace_date_range(_features(spark), cfg.table(tables.ENTITY_DAILY), "event_date", DAY, DAY)
    code = job_main("maintain", maintain.__doc__, maintain.add_arguments, maintain.run,
                    [*(f"--set={o}" for o in base_overrides), f"--set=database={cfg.database}",
                     "--drop-old-layout", "--tables", "runs"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "dropped the old layout's features, vocabularies, feature_stats, sampling_rates" in out
    assert not any(tables.table_exists(spark, cfg.table(short)) for short in old)
    assert tables.table_exists(spark, cfg.table(tables.ENTITY_DAILY))
    # the new layout's tables are kept: a second run drops nothing
    tables.replace_date_range(_features(spark), cfg.table(tables.FEATURES), "event_date", DAY, DAY)
    _training_set(spark, cfg, "ts-1", dt.datetime.now())
    assert upkeep.drop_old_layout(spark, cfg) == ()
    assert spark.table(cfg.table(tables.FEATURES)).count() == 4
