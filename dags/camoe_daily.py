"""camoe_daily: the CAMoE pipeline once a day, one spark-submit per job.

    generate_logs | ingest -> build_features -> validate -> train -> calibrate_evaluate -> score

Every task is a SparkSubmitOperator running ``jobs/<job>.py`` of the project checkout with the
PROJECT's ``.venv/bin/spark-submit`` and ``.venv/bin/python`` (PYSPARK_PYTHON and
PYSPARK_DRIVER_PYTHON). Airflow itself lives in another environment (``.venv-airflow``):
its Spark provider installs ``pyspark-client``, whose files overwrite pyspark's, so the two
never share an interpreter (see README, "Airflow"). The ``--packages``/``--conf`` flags come
from ``python -m core.session`` of the project (the one place that defines them), run with
the same ``--set`` overrides the job gets. The master is the ``spark_default`` connection's host.

Where things come from:
  Variable ``camoe_project_dir``  the checkout holding conf/, jobs/ and .venv/ on the worker
                                  (default: the folder above this file's dags/)
  Variable ``camoe_settings``     JSON list of ``KEY=VALUE`` config overrides for every job,
                                  e.g. ["storage.warehouse_dir=/shared/warehouse"]
  params (trigger conf)           raw_source, source, source_format, window_days, set (more
                                  overrides), model, grouping, backend, num_proc

Raw logs: raw_source=generate runs generate_logs (synthetic); raw_source=ingest runs
jobs/ingest.py on params.source (a path, glob or Delta table of the team's log, in
params.source_format) for the window; raw_source=external skips both (another system fills
camoe.impressions). The task not chosen is skipped; build_features runs after either.

Dates: the run for logical date D writes raw logs for [D - window_days + 1, D] and builds the days
of it the feature store lacks, and day D (``build_features --missing-days``): the first run
catches up on its window, every later run (or each day of an ``airflow dags backfill``) builds
its own day once. Training uses the window of conf/data.yaml ``splits`` ending on D: D is the
test day, the day before validation, the ``train_days`` before those training.
Run ids are ``camoe_daily-<YYYYMMDD>-<job>``: a retry or re-run of a day replaces that day's rows
(``runs`` and ``dq_results`` are keyed by run id, tables by date) and training resumes from its
last checkpoint; calibrate_evaluate and score get the day's training run id.

Retries: each task retries twice, ``CAMOE_RETRY_DELAY_SECONDS`` (environment of the process
that parses this file; default 300) apart (a lost executor, a busy metastore), except on exit code 2
(bad flags or config) and 3 (quality gate failed), which fail the task at once: retrying cannot
change a deterministic verdict. A failed task stops everything downstream (trigger rule
all_success), so a failed validate means no training, evaluation or scoring that day.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param, TriggerRule, Variable, chain
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

DAG_ID = "camoe_daily"
DEFAULT_PROJECT_DIR = str(Path(__file__).resolve().parent.parent)
# jobs/_cli.py exit codes that retrying cannot fix
NOT_RETRIED = {2: "bad flags or configuration", 3: "quality gate failed"}

RETRIES = {"retries": 2,
           "retry_delay": dt.timedelta(seconds=int(os.environ.get("CAMOE_RETRY_DELAY_SECONDS", "300")))}

WINDOW_START = "{{ macros.ds_add(ds, 1 - params.window_days) }}"
WINDOW_END = "{{ ds }}"


def run_id(job: str) -> str:
    """The run id a task records in camoe.runs (templated: one per day and job)."""
    return "{{ dag.dag_id }}-{{ ds_nodash }}-" + job


def session_flags(python: str, project: str, settings: list[str]) -> tuple[str | None, dict[str, str]]:
    """``--packages`` and ``--conf`` of ``python -m core.session`` for these overrides."""
    done = subprocess.run([python, "-m", "core.session", *(f"--set={s}" for s in settings)],
                          cwd=project, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AirflowFailException(f"core.session failed (exit {done.returncode}): {done.stderr.strip()}")
    args = shlex.split(done.stdout)
    packages, conf = None, {}
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "--packages":
            packages = value
        elif flag == "--conf":
            key, _, val = value.partition("=")
            conf[key] = val
        else:
            raise AirflowFailException(f"unexpected flag {flag!r} from core.session")
    return packages, conf


class CamoeJobOperator(SparkSubmitOperator):
    """``spark-submit jobs/<job>.py`` with the project's environment, flags and overrides."""

    ui_color = "#e8f1fa"

    def __init__(self, *, job: str, job_args: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(task_id=job, name=f"camoe-{job}",
                         application_args=[*(job_args or []), "--run-id", run_id(job)], **kwargs)
        self.job = job

    def execute(self, context) -> None:
        project = str(Variable.get("camoe_project_dir", default=DEFAULT_PROJECT_DIR))
        python = f"{project}/.venv/bin/python"
        settings = [*Variable.get("camoe_settings", default=[], deserialize_json=True),
                    *context["params"]["set"]]
        self.packages, self.conf = session_flags(python, project, settings)
        self._spark_binary = f"{project}/.venv/bin/spark-submit"   # never the Airflow env's
        self.application = f"{project}/jobs/{self.job}.py"
        self.application_args = [*(f"--set={s}" for s in settings), *self.application_args]
        self.env_vars = {**(self.env_vars or {}), "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
        self._hook = None
        try:
            super().execute(context)
        except Exception as exc:
            process = getattr(self._hook, "_submit_sp", None)
            code = getattr(process, "returncode", None)
            if code in NOT_RETRIED:
                raise AirflowFailException(
                    f"{self.job} exited {code} ({NOT_RETRIED[code]}); not retried") from exc
            raise


class RawLogOperator(CamoeJobOperator):
    """The job that fills camoe.impressions for the window when params.raw_source names it
    (generate: generate_logs, ingest: ingest); skipped otherwise."""

    def __init__(self, *, raw_source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.raw_source = raw_source

    def execute(self, context) -> None:
        chosen = context["params"]["raw_source"]
        if chosen != self.raw_source:
            raise AirflowSkipException(f"raw_source={chosen}: camoe.impressions is not written by {self.job}")
        if chosen == "ingest" and not context["params"]["source"]:
            raise AirflowFailException("raw_source=ingest needs params.source (the raw log's path, glob or table)")
        super().execute(context)


with DAG(
    dag_id=DAG_ID,
    description="CAMoE: logs -> features -> quality gate -> train -> calibrate/evaluate -> score",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,          # one embedded metastore / one warehouse writer at a time
    default_args=RETRIES,          # conn_id: spark_default
    params={
        "raw_source": Param("generate", enum=["generate", "ingest", "external"],
                            description="generate: synthetic logs for the window; ingest: jobs/ingest.py "
                                        "reads params.source; external: another system fills camoe.impressions"),
        "source": Param("", type="string",
                        description="raw_source=ingest: the raw log's path, glob or Delta table name"),
        "source_format": Param("parquet", enum=["parquet", "csv", "json", "delta"]),
        "window_days": Param(10, type="integer", minimum=3,
                             description="days of logs per run, ending on the logical date"),
        "set": Param([], type="array", items={"type": "string"},
                     description="extra KEY=VALUE config overrides for every job of this run"),
        # empty: the conf's default_model and that model's grouping (a team's conf names its own)
        "model": Param("", type="string", description="a model of conf/models.yaml; empty: default_model"),
        "grouping": Param("", type="string", description="a grouping of conf/slots.yaml; empty: the model's"),
        "backend": Param("horovod", enum=["horovod", "torch_distributor", "local"]),
        "num_proc": Param(2, type="integer", minimum=1),
    },
    tags=["camoe"],
) as dag:
    window = ["--start-date", WINDOW_START, "--end-date", WINDOW_END]
    generate_logs = RawLogOperator(
        raw_source="generate", job="generate_logs",
        job_args=["--start-date", WINDOW_START, "--days", "{{ params.window_days }}"])
    ingest = RawLogOperator(raw_source="ingest", job="ingest", job_args=[
        "--source", "{{ params.source }}", "--format", "{{ params.source_format }}", *window])
    # none_failed: runs after the raw-log task that ran succeeded (the other is skipped), or after
    # both were skipped (external), never after one failed
    # the daily store: the days of the window it lacks (the first run's catch-up) and day D,
    # each built once however many days the store holds
    build_features = CamoeJobOperator(job="build_features", job_args=[*window, "--missing-days"],
                                      trigger_rule=TriggerRule.NONE_FAILED)
    validate = CamoeJobOperator(job="validate", job_args=window)   # exit 3 -> failed, no retry
    # the training window (conf/data.yaml splits) ends on day D: its last day is the test day
    train = CamoeJobOperator(job="train", job_args=[
        "--end-date", WINDOW_END,
        "--model", "{{ params.model }}", "--grouping", "{{ params.grouping }}",
        "--backend", "{{ params.backend }}", "--num-proc", "{{ params.num_proc }}"])
    calibrate_evaluate = CamoeJobOperator(job="calibrate_evaluate", job_args=["--train-run-id", run_id("train")])
    score = CamoeJobOperator(job="score", job_args=["--train-run-id", run_id("train"),
                                                    "--start-date", WINDOW_END, "--end-date", WINDOW_END])
    chain([generate_logs, ingest], build_features, validate, train, calibrate_evaluate, score)


# Weekly Delta upkeep (jobs/maintain.py): OPTIMIZE, VACUUM keeping storage.retain_days and every
# version a still-existing model was trained on, constraints. With the embedded metastore it must
# not overlap a daily run (one driver at a time); schedule it where the daily DAG is idle.
with DAG(
    dag_id="camoe_maintenance",
    description="CAMoE: Delta OPTIMIZE / VACUUM / constraints on every platform table",
    schedule="@weekly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=RETRIES,
    params={"set": Param([], type="array", items={"type": "string"},
                         description="extra KEY=VALUE config overrides, e.g. storage.retain_days=60")},
    tags=["camoe"],
) as maintenance:
    CamoeJobOperator(job="maintain")
