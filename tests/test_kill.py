"""Real faults with real processes: a spark-submit of build_features killed with SIGKILL (its whole
process group, as a lost node or the OOM killer would) inside its Delta write of features and
right after that commit, then re-run: no partial version is ever read, and the re-run's tables
equal an uninterrupted run's. The kill points are features/faults.py's hooks."""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from features.config import load_config
from features.faults import KILL_ENV
from features.synthetic import generate_impressions

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START, DAYS, ROWS_PER_DAY = dt.date(2026, 3, 2), 4, 2000
DATES = ("--start-date", START.isoformat(), "--end-date", (START + dt.timedelta(days=DAYS - 1)).isoformat())


class Lake:
    """A warehouse of its own, written only by spark-submit processes (each holds the embedded
    metastore alone); this test's JVM reads its Delta tables by path."""

    def __init__(self, spark, root: Path):
        self.spark, self.root = spark, root
        self.sets = [f"--set=storage.warehouse_dir={root}/warehouse", f"--set=storage.metastore_dir={root}/metastore",
                     f"--set=storage.artifacts_dir={root}/artifacts", "--set=spark.master=local[2]",
                     "--set=spark.shuffle_partitions=4"]
        self.env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        self.flags = subprocess.run([sys.executable, "-m", "features.session", "--local-jars", *self.sets], cwd=ROOT,
                                    env=self.env, capture_output=True, text=True, check=True).stdout.split()

    def submit(self, job: str, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **({KILL_ENV: kill_at} if kill_at else {})}
        return subprocess.run([str(BIN / "spark-submit"), *self.flags, str(ROOT / "jobs" / f"{job}.py"), *self.sets,
                               *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=900,
                              start_new_session=True)      # the kill takes the job's group, not pytest's

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


def run_id_of(done: subprocess.CompletedProcess) -> str:
    return re.findall(r"run (build_features-[\w-]+) finished", done.stderr + done.stdout)[-1]


@pytest.mark.slow
def test_a_build_killed_inside_its_write_or_between_tables_reruns_to_an_uninterrupted_runs_tables(spark, tmp_path):
    cfg = load_config()
    raw = tmp_path / "raw"
    generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=START, days=DAYS,
                         rows_per_day=ROWS_PER_DAY).write.parquet(str(raw))
    lake = Lake(spark, tmp_path / "lake")
    lake.root.mkdir()
    done = lake.submit("pipeline", "--steps", "ingest,build_features",
                       "--step-args", f"ingest=--source {raw} --format parquet",
                       "--step-args", f"build_features={' '.join(DATES)}")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    reference_run = run_id_of(done)
    features_v, vocabularies_v = lake.version("features"), lake.version("vocabularies")
    reference_vocabularies = lake.read("vocabularies", vocabularies_v).where(F.col("run_id") == reference_run)
    assert reference_vocabularies.count() > 0

    # 1. killed inside the features write: data files begun, nothing committed, readers see the old version
    files = lake.data_files("features")
    killed = lake.submit("build_features", *DATES, kill_at="during:features")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert lake.data_files("features") - files, "the kill came before any data file of the write was begun"
    assert lake.version("features") == features_v
    assert same_rows(lake.read("features", features_v), lake.spark.read.format("delta").load(lake.path("features")))

    # 2. killed right after the features commit: features are the new build's, vocabularies not yet
    killed = lake.submit("build_features", *DATES, kill_at="after:features")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert lake.version("features") == features_v + 1 and lake.version("vocabularies") == vocabularies_v

    # 3. the re-run: every table as an uninterrupted run left it
    done = lake.submit("build_features", *DATES)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rerun = run_id_of(done)
    assert same_rows(lake.read("features", features_v).drop("build_run_id"),
                     lake.read("features", lake.version("features")).drop("build_run_id"))
    vocabularies = lake.read("vocabularies", lake.version("vocabularies"))
    assert same_rows(reference_vocabularies.drop("run_id"), vocabularies.where(F.col("run_id") == rerun).drop("run_id"))
