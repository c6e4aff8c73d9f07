"""Fault injection for the reliability tests: a job killed with SIGKILL at a named point, as a
lost node or the OOM killer would kill it. Off unless ``CAMOE_KILL_AT`` names a point, and then
only in a job started in a process session of its own (``setsid``, or ``start_new_session=True``):
the job's whole process tree dies (spark-submit's JVM, the driver's Python, the executors' Python
workers, Horovod's or TorchDistributor's training processes), with nothing flushed, closed or
committed.

    CAMOE_KILL_AT=during:<table>     the write job of <table> (short name, e.g. features) dies once
                                     one of its tasks has written a data file: files, no commit
    CAMOE_KILL_AT=after:<table>      the job dies right after <table>'s commit, before its next write
    CAMOE_KILL_AT=during:training:N  rank 0 kills the job halfway through training epoch N
                                     (1-based; default 2), after N-1 epoch checkpoints

A table's point may name the job too (``during:predictions:score``), for tables that several
jobs write; otherwise the first job to write the table dies.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pyspark.sql import DataFrame

KILL_ENV = "CAMOE_KILL_AT"
JOB_ENV = "CAMOE_KILL_JOB"      # the job's session leader, exported by the driver for its workers


_current_job: str | None = None


def enter_job(job: str) -> None:
    """The job now running in this driver (the pipeline job runs several, one after another)."""
    global _current_job
    _current_job = job


def _point() -> list[str]:
    """The armed point's parts: ``during:features`` -> ["during", "features"]."""
    return os.environ.get(KILL_ENV, "").split(":")


def _armed(when: str, name: str) -> bool:
    point = _point()
    return (len(point) in (2, 3) and point[:2] == [when, name.rsplit(".", 1)[-1]]
            and (len(point) == 2 or point[2] == _current_job))


def claim_job() -> None:
    """Called by every job before Spark starts: when a kill point is armed, check that this job
    leads a session of its own and export its leader for the processes it starts. A job started
    from a shell or a test without one shares its session with them, and the kill would take them too."""
    if not os.environ.get(KILL_ENV):
        return
    if os.getpgid(0) != os.getsid(0):
        raise RuntimeError(f"{KILL_ENV} is set but this job was not started in a session of its own "
                           "(setsid / start_new_session=True): refusing to arm a kill that would reach its parent")
    os.environ[JOB_ENV] = str(os.getsid(0))


def _job_leader() -> int:
    if JOB_ENV not in os.environ:
        raise RuntimeError(f"{KILL_ENV} is set but the job never claimed its session (faults.claim_job)")
    return int(os.environ[JOB_ENV])


def kill_job(leader: int) -> None:
    """SIGKILL ``leader`` and every process below it (by parentage, so also the ones that started
    sessions of their own, as Horovod's launcher does), this one last."""
    import psutil

    me = os.getpid()
    try:
        root = psutil.Process(leader)
        victims = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = []
    for process in victims:
        if process.pid != me:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
    os.kill(me, signal.SIGKILL)


def during_write(df: DataFrame, name: str) -> DataFrame:
    """``df``, or, when armed for ``name``, ``df`` with a tripwire in the write's tasks: the first
    task writes its data file, the next one waits until that file is on disk (local paths) and
    then kills the job, before Delta commits anything. The tripwire is a Python task: the
    executors' Python workers are below the JVM, killed with it."""
    if not _armed("during", name):
        return df
    job = _job_leader()
    spark = df.sparkSession
    location = None
    if spark.catalog.tableExists(name):
        location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"].removeprefix("file:")
    armed_at = time.time()

    def tripwire(batches):
        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 0:
            yield from batches
            return
        deadline = time.time() + 120
        while location and time.time() < deadline and not _files_since(location, armed_at):
            time.sleep(0.1)
        kill_job(job)
        yield from batches

    if df.rdd.getNumPartitions() < 2:        # the tripwire needs a task after the first one
        df = df.repartition(2)
    return df.mapInArrow(tripwire, df.schema)


def _files_since(location: str, since: float) -> bool:
    root = Path(location)
    return any(f.stat().st_mtime >= since for f in root.rglob("*.parquet") if "_delta_log" not in f.parts)


def after_commit(name: str) -> None:
    """When armed for ``name``, kill the job now (its write of ``name`` has just committed)."""
    if _armed("after", name):
        kill_job(_job_leader())


def during_training(epoch: int, step: int, steps_per_epoch: int, rank: int) -> None:
    """When armed with ``during:training:N``, rank 0 kills the job at the middle step of epoch N
    (``epoch`` counts from 0 here), the other ranks mid-collective with it."""
    if rank != 0:
        return
    point = _point()
    if point[:2] != ["during", "training"]:
        return
    wanted = int(point[2]) if len(point) > 2 else 2
    if epoch == wanted - 1 and step == steps_per_epoch // 2:
        kill_job(_job_leader())
