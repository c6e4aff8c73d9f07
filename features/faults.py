"""Fault injection for the reliability tests: a job killed with SIGKILL at a named point of a
Delta write, as a lost node or the OOM killer would kill it. Off unless ``CAMOE_KILL_AT`` names a
point, and then only in a job started in a process group of its own (``setsid``, or
``start_new_session=True``): the whole group dies (spark-submit's JVM and the driver's Python),
with nothing flushed, closed or committed.

    CAMOE_KILL_AT=during:<table>   the write job of <table> (short name, e.g. features) dies once
                                   one of its tasks has written a data file: files, no commit
    CAMOE_KILL_AT=after:<table>    the job dies right after <table>'s commit, before its next write
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pyspark.sql import DataFrame

KILL_ENV = "CAMOE_KILL_AT"


def _armed(when: str, name: str) -> bool:
    return os.environ.get(KILL_ENV) == f"{when}:{name.rsplit('.', 1)[-1]}"


def _job_group() -> int:
    """The job's process group, which must lead a session of its own (setsid): a job started from
    a shell or a test without one shares its group with them, and the kill would take them too."""
    group = os.getpgid(0)
    if group != os.getsid(0):
        raise RuntimeError(f"{KILL_ENV} is set but this job was not started in a session of its own "
                           "(setsid / start_new_session=True): refusing to kill its parent's process group")
    return group


def during_write(df: DataFrame, name: str) -> DataFrame:
    """``df``, or, when armed for ``name``, ``df`` with a tripwire in the write's tasks: the first
    task writes its data file, the next one waits until that file is on disk (local paths) and
    then kills the job, before Delta commits anything. The tripwire is a Python task: the
    executors' Python workers are a process group of their own, killed too."""
    if not _armed("during", name):
        return df
    job = _job_group()
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
        os.killpg(job, signal.SIGKILL)               # the JVM and the driver
        os.killpg(os.getpgid(0), signal.SIGKILL)     # this worker and its daemon
        yield from batches

    return df.mapInArrow(tripwire, df.schema)


def _files_since(location: str, since: float) -> bool:
    root = Path(location)
    return any(f.stat().st_mtime >= since for f in root.rglob("*.parquet") if "_delta_log" not in f.parts)


def after_commit(name: str) -> None:
    """When armed for ``name``, kill the job now (its write of ``name`` has just committed)."""
    if _armed("after", name):
        os.killpg(_job_group(), signal.SIGKILL)
