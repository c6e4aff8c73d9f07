"""Which version of a Delta table a job read or wrote: the numbers ``camoe.runs`` records.

A write tags its commit (Delta's ``userMetadata``, ``tag_write``) and ``written_version`` finds
the commit with that tag: the table's newest version is the write's own unless another driver
committed to the table after it (jobs at once on a shared metastore), and lineage must then
name the write's version, not the other one's."""
from __future__ import annotations

import json
import uuid

from pyspark.sql import DataFrameWriter, SparkSession

# how far back from the newest commit written_version looks for its tag
SEARCH_COMMITS = 50
WRITE_TAG_PREFIX = "camoe-write-"


def latest_version(spark: SparkSession, name: str) -> int:
    """The newest committed version of Delta table ``name``.

    Asked before every pinned read and after every write. Delta's ``DeltaLog`` (its Scala API,
    through py4j) answers from the log without a Spark job: 33-54 ms a call against 318-428 ms
    for ``DeltaTable.history(1)`` in a warm session (``python bench/table_version.py``). That
    class is not Delta's public API, so when its call fails this falls back to ``history(1)``."""
    try:
        version = _log_version(spark, name)
    except Exception:                  # py4j's errors for a renamed class or changed signature
        return _history_version(spark, name)
    if version < 0:                    # DeltaLog's answer for a table with no _delta_log
        raise NotADeltaTable(f"{name} is not a Delta table (no commit in its _delta_log): the platform "
                             "reads and writes Delta tables only; copy the data into one (jobs/ingest.py "
                             "does for a log)")
    return version


class NotADeltaTable(ValueError):
    """A table the platform versions (reads pinned to a snapshot) is not a Delta table."""


def tag_write(writer: DataFrameWriter) -> tuple[DataFrameWriter, str]:
    """``writer`` with a tag of its own on the commit it will make, and the tag."""
    tag = f"{WRITE_TAG_PREFIX}{uuid.uuid4().hex}"
    return writer.option("userMetadata", tag), tag


def written_version(spark: SparkSession, name: str, tag: str) -> int:
    """The version of ``name`` whose commit carries ``tag`` (``tag_write``), among the newest
    ``SEARCH_COMMITS``: the commit files read directly (the newest is nearly always it), else
    Delta's history; the newest version when neither finds it."""
    try:
        log, newest = _delta_log(spark, name)
        log_dir = log.logPath().toString()
        for version in range(newest, max(-1, newest - SEARCH_COMMITS), -1):
            if _commit_metadata(log_dir, version) == tag:
                return version
    except Exception:                  # the internal API moved, or a file system pyarrow cannot open
        pass
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    found = (DeltaTable.forName(spark, name).history(SEARCH_COMMITS).where(F.col("userMetadata") == tag)
             .select("version").first())
    return int(found[0]) if found else latest_version(spark, name)


def _delta_log(spark: SparkSession, name: str):
    """(Delta's DeltaLog of ``name`` brought up to date, its newest version)."""
    jvm, session = spark._jvm, spark._jsparkSession
    identifier = session.sessionState().sqlParser().parseTableIdentifier(name)
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(session, identifier)
    none = jvm.scala.Option.empty()
    return log, int(log.update(False, none, none).version())   # (stalenessAcceptable, sinceTs, catalogTable)


def _log_version(spark: SparkSession, name: str) -> int:
    return _delta_log(spark, name)[1]


def _history_version(spark: SparkSession, name: str) -> int:
    from delta.tables import DeltaTable
    return int(DeltaTable.forName(spark, name).history(1).select("version").first()[0])


def filesystem_and_path(url: str):
    """(pyarrow filesystem, path) of a data file URL as Spark lists it (file:/..., s3a://..., hdfs://...)."""
    from urllib.parse import unquote, urlparse

    from pyarrow import fs as pafs

    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return pafs.LocalFileSystem(), unquote(parsed.path)
    return pafs.FileSystem.from_uri(url.replace("s3a://", "s3://", 1))


def _commit_metadata(log_dir: str, version: int) -> str | None:
    """The ``userMetadata`` of commit ``version`` (its JSON file in the table's _delta_log)."""
    filesystem, path = filesystem_and_path(f"{log_dir.rstrip('/')}/{version:020d}.json")
    with filesystem.open_input_stream(path) as handle:
        for line in handle.read().decode().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "commitInfo" in action:
                return action["commitInfo"].get("userMetadata")
    return None


def partition_days(spark: SparkSession, name: str, column: str) -> set:
    """The distinct values of date partition ``column`` of the latest snapshot of ``name``, from its
    data files' Hive-style ``column=YYYY-MM-DD`` directories (the snapshot's file list: Delta's
    log, no data read). A query of the partition column scans a row per record, and the daily
    build asks this of the raw log and the store on every day it builds. Falls back to that query
    where a file is not under such a directory (column mapping, a non-Delta table)."""
    import datetime as dt
    from urllib.parse import unquote

    from pyspark.sql import functions as F

    df = spark.table(name)
    days, marker = set(), f"/{column}="
    for path in df.inputFiles():
        at = path.rfind(marker)
        if at < 0:
            return {r[0] for r in df.select(F.col(column).cast("date")).distinct().collect()}
        value = unquote(path[at + len(marker):].split("/", 1)[0])
        if value != "__HIVE_DEFAULT_PARTITION__":
            days.add(dt.date.fromisoformat(value))
    return days
