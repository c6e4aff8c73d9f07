"""Run lineage: the ``runs`` table, one row per job run, naming the exact Delta versions it read
and wrote, its settings, metrics, code version and MLflow run; and the lookups that follow it
back (which training run, which features snapshot)."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.config import PROJECT_ROOT, Config
from core.tables import RUNS, TableNotFound, note_minted_run_id, replace_run_rows, table_exists


def new_run_id(job: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return note_minted_run_id(f"{job}-{now}-{uuid.uuid4().hex[:6]}")


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if sha:
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version
    try:
        return "camoe-" + version("camoe")
    except PackageNotFoundError:
        return "unknown"


RUNS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("finished_at", T.TimestampType(), False),
    T.StructField("status", T.StringType(), False),
    T.StructField("code_version", T.StringType(), False),
    T.StructField("config", T.StringType(), False),
    T.StructField("params", T.StringType(), False),
    T.StructField("inputs", T.StringType(), False),
    T.StructField("outputs", T.StringType(), False),
    T.StructField("metrics", T.StringType(), False),
    T.StructField("mlflow_run_id", T.StringType(), True),   # the MLflow run it logged to (train, calibrate_evaluate)
])


@dataclass
class RunRecord:
    """What one job run did; appended to the ``runs`` table when the run ends."""
    run_id: str
    job: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)    # table -> Delta version read
    outputs: dict[str, Any] = field(default_factory=dict)   # table -> Delta version written
    metrics: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def record_run(spark: SparkSession, cfg: Config, run: RunRecord, status: str = "succeeded") -> int:
    finished = dt.datetime.now(dt.UTC)
    row = (run.run_id, run.job, run.started_at.replace(tzinfo=None), finished.replace(tzinfo=None),
           status, code_version(), json.dumps(cfg.raw, default=str, sort_keys=True),
           _json(run.params), _json(run.inputs), _json(run.outputs), _json(run.metrics), run.mlflow_run_id)
    df = spark.createDataFrame([row], RUNS_SCHEMA)
    return replace_run_rows(df, cfg.table(RUNS), run.run_id)


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def find_train_run(spark: SparkSession, cfg: Config, run_id: str | None = None,
                   model: str | None = None) -> dict[str, Any]:
    """A succeeded training run: the given one, else the latest (of ``model`` if named).

    Returns run_id, model, artifact (the model folder), finished_at and mlflow_run_id (None when
    the run was not tracked).
    """
    name = cfg.table(RUNS)
    if not table_exists(spark, name):
        raise TableNotFound(f"{name} does not exist: no job has run against this warehouse")
    query = spark.table(name).where((F.col("job") == "train") & (F.col("status") == "succeeded"))
    if run_id:
        query = query.where(F.col("run_id") == run_id)
    runs = []
    for r in query.orderBy(F.col("finished_at").desc()).collect():
        metrics, outputs = json.loads(r.metrics), json.loads(r.outputs)
        if model and metrics.get("model") != model:
            continue
        runs.append({"run_id": r.run_id, "model": metrics.get("model"), "artifact": outputs.get("model_artifact"),
                     "finished_at": r.finished_at, "mlflow_run_id": r.asDict().get("mlflow_run_id")})
    if not runs:
        what = f"training run {run_id!r}" if run_id else "a training run" + (f" of model {model!r}" if model else "")
        raise LookupError(f"no succeeded {what} in {name}; run jobs/train.py first")
    return runs[0]
