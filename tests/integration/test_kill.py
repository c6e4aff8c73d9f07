"""Real faults with real processes: spark-submits of jobs/pipeline.py and the jobs killed with
SIGKILL (the job's whole process tree, as a lost node or the OOM killer would) inside their Delta
writes (build_features, calibrate_evaluate, score), right after a commit, and in the middle of a Horovod
training epoch, then re-run: no partial version is ever read, training resumes from its last
readable checkpoint, and the re-runs' tables and weights equal an uninterrupted run's. The re-run
of the build is two builds of the same days started at once: one commits, the other is refused by
name. The kill points are core/faults.py's hooks. MLflow is off here (tests/test_dag.py and
tests/test_mlflow.py cover it): each job would only pay its import. The reference run is also
the check that a spark-submit is quiet by default: no Spark log lines, no Ivy report, no
traceback (the settings behind it: tests/unit/test_quiet_logs.py)."""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from pyspark.sql import functions as F

from core.config import load_config
from core.faults import KILL_ENV
from core.session import SPARK_LOG_ENV
from features.synthetic import generate_impressions
from tests.submit import SPARK_SUBMIT, python_env, spark_submit_flags
from training.artifact import load_artifact
from training.checkpoints import checkpoints

ROOT = Path(__file__).resolve().parents[2]
START, DAYS, ROWS_PER_DAY = dt.date(2026, 3, 2), 4, 2000
DATES = ("--start-date", START.isoformat(), "--end-date", (START + dt.timedelta(days=DAYS - 1)).isoformat())


# small and reproducible: one Petastorm reader thread, no shuffle buffer (see tests/test_training.py)
TRAINING = ["--set=training.batch_size=256", "--set=training.reader_workers=1", "--set=training.shuffle_buffer=0",
            "--set=training.warmup_steps=5", "--set=training.early_stopping_patience=9"]
TRAIN = "train=--backend horovod --num-proc 2 --epochs 3"
TRAINING_STEPS = "train,calibrate_evaluate,score"


class Lake:
    """A warehouse of its own, written only by spark-submit processes (each holds the embedded
    metastore alone); this test's JVM reads its Delta tables by path."""

    def __init__(self, spark, root: Path):
        self.spark, self.root = spark, root
        self.sets = [f"--set=storage.warehouse_dir={root}/warehouse", f"--set=storage.metastore_dir={root}/metastore",
                     f"--set=storage.artifacts_dir={root}/artifacts", "--set=spark.master=local[2]",
                     "--set=spark.shuffle_partitions=4", "--set=mlflow.enabled=false"]
        # Spark's default log level (a CAMOE_SPARK_LOG of the caller's would fail the quiet check);
        # Spark's scratch in the lake: a killed JVM's shutdown hooks never run, and its folders
        # would stay in /tmp after every run of the suite (the block manager's and the driver's
        # temp files under SPARK_LOCAL_DIRS, spark-submit's and the artifact manager's under
        # java.io.tmpdir)
        scratch = root / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)          # java.io.tmpdir must exist
        self.env = python_env({**{k: v for k, v in os.environ.items() if k != SPARK_LOG_ENV},
                               "SPARK_LOCAL_DIRS": str(scratch),
                               "SPARK_SUBMIT_OPTS": f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} "
                                                    f"-Djava.io.tmpdir={scratch}".strip()})
        self.flags = spark_submit_flags(self.sets, self.env)

    def submit(self, job: str, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **({KILL_ENV: kill_at} if kill_at else {})}
        return subprocess.run([str(SPARK_SUBMIT), *self.flags, str(ROOT / "jobs" / f"{job}.py"), *self.sets,
                               *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=900,
                              start_new_session=True)      # the kill takes the job's session, not pytest's

    def path(self, table: str) -> str:
        return str(self.root / "warehouse" / "camoe.db" / table)

    def version(self, table: str) -> int:
        return self.spark.sql(f"DESCRIBE HISTORY delta.`{self.path(table)}`").agg(F.max("version")).first()[0]

    def read(self, table: str, version: int):
        return self.spark.read.format("delta").option("versionAsOf", version).load(self.path(table))

    def data_files(self, table: str) -> set[Path]:
        return set(Path(self.path(table)).rglob("*.parquet")) - set(Path(self.path(table)).glob("_delta_log/*"))


def same_rows(a, b) -> bool:
    return a.count() == b.count() and a.exceptAll(b).isEmpty() and b.exceptAll(a).isEmpty()


def run_id_of(done: subprocess.CompletedProcess, job: str = "build_features") -> str:
    return re.findall(rf"run ({job}-[\w-]+) finished", done.stderr + done.stdout)[-1]


@pytest.fixture(scope="module")
def submitted_lake(spark, tmp_path_factory):
    """Ingest, build, the per-slot summary, training, evaluation and scoring by one uninterrupted
    spark-submit (run id "straight"): the reference every test compares with."""
    cfg = load_config()
    root = tmp_path_factory.mktemp("kill")
    raw = root / "raw"
    generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=START, days=DAYS,
                         rows_per_day=ROWS_PER_DAY).write.parquet(str(raw))
    lake = Lake(spark, root / "lake")
    done = lake.submit("pipeline", "--steps", f"ingest,build_features,summarize,{TRAINING_STEPS}", *TRAINING,
                       "--step-args", f"ingest=--source {raw} --format parquet",
                       "--step-args", f"build_features={' '.join(DATES)}", "--step-args", TRAIN,
                       "--run-id", "straight")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert_quiet(done.stdout + done.stderr, f"ingest,build_features,summarize,{TRAINING_STEPS}".split(","))
    summary = [line for line in done.stdout.split("==> summarize")[-1].split("==> ")[0].splitlines()
               if line.startswith("|")]
    assert summary[0].split("|")[1].strip() == "slot", done.stdout[-3000:]
    assert {line.split("|")[1].strip() for line in summary[1:]} == {
        "stream_audio", "podcast", "stream_audio_leavebehind", "podcast_leavebehind",
        "stream_video", "embedded_music", "podcast_video"}
    lake.reference_build = "straight-build_features"
    return lake


def assert_quiet(output: str, jobs: list[str]) -> None:
    """A spark-submit's output holds no Spark log line (conf/log4j2.properties' layout, any
    log4j level; the jobs' own warnings read "HH:MM:SS WARNING job: ..."), no Ivy report and no
    traceback, and each job's own closing line."""
    assert not re.search(r"^\d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) [\w$.]+: ", output, re.M), output[-3000:]
    assert ":: resolution report ::" not in output and "Traceback" not in output, output[-3000:]
    for job in jobs:
        assert re.search(rf"^\d\d:\d\d:\d\d {job}: run \S+ finished in ", output, re.M), (job, output[-3000:])


def evaluation_of(lake: Lake, table: str, run_id: str):
    """``run_id``'s rows of ``table`` without the columns that name runs or their times."""
    rows = lake.read(table, lake.version(table)).where(F.col("run_id") == run_id)
    return rows.drop("run_id", "model_run_id", "evaluated_at", "scored_at")


# before the build's test (file order): its rebuilds would give the re-runs features of another build
@pytest.mark.slow
def test_training_and_evaluation_killed_mid_way_rerun_to_an_uninterrupted_runs_results(submitted_lake):
    lake = submitted_lake
    steps = ["--steps", TRAINING_STEPS, *TRAINING, "--step-args", TRAIN]
    straight_model, _ = load_artifact(lake.root / "artifacts" / "models" / "straight-train")

    # Horovod's two training processes killed halfway through epoch 3, after two epoch checkpoints;
    # the newest is then cut short (a copy that lost its end): the re-run must not trust it
    killed = lake.submit("pipeline", *steps, "--run-id", "again", kill_at="during:training:3")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    model_dir = lake.root / "artifacts" / "models" / "again-train"
    saved = checkpoints(model_dir)
    assert [p.name for p in saved] == ["checkpoint-epoch0002.pt", "checkpoint-epoch0001.pt"]
    assert not (model_dir / "model.json").exists()
    with open(saved[0], "r+b") as handle:
        handle.truncate(saved[0].stat().st_size // 2)

    # the re-run resumes from epoch 1's checkpoint and is killed again inside calibrate_evaluate's writes
    killed = lake.submit("pipeline", *steps, "--run-id", "again", kill_at="during:slot_metrics")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    output = killed.stdout + killed.stderr
    assert f"checkpoint {saved[0]} is unreadable" in output and "resuming from checkpoint-epoch0001.pt" in output
    again_model, artifact = load_artifact(model_dir)
    assert [h["epoch"] for h in artifact.result.history] == [0, 1, 2]
    for name, tensor in straight_model.state_dict().items():
        torch.testing.assert_close(again_model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6,
                                   msg=lambda detail, name=name: f"{name}: {detail}")
    assert evaluation_of(lake, "slot_metrics", "again-calibrate_evaluate").isEmpty()

    # the re-run of what the kill left undone, killed once more inside score's predictions write
    # (data files written, no commit): evaluation's tables are whole, score's rows are none
    before = lake.version("predictions")
    killed = lake.submit("pipeline", "--steps", "calibrate_evaluate,score", "--run-id", "again",
                         kill_at="during:predictions:score")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert "calibrate_evaluate: run again-calibrate_evaluate finished" in killed.stdout + killed.stderr
    assert lake.version("predictions") == before + 1            # evaluation's commit, not score's
    assert evaluation_of(lake, "predictions", "again-score").isEmpty()
    done = lake.submit("pipeline", "--steps", "score", "--run-id", "again")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    for table, run in [("slot_metrics", "calibrate_evaluate"), ("temperatures", "calibrate_evaluate"),
                       ("calibration_bins", "calibrate_evaluate"), ("predictions", "calibrate_evaluate"),
                       ("predictions", "score")]:
        reference = evaluation_of(lake, table, f"straight-{run}")
        assert reference.count() > 0, table
        assert same_rows(reference, evaluation_of(lake, table, f"again-{run}")), f"{table} of {run}"


@pytest.mark.slow
def test_a_build_killed_inside_its_write_or_between_tables_reruns_to_an_uninterrupted_runs_tables(submitted_lake):
    lake = submitted_lake
    reference_run = lake.reference_build
    features_v, vocabularies_v, daily_v = (lake.version(t) for t in ("features", "vocabularies", "entity_daily"))
    reference_vocabularies = lake.read("vocabularies", vocabularies_v)
    assert reference_vocabularies.count() > 0

    # 1. killed inside the features write: data files begun, nothing committed, readers see the old version
    files = lake.data_files("features")
    killed = lake.submit("build_features", *DATES, kill_at="during:features")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert lake.data_files("features") - files, "the kill came before any data file of the write was begun"
    assert lake.version("features") == features_v
    assert same_rows(lake.read("features", features_v), lake.spark.read.format("delta").load(lake.path("features")))

    # 2. killed right after the features commit: the features are the new build's, encoded with the
    # vocabulary as it was (rebuilt days are not counted again: the state is not rewritten)
    killed = lake.submit("build_features", *DATES, kill_at="after:features")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert lake.version("features") == features_v + 1 and lake.version("vocabularies") == vocabularies_v
    assert lake.read("features", features_v + 1).first().build_run_id != reference_run

    # 3. the re-run, started twice at once: one commits, the other is refused by name (the
    # embedded metastore is one driver's) and writes nothing
    before = lake.version("features")
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: lake.submit("build_features", *DATES), range(2)))
    (won, done), (lost, refused) = sorted(((run.returncode, run) for run in runs), key=lambda r: r[0])
    message = refused.stdout + refused.stderr                     # the driver's stderr reaches
    assert (won, lost) == (0, 1), (done.stdout + done.stderr + message)[-3000:]   # spark-submit's stdout
    assert "is open in another Spark driver" in message and "this job wrote nothing" in message, message[-3000:]
    assert len(message.splitlines()) < 10, message[-3000:]                   # one line, not Derby's retries
    assert lake.version("features") == before + 1              # one build committed, once

    # every table as an uninterrupted run left it
    rerun = run_id_of(done)
    assert same_rows(lake.read("features", features_v).drop("build_run_id"),
                     lake.read("features", lake.version("features")).drop("build_run_id"))
    assert same_rows(reference_vocabularies, lake.read("vocabularies", lake.version("vocabularies")))
    assert same_rows(lake.read("entity_daily", daily_v), lake.read("entity_daily", lake.version("entity_daily")))
    assert {r.build_run_id for r in lake.read("features", lake.version("features")).select("build_run_id")
            .distinct().collect()} == {rerun}


def test_a_job_launched_with_another_confs_metastore_exits_2_and_opens_nothing(submitted_lake):
    """spark-submit started with this lake's flags (its Derby home) but the job's conf naming
    another metastore: a configuration error found only once Spark runs, exit 2 (not retried),
    one line, and the other metastore never opened. Catches a start-up that reports every
    failure as exit 1, and a check_metastore that lets the job register tables elsewhere."""
    other = submitted_lake.root / "another-metastore"
    done = submitted_lake.submit("summarize", f"--set=storage.metastore_dir={other}")
    message = done.stdout + done.stderr
    assert done.returncode == 2, message[-3000:]
    assert re.search(r"^summarize: configuration error: this Spark driver's metastore is \S+/lake/metastore, but the "
                     rf"configuration read says storage.metastore_dir {other}: launch the job with the same conf flags",
                     message, re.M), message[-3000:]
    assert "Traceback" not in message and not (other / "metastore_db").exists()
