"""Delta table upkeep: retention properties and the OPTIMIZE / VACUUM pass of ``jobs/maintain.py``
that never deletes a version a model needs (the tables' CHECK constraints: ``tables.CONSTRAINTS``).

Training pins a ``features`` version and re-reads exactly its files (``runs.inputs.features``);
a default VACUUM (7 days) or Delta's log cleanup (30 days) would silently delete what an older
model was trained on. Here every version a succeeded training run still references (its model
folder exists) is *protected*: VACUUM keeps at least the hours back to the oldest protected
commit, and the table's log retention is stretched to cover it.

Training sets (``training_sets`` and their ``sampling_rates`` rows) are kept for a retention
after their creation, and longer while a recent succeeded training run names them
(``clean_training_sets``); ``drop_old_layout`` drops what the layout before the daily store
wrote, so a rebuild starts clean.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core import tables
from core.config import Config
from core.feature_table import OLD_LAYOUT_COLUMN


def retention_properties(days: float) -> dict[str, str]:
    """Delta's log and deleted-file retention, both ``days`` (in whole hours)."""
    hours = math.ceil(days * 24)
    return {"delta.logRetentionDuration": f"interval {hours} hours",
            "delta.deletedFileRetentionDuration": f"interval {hours} hours"}


def set_properties(spark: SparkSession, name: str, properties: dict[str, str]) -> None:
    if {k: v for k, v in _properties(spark, name).items() if k in properties} != properties:
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in properties.items())
        spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ({pairs})")


def _properties(spark: SparkSession, name: str) -> dict[str, str]:
    return {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}


def protected_versions(spark: SparkSession, cfg: Config) -> dict[str, set[int]]:
    """Table -> the versions succeeded training runs read, for the runs whose model folder still
    exists (a deleted model needs no data)."""
    runs_table = cfg.table(tables.RUNS)
    if not tables.table_exists(spark, runs_table):
        return {}
    protected: dict[str, set[int]] = {}
    rows = spark.table(runs_table).where((F.col("job") == "train") & (F.col("status") == "succeeded")) \
        .select("inputs", "outputs").collect()
    for row in rows:
        artifact = json.loads(row.outputs).get("model_artifact")
        if artifact and not Path(artifact).exists():
            continue
        for table, version in json.loads(row.inputs).items():
            if isinstance(version, int):
                protected.setdefault(table, set()).add(version)
    return protected


@dataclass(frozen=True)
class UpkeepResult:
    table: str
    optimized: bool
    zorder_by: tuple[str, ...]
    retain_hours: int                  # what VACUUM kept: max(configured, back to the oldest protected)
    protected_versions: tuple[int, ...]
    files_removed: int


def commit_time(spark: SparkSession, name: str, version: int) -> dt.datetime | None:
    rows = spark.sql(f"DESCRIBE HISTORY {name}").where(F.col("version") == version).select("timestamp").collect()
    return rows[0].timestamp if rows else None


def maintain_table(spark: SparkSession, name: str, retain_days: float, protected: set[int],
                   zorder_by: tuple[str, ...] = (), now: dt.datetime | None = None) -> UpkeepResult:
    """OPTIMIZE (ZORDER BY ``zorder_by`` where the table has those columns), then VACUUM keeping
    ``retain_days`` or back to the oldest ``protected`` version's commit, whichever is longer;
    the table's retention properties are set to the same span first, so Delta's own log
    cleanup cannot outrun it. Below Delta's 7-day safety floor the floor is lifted for this
    session: the configuration asked for it."""
    now = now or dt.datetime.now()
    hours = math.ceil(retain_days * 24)
    oldest = [t for t in (commit_time(spark, name, v) for v in protected) if t is not None]
    if oldest:
        hours = max(hours, math.ceil((now - min(oldest)).total_seconds() / 3600) + 1)
    set_properties(spark, name, retention_properties(hours / 24))
    columns = set(spark.table(name).columns)
    order = tuple(c for c in zorder_by if c in columns)
    spark.sql(f"OPTIMIZE {name}" + (f" ZORDER BY ({', '.join(order)})" if order else ""))
    if hours < DELTA_RETENTION_FLOOR_HOURS:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    # VACUUM lists the table's folders in parallelPartitionDiscovery.parallelism tasks (10,000
    # by default: minutes of empty tasks on a small cluster); a few per core is enough
    listing = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    previous = spark.conf.get(listing, None)
    spark.conf.set(listing, str(max(8, 4 * spark.sparkContext.defaultParallelism)))
    try:
        spark.sql(f"VACUUM {name} RETAIN {hours} HOURS")
        removed = _vacuumed_files(spark, name)
    finally:
        if previous is None:
            spark.conf.unset(listing)
        else:
            spark.conf.set(listing, previous)
    return UpkeepResult(name, True, order, hours, tuple(sorted(protected)), removed)


def _vacuumed_files(spark: SparkSession, name: str) -> int:
    """Files the last VACUUM deleted, from its 'VACUUM END' history entry (Delta logs one)."""
    ended = (spark.sql(f"DESCRIBE HISTORY {name}").where(F.col("operation") == "VACUUM END")
             .orderBy(F.col("version").desc()).select("operationMetrics").first())
    return int((ended.operationMetrics or {}).get("numDeletedFiles", 0)) if ended else 0


DELTA_RETENTION_FLOOR_HOURS = 168          # VACUUM refuses less unless retentionDurationCheck is off


# ----------------------------------------------------------------------------- training sets
@dataclass(frozen=True)
class TrainingSetCleanup:
    deleted: tuple[str, ...]           # set ids whose training_sets and sampling_rates rows were deleted
    kept_in_use: tuple[str, ...]       # past the retention, but named by a recent succeeded training run
    versions: dict[str, int]           # table -> the Delta version its delete wrote


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def training_sets_in_use(spark: SparkSession, cfg: Config, since: dt.datetime) -> set[str]:
    """Every string value of the params, inputs, outputs and metrics of the succeeded training
    runs that finished at or after ``since`` (jobs/train.py names its set: ``params.training_set``)."""
    name = cfg.table(tables.RUNS)
    if not tables.table_exists(spark, name):
        return set()
    rows = (spark.table(name).where((F.col("job") == "train") & (F.col("status") == "succeeded")
                                    & (F.col("finished_at") >= F.lit(since)))
            .select("params", "inputs", "outputs", "metrics").collect())
    return {text for row in rows for column in row for text in _strings(json.loads(column))}


def _created(spark: SparkSession, cfg: Config) -> dict[str, dt.datetime]:
    """Set id -> when it was created: its sampling_rates rows' created_at; for a set without
    them (its write stopped between the two tables), its oldest data file's."""
    sets, rates = cfg.table(tables.TRAINING_SETS), cfg.table(tables.SAMPLING_RATES)
    created = {}
    if tables.table_exists(spark, rates) and "set_id" in spark.table(rates).columns:
        created = {r.set_id: r.created for r in spark.table(rates).groupBy("set_id")
                   .agg(F.min("created_at").alias("created")).collect()}
    if tables.table_exists(spark, sets):
        files = spark.table(sets).select("set_id", F.col("_metadata.file_modification_time").alias("written"))
        for r in files.groupBy("set_id").agg(F.min("written").alias("written")).collect():
            created.setdefault(r.set_id, r.written)
    return created


def clean_training_sets(spark: SparkSession, cfg: Config, retention_days: float,
                        now: dt.datetime | None = None) -> TrainingSetCleanup:
    """Delete the rows of the training sets created more than ``retention_days`` before ``now``
    from ``training_sets`` and ``sampling_rates``, except the sets a succeeded training run that
    finished within the retention names. Their files go at the tables' next VACUUM (a training
    run still reading its pinned version keeps reading it until then)."""
    from delta.tables import DeltaTable

    now = now or dt.datetime.now()
    since = now - dt.timedelta(days=retention_days)
    expired = {set_id for set_id, created in _created(spark, cfg).items() if created is not None and created < since}
    in_use = expired & training_sets_in_use(spark, cfg, since)
    deleted = sorted(expired - in_use)
    versions = {}
    for short in (tables.TRAINING_SETS, tables.SAMPLING_RATES) if deleted else ():
        name = cfg.table(short)
        if tables.table_exists(spark, name) and "set_id" in spark.table(name).columns:
            DeltaTable.forName(spark, name).delete(F.col("set_id").isin(deleted))
            versions[short] = tables.latest_version(spark, name)
    return TrainingSetCleanup(tuple(deleted), tuple(sorted(in_use)), versions)


# ----------------------------------------------------------------------------- the old layout
# table -> whether its columns are the layout's before the daily store (feature_stats: always)
OLD_LAYOUT_TABLES = {
    tables.FEATURES: lambda columns: OLD_LAYOUT_COLUMN in columns,
    tables.VOCABULARIES: lambda columns: "counted_through" not in columns,
    "feature_stats": lambda columns: True,
    tables.SAMPLING_RATES: lambda columns: "set_id" not in columns,
}


def drop_old_layout(spark: SparkSession, cfg: Config) -> tuple[str, ...]:
    """Drop every table of ``OLD_LAYOUT_TABLES`` written by the layout before the daily store
    (a managed table's files go with it); returns the short names dropped. Tables of the new
    layout are left as they are, so a second run drops nothing."""
    dropped = []
    for short, is_old in OLD_LAYOUT_TABLES.items():
        name = cfg.table(short)
        if tables.table_exists(spark, name) and is_old(set(spark.table(name).columns)):
            spark.sql(f"DROP TABLE {name}")
            dropped.append(short)
    return tuple(dropped)
