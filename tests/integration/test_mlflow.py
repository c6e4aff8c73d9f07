"""MLflow on the real components: a SQLite tracking store and registry, the CAMoE pyfunc loaded
back, ``mlflow.pyfunc.spark_udf`` against the project's own batch scoring. The model is the
evaluation suite's trained and calibrated camoe (tests/conftest.py ``experiment``); the jobs'
wiring (train -> calibrate_evaluate -> alias) runs in tests/integration/test_dag.py."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from calibration.evaluate import downsampling_shift, latest_temperatures
from core import lineage, tables
from serving.scoring import score_run
from training import tracking
from training.artifact import read_artifact

TRAIN_RUN = "exp1-train-camoe-seed17"


@pytest.fixture(scope="module")
def tracked(spark, experiment, tmp_path_factory):
    """The camoe run logged and its evaluation registered in a fresh embedded store."""
    import mlflow

    cfg, _ = experiment
    cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage,
                                                               artifacts_dir=tmp_path_factory.mktemp("artifacts")))
    train = lineage.find_train_run(spark, cfg, TRAIN_RUN)
    description = read_artifact(train["artifact"])
    mlflow_run = tracking.log_training(cfg, TRAIN_RUN, train["artifact"], description)
    evaluation_run, temperatures = latest_temperatures(spark, cfg, TRAIN_RUN)
    rows = [r.asDict() for r in spark.table(cfg.table(tables.SLOT_METRICS))
            .where(F.col("run_id") == evaluation_run).collect()]
    logged_to, registered = tracking.log_evaluation(
        cfg, evaluation_run, TRAIN_RUN, mlflow_run, train["artifact"], description,
        downsampling_shift(spark, cfg, description), temperatures, rows, plots=[])
    yield cfg, description, mlflow_run, logged_to, registered, evaluation_run, temperatures
    mlflow.set_tracking_uri(None)


def tracked_rows(cfg, evaluation_run):
    from pyspark.sql import SparkSession

    return [r.asDict() for r in SparkSession.getActiveSession().table(cfg.table(tables.SLOT_METRICS))
            .where(F.col("run_id") == evaluation_run).where("calibrated").collect()]


def test_a_training_run_is_logged_with_its_settings_epochs_delta_input_and_model(tracked):
    from mlflow import MlflowClient

    cfg, description, mlflow_run, *_ = tracked
    client = MlflowClient(tracking.tracking_uri(cfg))
    assert tracking.tracking_uri(cfg) == f"sqlite:///{cfg.storage.artifacts_dir.resolve()}/mlflow/mlflow.db"
    run = client.get_run(mlflow_run)
    assert run.info.run_name == TRAIN_RUN and run.data.tags[tracking.RUN_ID_TAG] == TRAIN_RUN
    assert run.data.tags["camoe.code_version"] == lineage.code_version()
    params = run.data.params
    assert params["model.name"] == "camoe" and params["model.alm"] == "True"
    assert params["training.batch_size"] == "256"
    assert params["features_version"] == str(description.features_version)
    history = description.result.history
    assert [m.step for m in client.get_metric_history(mlflow_run, "log_loss")] == list(range(len(history)))
    assert [m.value for m in client.get_metric_history(mlflow_run, "auc_pr")] == \
        pytest.approx([h["auc_pr"] for h in history])
    # the training set (its id, window, rates) instead of a feature build
    assert params["training_set.id"] == description.training_set_id
    assert params["training_set.window.train_start"] == str(description.window.train_start)
    assert params["training_set.training_sets_version"] == str(description.training_sets_version)
    assert params["training_set.rates"] == ", ".join(f"{s}|{lab}={r:g}" for (s, lab), r in description.spec.rates)
    inputs = {json.loads(d.dataset.source)["delta_table_name"]: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"spark_catalog." + description.features_table, "spark_catalog." + cfg.table("training_sets")}
    for table, version, context in ((description.features_table, description.features_version, "validation"),
                                    (cfg.table("training_sets"), description.training_sets_version, "training")):
        dataset = inputs["spark_catalog." + table]
        assert dataset.dataset.source_type == "delta_table"
        assert json.loads(dataset.dataset.source)["delta_table_version"] == version
        assert {t.value for t in dataset.tags} == {context}
    # the artifacts folder holds the uncalibrated pyfunc of the run: weights and model.json,
    # not the training folder's epoch checkpoints
    stored = {p.name for p in (cfg.storage.artifacts_dir / "mlflow" / "artifacts").rglob("*") if p.is_file()}
    assert {"model.pt", "model.json"} <= stored and not any(n.startswith("checkpoint-") for n in stored), stored
    from pyspark.sql import SparkSession
    trained_in = Path(lineage.find_train_run(SparkSession.getActiveSession(), cfg, TRAIN_RUN)["artifact"])
    assert any(p.name.startswith("checkpoint-") for p in trained_in.iterdir())
    logged = {m.name for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])}
    assert logged == {tracking.TRAINED_MODEL, tracking.CALIBRATED_MODEL}


def test_the_evaluation_lands_in_the_same_run_and_the_alias_names_its_calibrated_model(tracked):
    from mlflow import MlflowClient

    cfg, description, mlflow_run, logged_to, registered, evaluation_run, temperatures = tracked
    assert logged_to == mlflow_run
    client = MlflowClient(tracking.tracking_uri(cfg))
    run = client.get_run(mlflow_run)
    for task, t in temperatures.items():
        assert run.data.metrics[f"temperature.{task}"] == pytest.approx(t)
    # the evaluation's own numbers: its calibrated rows of slot_metrics, overall and per slot (a
    # range check passed the uncalibrated row's AUC-PR, a slot's, or the validation AUC-PR of training)
    rows = tracked_rows(cfg, evaluation_run)
    (overall,) = [r for r in rows if r["level"] == "all"]
    assert run.data.metrics["test_auc_pr"] == pytest.approx(overall["auc_pr"], rel=1e-12)
    assert run.data.metrics["test_log_loss"] == pytest.approx(overall["log_loss"], rel=1e-12)
    # every slot with clicks in the test window (AUC-PR is undefined without)
    with_clicks = {r["slot"]: r["auc_pr"] for r in rows if r["level"] == "slot" and r["positives"]}
    assert with_clicks and {f"test_auc_pr.{slot}" for slot in with_clicks} <= set(run.data.metrics)
    for slot, auc_pr in with_clicks.items():
        assert run.data.metrics[f"test_auc_pr.{slot}"] == pytest.approx(auc_pr, rel=1e-12), slot
    assert run.data.tags["camoe.evaluation_run_id"] == evaluation_run
    assert registered.uri == "models:/camoe@champion"
    version = client.get_model_version_by_alias("camoe", "champion")
    assert (str(version.version), version.run_id) == (registered.version, mlflow_run)
    assert version.tags[tracking.RUN_ID_TAG] == TRAIN_RUN


def test_scoring_by_model_uri_and_spark_udf_give_the_projects_own_pctr(spark, tracked):
    import mlflow

    cfg, description, *_ = tracked
    own = score_run(spark, cfg, "mlflow-own", train_run_id=TRAIN_RUN)
    by_uri = score_run(spark, cfg, "mlflow-uri", model_uri="models:/camoe@champion")
    assert by_uri.model_run_id == TRAIN_RUN and by_uri.temperatures == pytest.approx(own.temperatures)
    predictions = spark.table(cfg.table(tables.PREDICTIONS))
    own_rows = predictions.where(F.col("run_id") == "mlflow-own").select("impression_id", "pctr")
    uri_rows = predictions.where(F.col("run_id") == "mlflow-uri").select("impression_id", F.col("pctr").alias("uri"))
    joined = own_rows.join(uri_rows, "impression_id").toPandas()
    assert len(joined) == own.rows == by_uri.rows > 1000
    assert np.array_equal(joined["pctr"], joined["uri"])            # the same scorer, the same numbers

    # MLflow's own batch path: the pyfunc as a Spark UDF over the same test rows
    udf = mlflow.pyfunc.spark_udf(spark, "models:/camoe@champion", env_manager="local", result_type="double")
    columns = description.input_columns
    features = (tables.read_table(spark, description.features_table, description.features_version)
                .where(F.col("event_date").between(*description.window.bounds("test")))
                .select("impression_id", *columns))
    via_udf = features.select("impression_id", udf(*[F.col(c) for c in columns]).alias("udf"))
    compared = own_rows.join(via_udf, "impression_id").toPandas()
    assert len(compared) == own.rows
    np.testing.assert_allclose(compared["udf"], compared["pctr"], rtol=1e-6, atol=1e-9)

    # and loaded in pandas: a slot_id the model does not know is refused by row
    model = mlflow.pyfunc.load_model("models:/camoe@champion")
    sample = features.limit(50).toPandas()
    np.testing.assert_allclose(model.predict(sample[columns])["pctr"],
                               compared.set_index("impression_id").loc[sample["impression_id"], "pctr"],
                               rtol=1e-6, atol=1e-9)
    sample.loc[3, "slot_id"] = 99
    with pytest.raises(ValueError, match="row 3: slot_id 99"):
        model.predict(sample[columns])


def test_a_missing_model_uri_is_named_with_the_store(spark, tracked):
    cfg = tracked[0]
    with pytest.raises(LookupError, match="models:/camoe@nobody not found in the MLflow store sqlite:///"):
        score_run(spark, cfg, "mlflow-missing", model_uri="models:/camoe@nobody")




