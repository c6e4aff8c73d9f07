"""Delta table upkeep: retention properties and the OPTIMIZE / VACUUM pass of ``jobs/maintain.py``
that never deletes a version a model needs (the tables' CHECK constraints: ``tables.CONSTRAINTS``).

Training pins a ``features`` version and re-reads exactly its files (``runs.inputs.features``);
a default VACUUM (7 days) or Delta's log cleanup (30 days) would silently delete what an older
model was trained on. Here every version a succeeded training run still references (its model
folder exists) is *protected*: VACUUM keeps at least the hours back to the oldest protected
commit, and the table's log retention is stretched to cover it.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core import tables
from core.config import Config


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
