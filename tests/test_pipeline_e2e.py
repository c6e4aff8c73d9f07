"""The jobs as users run them: spark-submit processes against a fresh local warehouse."""
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


@pytest.mark.slow
def test_spark_submit_jobs_generate_build_validate_and_summarise(tmp_path):
    overrides = [f"--set=storage.warehouse_dir={tmp_path}/warehouse",
                 f"--set=storage.metastore_dir={tmp_path}/metastore",
                 "--set=spark.master=local[2]", "--set=spark.shuffle_partitions=4",
                 "--set=generator.days=5", "--set=generator.rows_per_day=3000"]
    flags = _run([sys.executable, "-m", "features.session", *overrides], ROOT).stdout.split()
    assert "--packages" in flags
    submit = [str(BIN / "spark-submit"), *flags]

    for job in ("generate_logs", "build_features", "validate"):
        done = _run([*submit, str(ROOT / "jobs" / f"{job}.py"), *overrides], tmp_path)
        assert done.returncode == 0, f"{job} failed:\n{done.stderr[-3000:]}"
    # generate_logs wrote features.history_days of burn-in before the first featurised day, and
    # the build read them: the first day's history is as full as the last day's
    burn_in = _run([str(BIN / "spark-sql"), *flags, "-e",
                    "SELECT MIN(event_date), COUNT(DISTINCT event_date) FROM camoe.impressions"], tmp_path)
    assert burn_in.stdout.split() == ["2025-12-25", "12"], burn_in.stderr[-2000:]
    history = _run([str(BIN / "spark-sql"), *flags, "-e",
                    "SELECT event_date, AVG(dense_hist_ad_impressions_7d) FROM camoe.features "
                    "GROUP BY event_date ORDER BY event_date"], tmp_path)
    per_day = [float(line.split("\t")[1]) for line in history.stdout.strip().splitlines()]
    assert len(per_day) == 5 and abs(per_day[0] - per_day[-1]) < 0.3, per_day
    summary = _run([*submit, str(ROOT / "jobs" / "summarize.py"), *overrides], tmp_path)
    assert summary.returncode == 0, summary.stderr[-3000:]
    table = [line for line in summary.stdout.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1].strip() == "slot"
    assert {line.split("|")[1].strip() for line in table[1:]} == {
        "stream_audio", "podcast", "stream_audio_leavebehind", "podcast_leavebehind",
        "stream_video", "embedded_music", "podcast_video"}

    # the demo's training step: 2 Horovod processes launched from the Spark job
    trained = _run([*submit, str(ROOT / "jobs" / "train.py"), *overrides, "--num-proc", "2",
                    "--backend", "horovod", "--epochs", "2", "--set=training.batch_size=512",
                    f"--set=storage.artifacts_dir={tmp_path}/artifacts"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "validation AUC-PR all=" in trained.stdout and "audio=" in trained.stdout
    assert list((tmp_path / "artifacts" / "models").glob("train-*/model.pt"))

    # temperatures + slot tables, printed from SQL; then batch scoring with the calibrated model
    artifacts = f"--set=storage.artifacts_dir={tmp_path}/artifacts"
    evaluated = _run([*submit, str(ROOT / "jobs" / "calibrate_evaluate.py"), *overrides, artifacts], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "temperatures audio=" in evaluated.stdout and "|slot |stream_audio" in evaluated.stdout
    assert list((tmp_path / "artifacts" / "evaluation").glob("*/reliability.png"))
    scored = _run([*submit, str(ROOT / "jobs" / "score.py"), *overrides, artifacts], tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]

    # spark-sql, a separate process, sees the same tables through the metastore
    sql = _run([str(BIN / "spark-sql"), *flags, "-e",
                "SELECT job, status FROM camoe.runs ORDER BY started_at"], tmp_path)
    assert sql.returncode == 0, sql.stderr[-3000:]
    rows = [line.split("\t") for line in sql.stdout.strip().splitlines()]
    assert rows == [["generate_logs", "succeeded"], ["build_features", "succeeded"],
                    ["validate", "succeeded"], ["summarize", "succeeded"], ["train", "succeeded"],
                    ["calibrate_evaluate", "succeeded"], ["score", "succeeded"]]
    metrics = _run([str(BIN / "spark-sql"), *flags, "-e",
                    "SELECT slot, auc_pr, ece_equal_mass FROM camoe.slot_metrics "
                    "WHERE level = 'slot' AND calibrated ORDER BY rows DESC"], tmp_path)
    assert metrics.returncode == 0, metrics.stderr[-3000:]
    assert metrics.stdout.splitlines()[0].startswith("stream_audio\t")
    predicted = _run([str(BIN / "spark-sql"), *flags, "-e",
                      "SELECT COUNT(*) FROM camoe.predictions p JOIN camoe.runs r ON p.run_id = r.run_id "
                      "WHERE r.job = 'score' AND p.pctr > 0 AND p.pctr < 1"], tmp_path)
    assert int(predicted.stdout.strip()) > 0
    runs = _run([str(BIN / "spark-sql"), *flags, "-e",
                 "SELECT inputs, metrics FROM camoe.runs WHERE job = 'train'"], tmp_path)
    inputs, metrics = runs.stdout.strip().split("\t")
    assert json.loads(inputs)["features"] >= 0
    assert json.loads(metrics)["examples_per_second_total"] > 0

    # a bad flag is a readable error and a non-zero exit, before Spark starts
    bad = _run([sys.executable, str(ROOT / "jobs" / "build_features.py"), "--start-date", "yesterday"], tmp_path)
    assert bad.returncode == 2 and "'yesterday' is not a date" in bad.stderr
