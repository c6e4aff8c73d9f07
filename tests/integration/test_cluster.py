"""A real distributed run: a Spark standalone cluster on loopback (one master, two workers of
one core each, started with the pyspark distribution's own ``spark-class``).

generate_logs + build_features (one jobs/pipeline.py driver) run with spark-submit against
``spark://127.0.0.1:<port>`` and
against ``local[2]``, each into its own temporary warehouse; the tables must hold the same rows.
Then the training job (2 processes = 2 Spark tasks, one per worker core) runs on the cluster with
Horovod (the cluster pipeline's last step, in its driver) and with TorchDistributor (barrier tasks
on the executors, local_mode=False), and with TorchDistributor on local[2] (torchrun processes on
the driver, local_mode=True), on the same features snapshot: the weights must be equal.
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.jvm_options import SHORT_JVM_OPTIONS, class_archive_options
from tests.submit import SPARK_SUBMIT, python_env, spark_submit_flags

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SPARK_HOME = next((BIN.parent / "lib").glob("python3.*/site-packages/pyspark"))
# the daemons and executors run as briefly as the jobs' drivers, and map the same class archive
CLUSTER_JVM_OPTIONS = f"{SHORT_JVM_OPTIONS} {class_archive_options(os.environ.get('SPARK_SUBMIT_OPTS', ''))}".strip()
COMMON = ["--set=spark.shuffle_partitions=4", "--set=generator.days=5", "--set=generator.rows_per_day=3000",
          "--set=training.batch_size=512", "--set=mlflow.enabled=false"]   # MLflow: tests/integration/test_dag.py
TRAIN = ["--num-proc", "2", "--epochs", "1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**python_env(), "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_DAEMON_MEMORY": "512m", "SPARK_DAEMON_JAVA_OPTS": CLUSTER_JVM_OPTIONS}
    env.pop("SPARK_CONF_DIR", None)
    return env


def _alive_workers(webui: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=5) as response:
        return json.load(response)


class Cluster:
    def __init__(self, root: Path):
        self.root, self.procs, self.logs = root, [], []
        self.port, self.webui = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, *args: str) -> None:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            # own session: the daemon, the executors it forks and their Python workers form one
            # process group that teardown signals as a whole
            self.procs.append(subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=_env(),
                                               stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                               start_new_session=True))

    def start(self, workers: int = 2, timeout: float = 240) -> Cluster:
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.webui))
        for i in range(workers):
            work = self.root / f"worker{i}"
            work.mkdir()
            self._start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                        "--cores", "1", "--memory", "2g", "--webui-port", str(_free_port()),
                        "--work-dir", str(work))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a cluster daemon exited early:\n{self.tail()}")
            try:
                if _alive_workers(self.webui).get("aliveworkers") == workers:
                    return self
            except (OSError, ValueError):   # UI not up yet, or answering before its JSON is ready
                pass
            time.sleep(2)
        raise RuntimeError(f"{workers} workers did not register within {timeout}s:\n{self.tail()}")

    def state(self) -> dict:
        return _alive_workers(self.webui)

    def tail(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for log in self.logs if log.exists())

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            alive = [p for p in self.procs if p.poll() is None]
            for p in reversed(alive):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            for p in alive:
                try:
                    p.wait(grace)
                except subprocess.TimeoutExpired:
                    pass


@pytest.fixture
def standalone_cluster(tmp_path):
    root = tmp_path / "cluster"
    root.mkdir()
    cluster = Cluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
    assert all(p.poll() is not None for p in cluster.procs), "a cluster daemon survived teardown"


def _stores(lake: Path) -> list[str]:
    return [f"--set=storage.warehouse_dir={lake}/warehouse", f"--set=storage.metastore_dir={lake}/metastore",
            f"--set=storage.artifacts_dir={lake}/artifacts"]


def _submit(lake: Path, master: str, job: str, *args: str) -> subprocess.CompletedProcess:
    """spark-submit one job the way the README shows, against `master`, into `lake`."""
    conf = [*_stores(lake), *COMMON]
    flags = spark_submit_flags(conf, _env(), local_jars=False)
    resources = []
    if master.startswith("spark://"):
        resources = ["--executor-memory", "1g", "--total-executor-cores", "2",
                     "--conf", f"spark.executor.defaultJavaOptions={CLUSTER_JVM_OPTIONS}"]
    cmd = [str(SPARK_SUBMIT), "--master", master, *flags, "--driver-memory", "1g", *resources,
           str(ROOT / "jobs" / f"{job}.py"), *conf, *args]
    started = time.time()
    done = subprocess.run(cmd, cwd=lake, env=_env(), capture_output=True, text=True, timeout=1200)
    print(f"{job} on {master}: rc {done.returncode} in {time.time() - started:.0f}s")
    assert done.returncode == 0, f"{job} on {master} failed:\n{done.stderr[-4000:]}"
    # spark-submit's --driver-memory beats the conf's spark.driver.memory (4g), and the job says so
    assert "spark-submit's spark.driver.memory=1g applies" in done.stdout + done.stderr, done.stderr[-4000:]
    return done


def _pipeline(lake: Path, master: str, train_run_id: str | None = None) -> subprocess.CompletedProcess:
    """generate_logs then build_features, in one driver (jobs/pipeline.py); then, given a run
    id, the Horovod training of what it built (one driver less than a train job of its own)."""
    lake.mkdir()
    if train_run_id is None:
        return _submit(lake, master, "pipeline", "--steps", "generate_logs,build_features")
    train = " ".join([*TRAIN, "--backend", "horovod", "--run-id", train_run_id])
    return _submit(lake, master, "pipeline", "--steps", "generate_logs,build_features,train",
                   "--step-args", f"train={train}")


def _differences(spark, left: Path, right: Path, table: str, key: tuple[str, ...], ignore: tuple[str, ...]) -> str:
    """'' when both lakes hold the same rows of `table` (without the run-id columns `ignore`).

    Non-floating columns must be equal as multisets. Floating columns are compared per `key`
    to 1e-9 relative: Spark's final aggregation merges partial sums in the order shuffle
    blocks arrive, which is not fixed (local vs remote blocks, timing), so a sum over a shuffle
    can differ in the last bit (seen: 1 ulp in one of three runs, in the dense statistics builds
    used to fit). Ids, labels, samples, vocabularies and entity aggregates are exact; the test
    prints how many rows were not bit-equal."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    a = spark.read.format("delta").load(str(left / "warehouse" / "camoe.db" / table)).drop(*ignore)
    b = spark.read.format("delta").load(str(right / "warehouse" / "camoe.db" / table)).drop(*ignore)
    if sorted(a.columns) != sorted(b.columns):
        return f"{table}: columns differ: {a.columns} vs {b.columns}"
    rows = a.count()
    if rows == 0 or rows != b.count():
        return f"{table}: {rows} rows in the cluster build, {b.count()} in the local one"
    floats = [f.name for f in a.schema.fields if isinstance(f.dataType, (DoubleType, FloatType))]
    exact = [c for c in a.columns if c not in floats]
    only_a, only_b = a.select(*exact).exceptAll(b.select(*exact)), b.select(*exact).exceptAll(a.select(*exact))
    n_a, n_b = only_a.count(), only_b.count()
    if n_a or n_b:
        return (f"{table}: {n_a} rows only in the cluster build, {n_b} only in the local one, e.g.\n"
                f"{only_a.limit(3).collect()}\n{only_b.limit(3).collect()}")
    if not floats:
        return ""
    joined = a.alias("a").join(b.alias("b"), list(key), "full_outer")
    if joined.count() != rows:
        return f"{table}: key {key} does not match one to one"

    def close(c: str):
        x, y = F.col(f"a.{c}"), F.col(f"b.{c}")
        near = F.abs(x - y) <= 1e-9 * F.greatest(F.lit(1.0), F.abs(x), F.abs(y))
        return x.eqNullSafe(y) | F.coalesce(near, F.lit(False))

    def all_of(conditions):
        return functools.reduce(lambda acc, c: acc & c, conditions)

    far = joined.where(~all_of([close(c) for c in floats]))
    bad = far.count()
    bits = joined.where(~all_of([F.col(f"a.{c}").eqNullSafe(F.col(f"b.{c}")) for c in floats])).count()
    print(f"{table}: {rows} rows equal; floating values not bit-equal in {bits} rows, beyond 1e-9 in {bad}")
    return f"{table}: {bad} rows differ beyond 1e-9, e.g. {far.limit(2).collect()}" if bad else ""


@pytest.mark.slow
def test_standalone_cluster_matches_local(standalone_cluster, tmp_path, request):
    import torch

    cluster = standalone_cluster
    assert cluster.state()["cores"] == 2
    on_cluster, on_local = tmp_path / "cluster-lake", tmp_path / "local-lake"

    # the same seeded raw logs and feature build, on the cluster and in local[2], side by side;
    # the cluster's driver then trains with Horovod (each process a task on one worker's core)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(_pipeline, on_cluster, cluster.url, "horovod-on-cluster"),
                pool.submit(_pipeline, on_local, "local[2]")]
        trained_in_pipeline = runs[0].result()
        runs[1].result()

    # the cluster really ran them (spark-submit's --master reached the session builder)
    assert [app["name"] for app in cluster.state()["completedapps"]] == ["camoe-pipeline"], cluster.tail()

    spark = request.getfixturevalue("spark")
    problems = [_differences(spark, on_cluster, on_local, table, key, ignore) for table, key, ignore in (
        ("impressions", ("impression_id",), ()),
        ("features", ("event_date", "impression_id"), ("build_run_id",)),
        ("vocabularies", ("feature", "value"), ()),
        ("entity_daily", ("event_date", "entity", "key", "event_second"), ()))]
    assert not any(problems), "\n".join(p for p in problems if p)

    # TorchDistributor training of the same snapshot on the cluster (barrier tasks on the
    # executors) and on local[2] (torchrun processes on the driver, the reference), beside the
    # pipeline's Horovod training
    assert "(horovod, 2 workers)" in trained_in_pipeline.stdout, trained_in_pipeline.stdout[-2000:]
    trained = {"horovod-on-cluster": torch.load(on_cluster / "artifacts" / "models" / "horovod-on-cluster" / "model.pt",
                                                weights_only=True)}
    for master, launched in ((cluster.url, "on the executors"), ("local[2]", "on the driver")):
        run_id = f"torch_distributor-on-{'local' if master.startswith('local') else 'cluster'}"
        done = _submit(on_cluster, master, "train", *TRAIN, "--backend", "torch_distributor", "--run-id", run_id)
        assert f"(torch_distributor {launched}, 2 workers)" in done.stdout, done.stdout[-2000:]
        trained[run_id] = torch.load(on_cluster / "artifacts" / "models" / run_id / "model.pt", weights_only=True)
    # Bit-equal: every run reads the same snapshot files in the same seeded order, sets torch to
    # one thread per process (2 cores / 2 processes either way) and averages gradients with a Gloo
    # allreduce of two ranks (Horovod's and torch.distributed's agree bit for bit: measured on
    # local[2] before this test relied on it, and asserted here by Horovod on the cluster against
    # TorchDistributor on local[2]), so nothing depends on where the processes ran or which
    # launcher started them.
    reference = trained.pop("torch_distributor-on-local")
    for run_id, weights in trained.items():
        assert weights.keys() == reference.keys()
        unequal = [k for k in reference if not torch.equal(weights[k], reference[k])]
        assert not unequal, f"{run_id}: weights differ from torch_distributor on local[2]: {unequal[:10]}"

    # the cluster really ran them: two applications, each with an executor on both workers
    apps = sorted(app["name"] for app in cluster.state()["completedapps"])
    assert apps == ["camoe-pipeline", "camoe-train"], apps
    for worker in sorted(p for p in cluster.root.glob("worker*") if p.is_dir()):
        assert len(list(worker.glob("app-*/*/stderr"))) == 2, f"{worker.name} did not run an executor of every app"
