"""The jobs as users run them: spark-submit (jobs/pipeline.py, each job in one driver) and spark-sql
processes against a fresh local warehouse. Each job in its own spark-submit: tests/test_dag.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


MARK = "-- next query --"


def _sql(flags: list[str], cwd: Path, *queries: str) -> list[list[list[str]]]:
    """Each query's rows (tab-split), from one spark-sql process: the CLI that users query the
    tables with, in a JVM of its own that sees them through the metastore."""
    script = f"; SELECT '{MARK}'; ".join(queries)
    done = _run([str(BIN / "spark-sql"), *flags, "-e", script], cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    results, rows = [], []
    for line in done.stdout.splitlines():
        if line == MARK:
            results, rows = results + [rows], []
        elif line.strip():
            rows.append(line.split("\t"))
    return results + [rows]


def _sections(stdout: str) -> dict[str, str]:
    """jobs/pipeline.py's output, split at its ``==> job`` lines."""
    parts: dict[str, str] = {}
    job = None
    for line in stdout.splitlines():
        if line.startswith("==> "):
            job = line[4:].strip()
            parts[job] = ""
        elif job:
            parts[job] += line + "\n"
    return parts


@pytest.mark.slow
def test_pipeline_job_runs_every_step_in_one_driver_and_spark_sql_sees_the_tables(tmp_path):
    overrides = [f"--set=storage.warehouse_dir={tmp_path}/warehouse",
                 f"--set=storage.metastore_dir={tmp_path}/metastore",
                 f"--set=storage.artifacts_dir={tmp_path}/artifacts",
                 "--set=spark.master=local[2]", "--set=spark.shuffle_partitions=4",
                 "--set=generator.days=5", "--set=generator.rows_per_day=3000"]
    flags = _run([sys.executable, "-m", "features.session", *overrides], ROOT).stdout.split()
    assert "--packages" in flags
    submit = [str(BIN / "spark-submit"), *flags]

    # the demo's steps in one spark-submit; training is 2 Horovod processes launched from the job
    # the demo's steps in one spark-submit; score takes the model calibrate_evaluate registered
    done = _run([*submit, str(ROOT / "jobs" / "pipeline.py"), *overrides, "--step-args",
                 "train=--num-proc 2 --backend horovod --epochs 2 --set=training.batch_size=512",
                 "--step-args", "score=--model-uri models:/camoe@champion"], tmp_path, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    out = _sections(done.stdout)
    assert list(out) == ["generate_logs", "build_features", "validate", "summarize", "train",
                         "calibrate_evaluate", "score"]
    table = [line for line in out["summarize"].splitlines() if line.startswith("|")]
    assert table[0].split("|")[1].strip() == "slot"
    assert {line.split("|")[1].strip() for line in table[1:]} == {
        "stream_audio", "podcast", "stream_audio_leavebehind", "podcast_leavebehind",
        "stream_video", "embedded_music", "podcast_video"}
    assert "validation AUC-PR all=" in out["train"] and "audio=" in out["train"]
    assert list((tmp_path / "artifacts" / "models").glob("train-*/model.pt"))
    assert "temperatures audio=" in out["calibrate_evaluate"] and "|slot |stream_audio" in out["calibrate_evaluate"]
    assert list((tmp_path / "artifacts" / "evaluation").glob("*/reliability.png"))
    assert out["score"].startswith("scored ")

    burn_in, history, runs, metrics, predicted, train_run, tracked = _sql(
        flags, tmp_path,
        "SELECT MIN(event_date), COUNT(DISTINCT event_date) FROM camoe.impressions",
        "SELECT event_date, AVG(dense_hist_ad_impressions_7d) FROM camoe.features "
        "GROUP BY event_date ORDER BY event_date",
        "SELECT job, status FROM camoe.runs ORDER BY started_at",
        "SELECT slot, auc_pr, ece_equal_mass FROM camoe.slot_metrics WHERE level = 'slot' AND calibrated "
        "ORDER BY rows DESC",
        "SELECT COUNT(*) FROM camoe.predictions p JOIN camoe.runs r ON p.run_id = r.run_id "
        "WHERE r.job = 'score' AND p.pctr > 0 AND p.pctr < 1",
        "SELECT inputs, metrics FROM camoe.runs WHERE job = 'train'",
        "SELECT job, mlflow_run_id, inputs FROM camoe.runs WHERE job IN ('train', 'calibrate_evaluate', 'score') "
        "ORDER BY started_at")
    # generate_logs wrote features.history_days of burn-in before the first featurised day, and
    # the build read them: the first day's history is as full as the last day's
    assert burn_in == [["2025-12-25", "12"]]
    per_day = [float(row[1]) for row in history]
    assert len(per_day) == 5 and abs(per_day[0] - per_day[-1]) < 0.3, per_day
    # each step recorded its own run, as if spark-submitted alone
    assert runs == [["generate_logs", "succeeded"], ["build_features", "succeeded"],
                    ["validate", "succeeded"], ["summarize", "succeeded"], ["train", "succeeded"],
                    ["calibrate_evaluate", "succeeded"], ["score", "succeeded"]]
    assert metrics[0][0] == "stream_audio"
    assert int(predicted[0][0]) > 0
    inputs, train_metrics = train_run[0]
    assert json.loads(inputs)["features"] >= 0
    assert json.loads(train_metrics)["examples_per_second_total"] > 0

    # MLflow: train and calibrate_evaluate logged to one run, whose calibrated model the alias
    # names; score ran the model the alias named
    from mlflow import MlflowClient
    (_, train_mlflow, _), (_, evaluate_mlflow, _), (_, score_mlflow, score_inputs) = tracked
    assert train_mlflow == evaluate_mlflow and len(train_mlflow) == 32 and score_mlflow == "NULL"
    assert json.loads(score_inputs)["model_uri"] == "models:/camoe@champion"
    client = MlflowClient(f"sqlite:///{tmp_path}/artifacts/mlflow/mlflow.db")
    champion = client.get_model_version_by_alias("camoe", "champion")
    assert champion.run_id == train_mlflow
    run = client.get_run(train_mlflow)
    assert run.data.params["model.name"] == "camoe" and "test_auc_pr.stream_audio" in run.data.metrics
    assert [m.step for m in client.get_metric_history(train_mlflow, "log_loss")] == [0, 1]

    # a bad flag is a readable error and a non-zero exit, before Spark starts
    bad = _run([sys.executable, str(ROOT / "jobs" / "build_features.py"), "--start-date", "yesterday"], tmp_path)
    assert bad.returncode == 2 and "'yesterday' is not a date" in bad.stderr
