"""The file-reading scoring path (training.table_scoring.score_table) against score_dataframe, on a
real trained model and real Delta tables: same scores, same rows, the fallback, bad ids."""
from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pytest

from core import lineage, tables
from training.artifact import read_artifact
from training.inference import score_dataframe
from training.table_scoring import RowSelection, raw_files_untrusted, score_table, selected_files

KEEP = ["impression_id", "event_date", "slot", "label"]


@pytest.fixture(scope="module")
def trained(spark, experiment):
    """The evaluation suite's camoe (tests/conftest.py ``experiment``): (cfg, artifact folder, ModelArtifact)."""
    cfg, _ = experiment
    artifact = lineage.find_train_run(spark, cfg, "exp1-train-camoe-seed17")["artifact"]
    return cfg, artifact, read_artifact(artifact)


def _corrections(description):
    shift = {s: 0.25 * i - 1.0 for i, s in enumerate(description.layout.slots)}
    temperatures = {t: 1.5 + 0.25 * i for i, t in enumerate(description.tasks)}
    return shift, temperatures


def _features(spark, cfg, description):
    return tables.table_files(spark, cfg.table(tables.FEATURES), description.features_version)


def test_the_file_path_scores_exactly_like_score_dataframe(spark, trained):
    """Same rows, schema and values to the bit, expert masking included: the same Scorer gets
    the same inputs (each row its own model call, so no batch composition can move an ulp)."""
    cfg, artifact, description = trained
    shift, temperatures = _corrections(description)
    table = _features(spark, cfg, description)
    assert raw_files_untrusted(table) is None
    selection = RowSelection(split="test")
    files = score_table(spark, table, artifact, shift, temperatures, KEEP, selection, masked_experts=True,
                        rows_per_batch=1)
    rows = selection.where(tables.read_table(spark, table.name, table.version))
    spark_path = score_dataframe(rows, artifact, shift, temperatures, KEEP, masked_experts=True, rows_per_batch=1)
    assert files.schema == spark_path.schema
    got = files.toPandas().set_index("impression_id").sort_index()
    want = spark_path.toPandas().set_index("impression_id").sort_index()
    assert len(got) == len(want) == rows.count() > 0
    assert got.index.equals(want.index)
    for name in ("event_date", "slot", "label", "task", "logit", "pctr_raw", "pctr"):
        np.testing.assert_array_equal(got[name].to_numpy(), want[name].to_numpy(), err_msg=name)
    np.testing.assert_array_equal(np.stack(got["masked_pctr"].to_numpy()), np.stack(want["masked_pctr"].to_numpy()))


def test_the_file_path_agrees_with_score_dataframe_at_the_default_batch(spark, trained):
    cfg, artifact, description = trained
    shift, temperatures = _corrections(description)
    table = _features(spark, cfg, description)
    got = score_table(spark, table, artifact, shift, temperatures, KEEP).toPandas().set_index("impression_id")
    rows = tables.read_table(spark, table.name, table.version)
    want = score_dataframe(rows, artifact, shift, temperatures, KEEP).toPandas().set_index("impression_id")
    got = got.loc[want.index]
    for name in ("logit", "pctr_raw", "pctr"):     # float32 logits: an ulp with the rows per model call
        np.testing.assert_allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=1e-6, atol=1e-7)


def test_partition_pruning_and_row_filters_select_what_spark_selects(spark, trained):
    cfg, artifact, description = trained
    shift, temperatures = _corrections(description)
    table = _features(spark, cfg, description)
    rows = tables.read_table(spark, table.name, table.version)
    dates = sorted(r.event_date for r in rows.select("event_date").distinct().collect())
    slots = tuple(description.layout.slots[:3])
    for selection in (RowSelection(split="test"), RowSelection(split="validation", slots=slots),
                      RowSelection(start=dates[1], end=dates[2], slots=slots),
                      RowSelection(split="train", start=dates[1]), RowSelection(split="nope")):
        got = score_table(spark, table, artifact, shift, temperatures, ["impression_id"], selection)
        want = selection.where(rows).select("impression_id")
        assert sorted(r.impression_id for r in got.select("impression_id").collect()) == \
            sorted(r.impression_id for r in want.collect()), selection

    # files of other dates are never opened
    conditions = RowSelection(start=dates[1], end=dates[1]).conditions(rows.columns)
    import pyarrow as pa
    kept = selected_files(table, conditions, {"event_date": pa.date32()})
    assert 0 < len(kept) < len(table.files)
    assert {values["event_date"] for _, values in kept} == {dates[1].isoformat()}


def test_a_table_with_deletion_vectors_is_scored_through_spark(spark, trained, caplog):
    cfg, artifact, description = trained
    shift, temperatures = _corrections(description)
    name = cfg.table("features_dv")
    spark.sql(f"DROP TABLE IF EXISTS {name}")
    spark.sql(f"CREATE TABLE {name} USING delta PARTITIONED BY (event_date) "
              f"TBLPROPERTIES ('delta.enableDeletionVectors' = 'true') "
              f"AS SELECT * FROM {cfg.table(tables.FEATURES)} VERSION AS OF {description.features_version}")
    deleted = [r.impression_id for r in spark.table(name).where("split = 'test'").limit(5).collect()]
    spark.sql(f"DELETE FROM {name} WHERE impression_id IN ({', '.join(repr(i) for i in deleted)})")
    table = tables.table_files(spark, name)
    assert "deletionVectors" in (raw_files_untrusted(table) or "")
    with caplog.at_level(logging.WARNING, logger="training.table_scoring"):
        scored = score_table(spark, table, artifact, shift, temperatures, KEEP, RowSelection(split="test"))
    assert any("through Spark's reader" in r.getMessage() and "deletionVectors" in r.getMessage()
               for r in caplog.records)
    got = {r.impression_id for r in scored.select("impression_id").collect()}
    want = {r.impression_id for r in spark.table(name).where("split = 'test'").select("impression_id").collect()}
    assert got == want and not got & set(deleted)


def test_a_view_or_column_mapping_is_not_read_from_files(spark, trained):
    cfg, _, description = trained
    view = cfg.table("features_view")
    spark.sql(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {cfg.table(tables.FEATURES)}")
    assert "a view" in raw_files_untrusted(tables.table_files(spark, view))
    mapped = cfg.table("features_mapped")
    spark.sql(f"DROP TABLE IF EXISTS {mapped}")
    spark.sql(f"CREATE TABLE {mapped} USING delta PARTITIONED BY (event_date) "
              f"TBLPROPERTIES ('delta.columnMapping.mode' = 'name') "
              f"AS SELECT * FROM {cfg.table(tables.FEATURES)} WHERE split = 'test'")
    assert "columnMapping" in raw_files_untrusted(tables.table_files(spark, mapped))


def test_a_null_id_is_reported_by_column_and_file(spark, trained):
    from pyspark.sql import functions as F

    cfg, artifact, description = trained
    shift, temperatures = _corrections(description)
    column = description.layout.categorical[1]
    name = cfg.table("features_null_id")
    rows = tables.read_table(spark, cfg.table(tables.FEATURES), description.features_version).where("split = 'test'")
    first = rows.select("impression_id").orderBy("impression_id").first().impression_id
    broken = rows.withColumn(column, F.when(F.col("impression_id") == first, F.lit(None)).otherwise(F.col(column)))
    broken.write.format("delta").mode("overwrite").partitionBy("event_date").saveAsTable(name)
    table = tables.table_files(spark, name)
    assert raw_files_untrusted(table) is None
    with pytest.raises(Exception, match=rf"feature column {column} holds null\(s\) in \S+/event_date=\S+\.parquet"):
        score_table(spark, table, artifact, shift, temperatures, KEEP).collect()


def test_score_refuses_candidates_it_cannot_score_and_writes_nothing(spark, trained):
    """serving.scoring.score_run: a missing candidates table, candidates of another feature build
    (their category ids differ from the model's: a check on build_run_id removed lets them be
    scored silently wrong) and a selection with no rows are each refused by name before a
    predictions row is written (an empty run would replace that run id's rows with none)."""
    from pyspark.sql import functions as F

    from serving.scoring import score_run

    cfg, _, description = trained
    train_run = "exp1-train-camoe-seed17"
    predictions = cfg.table(tables.PREDICTIONS)
    before = tables.latest_version(spark, predictions) if tables.table_exists(spark, predictions) else None

    with pytest.raises(tables.TableNotFound, match=rf"^candidates table {cfg.database}\.no_such_table does not exist$"):
        score_run(spark, cfg, "refused-1", train_run, candidates=cfg.table("no_such_table"))

    rebuilt = cfg.table("candidates_of_another_build")
    (spark.table(cfg.table(tables.FEATURES)).where("split = 'test'").limit(200)
     .withColumn("build_run_id", F.lit("another-build"))
     .write.format("delta").mode("overwrite").saveAsTable(rebuilt))
    try:
        refusal = (rf"candidates in {rebuilt} come from feature build\(s\) \['another-build'\], "
                   rf"but the model was trained on build {description.build_run_id}")
        with pytest.raises(ValueError, match=refusal):
            score_run(spark, cfg, "refused-2", train_run, candidates=rebuilt)
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {rebuilt}")

    with pytest.raises(ValueError, match=r"no candidate rows in \S+ \(split=test, dates 2030-01-01\.\.2030-01-01"):
        score_run(spark, cfg, "refused-3", train_run, start=dt.date(2030, 1, 1), end=dt.date(2030, 1, 1))

    after = tables.latest_version(spark, predictions) if tables.table_exists(spark, predictions) else None
    assert after == before
