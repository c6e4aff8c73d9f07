"""The file-reading scoring path (training.table_scoring.score_table) against score_dataframe, on a
real trained model and real Delta tables: same scores, same rows, the fallback, bad ids; and a
model trained on days 1-10 of the daily store scoring day 20 (ids admitted since: out of vocabulary)."""
from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pytest

from core import lineage, tables
from core.feature_table import TEST, VALIDATION
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


def _days(description, split: str) -> str:
    """SQL: the rows of ``split``'s days of the model's training window."""
    first, last = description.window.bounds(split)
    return f"event_date BETWEEN DATE'{first}' AND DATE'{last}'"


def test_the_file_path_scores_exactly_like_score_dataframe(spark, trained):
    """Same rows, schema and values to the bit, expert masking included: the same Scorer gets
    the same inputs (each row its own model call, so no batch composition can move an ulp)."""
    cfg, artifact, description = trained
    shift, temperatures = _corrections(description)
    table = _features(spark, cfg, description)
    assert raw_files_untrusted(table) is None
    selection = RowSelection.of_split(description.window, TEST)
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
    window = description.window
    for selection in (RowSelection.of_split(window, TEST), RowSelection.of_split(window, VALIDATION, slots),
                      RowSelection(start=dates[1], end=dates[2], slots=slots),
                      RowSelection(start=dates[1]), RowSelection(start=dt.date(2030, 1, 1))):
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
    deleted = [r.impression_id for r in spark.table(name).where(_days(description, TEST)).limit(5).collect()]
    spark.sql(f"DELETE FROM {name} WHERE impression_id IN ({', '.join(repr(i) for i in deleted)})")
    table = tables.table_files(spark, name)
    assert "deletionVectors" in (raw_files_untrusted(table) or "")
    with caplog.at_level(logging.WARNING, logger="training.table_scoring"):
        scored = score_table(spark, table, artifact, shift, temperatures, KEEP,
                             RowSelection.of_split(description.window, TEST))
    assert any("through Spark's reader" in r.getMessage() and "deletionVectors" in r.getMessage()
               for r in caplog.records)
    got = {r.impression_id for r in scored.select("impression_id").collect()}
    want = {r.impression_id for r in spark.table(name).where(_days(description, TEST)).select("impression_id")
            .collect()}
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
              f"AS SELECT * FROM {cfg.table(tables.FEATURES)} WHERE {_days(description, TEST)}")
    assert "columnMapping" in raw_files_untrusted(tables.table_files(spark, mapped))


def test_a_null_id_is_reported_by_column_and_file(spark, trained):
    from pyspark.sql import functions as F

    cfg, artifact, description = trained
    shift, temperatures = _corrections(description)
    column = description.layout.categorical[1]
    name = cfg.table("features_null_id")
    rows = tables.read_table(spark, cfg.table(tables.FEATURES), description.features_version) \
        .where(_days(description, TEST))
    first = rows.select("impression_id").orderBy("impression_id").first().impression_id
    broken = rows.withColumn(column, F.when(F.col("impression_id") == first, F.lit(None)).otherwise(F.col(column)))
    broken.write.format("delta").mode("overwrite").partitionBy("event_date").saveAsTable(name)
    table = tables.table_files(spark, name)
    assert raw_files_untrusted(table) is None
    with pytest.raises(Exception, match=rf"feature column {column} holds null\(s\) in \S+/event_date=\S+\.parquet"):
        score_table(spark, table, artifact, shift, temperatures, KEEP).collect()


def test_score_refuses_candidates_it_cannot_score_and_writes_nothing(spark, trained):
    """serving.scoring.score_run: a missing candidates table, a table of the feature layout before
    the daily store (its ids are another vocabulary's: scored, they would be silently wrong) and a
    selection with no rows are each refused by name before a predictions row is written (an
    empty run would replace that run id's rows with none)."""
    from pyspark.sql import functions as F

    from core.feature_table import old_layout_error
    from serving.scoring import score_run

    cfg, _, description = trained
    train_run = "exp1-train-camoe-seed17"
    predictions = cfg.table(tables.PREDICTIONS)
    before = tables.latest_version(spark, predictions) if tables.table_exists(spark, predictions) else None

    with pytest.raises(tables.TableNotFound, match=rf"^candidates table {cfg.database}\.no_such_table does not exist$"):
        score_run(spark, cfg, "refused-1", train_run, candidates=cfg.table("no_such_table"))

    old = cfg.table("candidates_of_the_old_layout")
    (spark.table(cfg.table(tables.FEATURES)).where(_days(description, TEST)).limit(200)
     .withColumn("split", F.lit("test")).write.format("delta").mode("overwrite").saveAsTable(old))
    try:
        with pytest.raises(ValueError) as refused:
            score_run(spark, cfg, "refused-2", train_run, candidates=old)
        assert str(refused.value) == old_layout_error(old)
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {old}")

    with pytest.raises(ValueError, match=r"no candidate rows in \S+ \(dates 2030-01-01\.\.2030-01-01, slots \["):
        score_run(spark, cfg, "refused-3", train_run, split=None, start=dt.date(2030, 1, 1), end=dt.date(2030, 1, 1))
    test_end = description.window.test_end
    with pytest.raises(ValueError, match=rf"no candidate rows in \S+ \(split=test of the model's window, "
                                         rf"dates 2030-01-01\.\.{test_end}"):
        score_run(spark, cfg, "refused-4", train_run, start=dt.date(2030, 1, 1))

    after = tables.latest_version(spark, predictions) if tables.table_exists(spark, predictions) else None
    assert after == before


def test_score_days_are_the_models_window_split_narrowed_by_the_dates():
    from core.training_sets import TrainingWindow
    from serving.scoring import candidate_days

    window = TrainingWindow.ending(dt.date(2026, 1, 10), 8, 1, 1)
    day = dt.date
    assert candidate_days(window, "test", None, None) == (day(2026, 1, 10), day(2026, 1, 10))
    assert candidate_days(window, "train", day(2026, 1, 5), None) == (day(2026, 1, 5), day(2026, 1, 8))
    assert candidate_days(window, "validation", None, day(2026, 1, 30)) == (day(2026, 1, 9), day(2026, 1, 9))
    assert candidate_days(window, None, day(2026, 1, 20), day(2026, 1, 20)) == (day(2026, 1, 20), day(2026, 1, 20))
    assert candidate_days(window, "", None, None) == (None, None)


OOV_START = dt.date(2026, 3, 1)


def test_a_model_trained_on_days_1_to_10_scores_day_20_with_ids_admitted_since_as_oov(spark, fresh_db):
    """Days 1-10 built, a model trained on them (window ending day 10), then days 11-20 built:
    day 20's values admitted after day 10 have ids past the model's embeddings; scored, they
    are out-of-vocabulary (id 0): the same scores as the rows with those ids set to 0, all finite."""
    from pyspark.sql import functions as F

    from features.pipeline import build_features
    from tests.helpers import built_lake, generated, write_raw
    from training.inference import score_dataframe
    from training.runner import train

    cfg = fresh_db("training.batch_size=256", "training.shuffle_buffer=0")
    day10, day11, day20 = (OOV_START + dt.timedelta(days=n) for n in (9, 10, 19))
    built_lake(spark, cfg, OOV_START, 10, 1500, "oov-build-1")
    _, model, artifact = train(spark, cfg, "oov-train", model_name="camoe", backend="local", num_proc=1, epochs=1,
                               end_date=day10)
    assert model.window.test_end == day10
    tables.note_minted_run_id("oov-build-2")
    write_raw(generated(spark, cfg, day11, 10, 1500), cfg, day11, day20)
    build_features(spark, cfg, day11, day20, "oov-build-2")

    table = tables.table_files(spark, cfg.table(tables.FEATURES))
    rows = tables.read_table(spark, table.name, table.version).where(F.col("event_date") == F.lit(day20))
    cardinality = dict(zip(model.layout.categorical, model.layout.cardinalities))
    past = {c: rows.where(F.col(c) >= n).count() for c, n in cardinality.items()}
    assert sum(past.values()) > 0, "day 20 holds no value admitted after the model was trained"
    oov = rows.select(*[F.when(F.col(c) >= cardinality[c], F.lit(0)).otherwise(F.col(c)).alias(c)
                        if c in cardinality else F.col(c) for c in rows.columns])
    shift = model.logit_shift()
    keep = ["impression_id", "event_date"]
    scored = score_table(spark, table, artifact, shift, None, keep, RowSelection(start=day20, end=day20)).toPandas()
    want = score_dataframe(oov, artifact, shift, None, keep).toPandas().set_index("impression_id")
    assert len(scored) == rows.count() == len(want) > 0
    assert (scored["event_date"] == day20).all()
    assert np.isfinite(scored[["logit", "pctr"]].to_numpy()).all()
    got = scored.set_index("impression_id").loc[want.index]
    np.testing.assert_allclose(got["logit"].to_numpy(), want["logit"].to_numpy(), rtol=1e-6, atol=1e-6)
