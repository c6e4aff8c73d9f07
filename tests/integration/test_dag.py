"""The Airflow DAG dags/camoe_daily.py, parsed and run by Airflow from its own environment: every
job in its own spark-submit, as users schedule them, then the tables read by the spark-sql CLI (a
JVM of its own that sees them through the metastore) and the MLflow store the jobs logged to.
(jobs/pipeline.py, every step in one spark-submit driver: tests/test_kill.py.)

Airflow is not importable from the project's .venv (its Spark provider's pyspark-client would
overwrite pyspark there), so every check runs .venv-airflow's python or CLI in a subprocess;
`make test` builds that environment first (`make airflow-env`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.submit import python_env, spark_submit_flags

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
CHAIN = ["generate_logs", "build_features", "validate", "train", "calibrate_evaluate", "score"]
DAY = "2026-01-05"                      # the run's window: 2026-01-01 .. 2026-01-05 (5 days)
RUN = "camoe_daily-20260105"            # run ids are camoe_daily-<YYYYMMDD>-<job>
PARAMS = {"window_days": 5, "backend": "local", "num_proc": 1}


def _airflow_env(home: Path, settings: list[str] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "AIRFLOW_VAR_CAMOE_PROJECT_DIR": str(ROOT), "AIRFLOW_VAR_CAMOE_SETTINGS": json.dumps(list(settings)),
        "CAMOE_RETRY_DELAY_SECONDS": "2",       # the retry tests wait this, not 5 minutes, per retry
    })
    return env


def _run(cmd: list, env: dict[str, str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    assert (AIRFLOW_BIN / "airflow").exists(), "no .venv-airflow: run `make airflow-env` (make test does)"
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _last_json(stdout: str):
    return json.loads([line for line in stdout.splitlines() if line.startswith(("{", "["))][-1])


PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("camoe_daily")
tasks = {} if dag is None else {t.task_id: {
    "upstream": sorted(t.upstream_task_ids), "downstream": sorted(t.downstream_task_ids),
    "retries": t.retries, "trigger_rule": str(t.trigger_rule.value),
    "bases": [c.__name__ for c in type(t).__mro__], "args": t.application_args, "conn_id": t._conn_id}
    for t in dag.tasks}
upkeep = bag.dags.get("camoe_maintenance")
print(json.dumps({"errors": {str(k): v for k, v in bag.import_errors.items()}, "tasks": tasks,
                  "schedule": None if dag is None else str(dag.schedule),
                  "maintenance": None if upkeep is None else {
                      "schedule": str(upkeep.schedule),
                      "tasks": {t.task_id: t.application_args for t in upkeep.tasks}}}))
"""


def test_dag_parses_into_the_spark_submit_jobs_in_order(tmp_path):
    done = _run([AIRFLOW_BIN / "python", "-c", PARSE, ROOT / "dags"], _airflow_env(tmp_path), tmp_path, 300)
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = _last_json(done.stdout)
    assert parsed["errors"] == {}
    tasks = parsed["tasks"]
    assert sorted(tasks) == sorted(CHAIN + ["ingest"])
    assert parsed["schedule"] == "@daily"
    for before, after in zip(CHAIN[1:], CHAIN[2:]):
        assert tasks[after]["upstream"] == [before] and tasks[before]["downstream"] == [after]
    # the raw log comes from generate_logs or ingest, whichever raw_source names
    assert tasks["build_features"]["upstream"] == ["generate_logs", "ingest"]
    for raw in ("generate_logs", "ingest"):
        assert tasks[raw]["upstream"] == [] and tasks[raw]["downstream"] == ["build_features"]
    assert tasks["ingest"]["args"][:8] == ["--source", "{{ params.source }}", "--format", "{{ params.source_format }}",
                                          "--start-date", "{{ macros.ds_add(ds, 1 - params.window_days) }}",
                                          "--end-date", "{{ ds }}"]
    assert tasks["score"]["downstream"] == []
    # the weekly Delta upkeep: one maintain task, run id like the daily jobs'
    assert parsed["maintenance"] == {"schedule": "@weekly", "tasks": {
        "maintain": ["--run-id", "{{ dag.dag_id }}-{{ ds_nodash }}-maintain"]}}
    for task_id, task in tasks.items():
        assert "SparkSubmitOperator" in task["bases"] and task["conn_id"] == "spark_default"
        assert task["retries"] == 2
        assert task["args"][-2:] == ["--run-id", "{{ dag.dag_id }}-{{ ds_nodash }}-" + task_id]
        # a failed upstream stops every task; build_features also runs after a skipped generate (ingest)
        assert task["trigger_rule"] == ("none_failed" if task_id == "build_features" else "all_success")
    for task_id in ("build_features", "validate"):
        assert tasks[task_id]["args"][:4] == [
            "--start-date", "{{ macros.ds_add(ds, 1 - params.window_days) }}", "--end-date", "{{ ds }}"]
    train_run_id = tasks["train"]["args"][-1]
    for task_id in ("calibrate_evaluate", "score"):
        args = tasks[task_id]["args"]
        assert args[args.index("--train-run-id") + 1] == train_run_id


# ---------------------------------------------------------------------------- real runs
STATES = """
import json
from sqlalchemy import select
from airflow.models import DagRun, TaskInstance
from airflow.utils.session import create_session
with create_session() as s:
    run = s.scalars(select(DagRun).where(DagRun.dag_id == "camoe_daily").order_by(DagRun.id.desc())).first()
    tis = s.scalars(select(TaskInstance).where(TaskInstance.dag_id == run.dag_id,
                                                 TaskInstance.run_id == run.run_id)).all()
    value = lambda state: str(getattr(state, "value", state))
    print(json.dumps({"state": value(run.state), "logical_date": run.logical_date.date().isoformat(),
                      "tasks": {t.task_id: [value(t.state), t.try_number] for t in tis}}))
"""


@pytest.fixture(scope="module")
def dag_lake(tmp_path_factory):
    """An Airflow home (sqlite, migrated) and the settings pointing every job at a temp lake."""
    base = tmp_path_factory.mktemp("dag")
    settings = [f"storage.warehouse_dir={base}/warehouse", f"storage.metastore_dir={base}/metastore",
                f"storage.artifacts_dir={base}/artifacts", "spark.shuffle_partitions=4",
                "generator.rows_per_day=3000", "training.epochs=1", "training.batch_size=512"]
    env = _airflow_env(base / "airflow", settings)
    migrated = _run([AIRFLOW_BIN / "airflow", "db", "migrate"], env, base, 300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return base, env, settings


def _dags_test(dag_lake, conf: dict, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    base, env, _ = dag_lake
    done = _run([AIRFLOW_BIN / "airflow", "dags", "test", "camoe_daily", DAY, "-c", json.dumps(conf), *extra],
                env, base, 2400)
    states = _run([AIRFLOW_BIN / "python", "-c", STATES], env, base, 120)
    assert states.returncode == 0, states.stderr[-3000:]
    return done, _last_json(states.stdout)


@pytest.fixture(scope="module")
def daily_run(dag_lake):
    """One real `airflow dags test` of the whole chain, then the tables it wrote, read by spark-sql."""
    base, _, settings = dag_lake
    done, states = _dags_test(dag_lake, PARAMS)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    flags = spark_submit_flags([f"--set={s}" for s in settings], local_jars=False)
    query = " UNION ALL ".join([
        "SELECT 'features' k, CAST(COUNT(*) AS STRING) v FROM camoe.features",
        f"SELECT 'dq_results', CAST(COUNT(*) AS STRING) FROM camoe.dq_results WHERE run_id = '{RUN}-validate'",
        f"SELECT 'dq_failed', CAST(COUNT(*) AS STRING) FROM camoe.dq_results "
        f"WHERE run_id = '{RUN}-validate' AND NOT success",
        f"SELECT 'temperatures', CAST(COUNT(*) AS STRING) FROM camoe.temperatures WHERE model_run_id = '{RUN}-train'",
        f"SELECT 'slot_metrics', CAST(COUNT(*) AS STRING) FROM camoe.slot_metrics "
        f"WHERE run_id = '{RUN}-calibrate_evaluate'",
        f"SELECT 'predictions', CAST(COUNT(*) AS STRING) FROM camoe.predictions WHERE run_id = '{RUN}-score' "
        "AND pctr > 0 AND pctr < 1",
        f"SELECT 'test_rows', CAST(COUNT(*) AS STRING) FROM camoe.features WHERE event_date = '{DAY}'",
        "SELECT 'last_day', CAST(MAX(event_date) AS STRING) FROM camoe.features",
        "SELECT concat('outputs ', job), outputs FROM camoe.runs WHERE job = 'build_features'",
        "SELECT concat('metrics ', job), metrics FROM camoe.runs WHERE job = 'build_features'",
        "SELECT concat('run ', run_id), concat(job, ' ', status) FROM camoe.runs",
        # generate_logs wrote features.history_days of burn-in before the window; the build read them
        "SELECT 'burn_in', concat(MIN(event_date), ' ', COUNT(DISTINCT event_date)) FROM camoe.impressions",
        "SELECT concat('history ', event_date), CAST(AVG(dense_hist_ad_impressions_7d) AS STRING) "
        "FROM camoe.features GROUP BY event_date",
        "SELECT concat('inputs ', job), inputs FROM camoe.runs WHERE job = 'train'",
        "SELECT concat('metrics ', job), metrics FROM camoe.runs WHERE job = 'train'",
        "SELECT concat('mlflow ', job), coalesce(mlflow_run_id, 'NULL') FROM camoe.runs "
        "WHERE job IN ('train', 'calibrate_evaluate', 'score')"])
    sql = subprocess.run([str(Path(sys.executable).parent / "spark-sql"), *flags, "-e", query], cwd=base,
                         env=python_env(), capture_output=True, text=True, timeout=600)
    assert sql.returncode == 0, sql.stderr[-3000:]
    tables = dict(line.split("\t", 1) for line in sql.stdout.strip().splitlines())
    return done, states, tables


@pytest.mark.slow
def test_dag_run_succeeds_task_by_task_in_order(daily_run):
    done, states, _ = daily_run
    assert states["state"] == "success" and states["logical_date"] == DAY
    skipped = states["tasks"].pop("ingest")[0]      # raw_source=generate: the ingest task is skipped
    assert skipped == "skipped" and states["tasks"] == {task: ["success", 1] for task in CHAIN}
    log = done.stdout + done.stderr
    started = [log.index(f"[DAG TEST] starting task_id={task}") for task in CHAIN]
    assert started == sorted(started)
    # every task ran the project's spark-submit, never one from Airflow's environment
    assert log.count(f"Spark-Submit cmd: {ROOT}/.venv/bin/spark-submit --master local[2]") == len(CHAIN)


@pytest.mark.slow
def test_dag_run_writes_every_table_with_its_run_ids(daily_run):
    _, _, tables = daily_run
    assert int(tables["features"]) == json.loads(tables["metrics build_features"])["feature_rows"] > 0
    assert int(tables["dq_results"]) > 0 and tables["dq_failed"] == "0"
    assert {k: v for k, v in tables.items() if k.startswith("run ")} == {
        f"run {RUN}-{job}": f"{job} succeeded" for job in CHAIN}
    assert int(tables["temperatures"]) == 2         # one per task of camoe's grouping: audio, video
    # 7 slots + 2 tasks + all, before and after temperature
    assert int(tables["slot_metrics"]) == 20
    # every row of the window's last day, the model's test day, scored with a pCTR in (0, 1)
    assert tables["last_day"] == DAY and int(tables["predictions"]) == int(tables["test_rows"]) > 0


@pytest.mark.slow
def test_dag_run_reads_its_burn_in_and_records_lineage_spark_sql_and_mlflow_agree_on(daily_run, dag_lake):
    from mlflow import MlflowClient

    _, _, tables = daily_run
    # features.history_days (7) of burn-in before the 5-day window, and the first day's history is
    # as full as the last day's
    assert tables["burn_in"] == "2025-12-25 12"
    per_day = [float(v) for k, v in sorted(tables.items()) if k.startswith("history ")]
    assert len(per_day) == 5 and abs(per_day[0] - per_day[-1]) < 0.3, per_day
    # train read the version build_features wrote
    assert json.loads(tables["inputs train"])["features"] == json.loads(tables["outputs build_features"])["features"]
    assert json.loads(tables["metrics train"])["examples_per_second_total"] > 0

    # MLflow: train and calibrate_evaluate logged to one run, whose calibrated model the alias names
    train_run, evaluate_run = tables["mlflow train"], tables["mlflow calibrate_evaluate"]
    assert train_run == evaluate_run and len(train_run) == 32 and tables["mlflow score"] == "NULL"
    base, _, _ = dag_lake
    client = MlflowClient(f"sqlite:///{base}/artifacts/mlflow/mlflow.db")
    assert client.get_model_version_by_alias("camoe", "champion").run_id == train_run
    run = client.get_run(train_run)
    assert run.data.params["model.name"] == "camoe" and "test_auc_pr.stream_audio" in run.data.metrics
    assert run.data.tags["camoe.run_id"] == f"{RUN}-train"
    assert [m.step for m in client.get_metric_history(train_run, "log_loss")] == [0]     # epochs=1


@pytest.mark.slow
def test_failed_quality_gate_fails_validate_once_and_stops_downstream(daily_run, dag_lake):
    # same day on the lake the first run filled: generate_logs and build_features are marked
    # done, validate runs with a positive-rate bound no slot can meet and exits 3
    done, states = _dags_test(dag_lake, {**PARAMS, "set": ["quality.positive_rate_bounds.max=0.0001"]},
                              "--mark-success-pattern", "^(generate_logs|build_features)$")
    assert done.returncode != 0
    assert states["state"] == "failed"
    tasks = states["tasks"]
    assert tasks["validate"] == ["failed", 1]        # exit 3 is not retried (retries=2 otherwise)
    assert {t: tasks[t][0] for t in ("train", "calibrate_evaluate", "score")} == {
        "train": "upstream_failed", "calibrate_evaluate": "upstream_failed", "score": "upstream_failed"}
    assert "QUALITY GATE FAILED" in done.stdout + done.stderr
    assert "validate exited 3 (quality gate failed); not retried" in done.stdout + done.stderr


UPSTREAM_OF_TRAIN = "^(generate_logs|build_features|validate)$"


@pytest.mark.slow
def test_a_bad_flag_fails_its_task_once(daily_run, dag_lake):
    """Exit 2 is not retried. Catches a DAG that retries every non-zero exit, and a train that
    checks --model only once Spark runs (a KeyError there: exit 1, retried twice)."""
    done, states = _dags_test(dag_lake, {**PARAMS, "model": "camoe2"}, "--mark-success-pattern", UPSTREAM_OF_TRAIN)
    log = done.stdout + done.stderr
    tasks = states["tasks"]
    assert states["state"] == "failed" and tasks["train"] == ["failed", 1], log[-3000:]
    assert tasks["calibrate_evaluate"][0] == tasks["score"][0] == "upstream_failed"
    assert "train: usage error: --model 'camoe2' is not a model of conf/models.yaml" in log
    assert "train exited 2 (bad flags or configuration); not retried" in log


@pytest.mark.slow
def test_a_failed_job_is_retried_twice_on_the_ingest_branch(daily_run, dag_lake):
    """Exit 1 (here: the team's export has not landed, so the source path does not exist yet)
    is retried: 3 tries, CAMOE_RETRY_DELAY_SECONDS apart. Catches a DAG that fails every non-zero
    exit at once, and raw_source=ingest running generate_logs instead of ingest."""
    base, _, _ = dag_lake
    missing = base / "no_such_export"
    done, states = _dags_test(dag_lake, {**PARAMS, "raw_source": "ingest", "source": str(missing)})
    log = done.stdout + done.stderr
    tasks = states["tasks"]
    assert tasks["generate_logs"][0] == "skipped"
    assert tasks["ingest"] == ["failed", 3], log[-3000:]                 # tried three times
    assert f"ingest: FAILED (SourceError): raw source {missing} does not exist" in log
    assert {tasks[t][0] for t in ("build_features", "validate", "train")} == {"upstream_failed"}


@pytest.mark.slow
def test_ingest_without_a_source_fails_at_once(daily_run, dag_lake):
    """raw_source=ingest with no params.source fails before any spark-submit, once."""
    done, states = _dags_test(dag_lake, {**PARAMS, "raw_source": "ingest"})
    log = done.stdout + done.stderr
    tasks = states["tasks"]
    assert tasks["ingest"] == ["failed", 1] and tasks["generate_logs"][0] == "skipped", log[-3000:]
    assert tasks["build_features"][0] == "upstream_failed"
    assert "raw_source=ingest needs params.source" in log
    assert "Spark-Submit cmd" not in log


@pytest.mark.slow
def test_an_external_raw_source_skips_both_log_jobs_and_still_builds(daily_run, dag_lake):
    """raw_source=external: another system filled camoe.impressions. Both raw-log tasks skip and
    build_features is still scheduled (its trigger rule none_failed; with all_success the skips
    would propagate and the day would build nothing)."""
    done, states = _dags_test(dag_lake, {**PARAMS, "raw_source": "external"},
                              "--mark-success-pattern", f"^({'|'.join(CHAIN[1:])})$")
    log = done.stdout + done.stderr
    tasks = states["tasks"]
    assert states["state"] == "success", log[-3000:]
    assert tasks["generate_logs"][0] == tasks["ingest"][0] == "skipped"
    assert {task: tasks[task][0] for task in CHAIN[1:]} == {task: "success" for task in CHAIN[1:]}
    assert "Spark-Submit cmd" not in log
