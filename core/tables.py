"""Delta table names and I/O: the only module (with the jobs) that reads or writes tables.

Writes are idempotent: a date range is replaced with ``replaceWhere``; run-keyed tables
replace the rows of their run id. Every write returns the Delta version it produced (its tagged
commit: core/delta_versions.py) so the ``runs`` table can record exactly what a job read and wrote.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core import faults
from core.config import Config
from core.delta_versions import filesystem_and_path, tag_write, written_version
from core.delta_versions import latest_version as latest_version  # the callers' tables.latest_version

IMPRESSIONS = "impressions"
QUARANTINE = "quarantine"
FEATURES = "features"
SAMPLING_RATES = "sampling_rates"
VOCABULARIES = "vocabularies"
ENTITY_DAILY = "entity_daily"
TRAINING_SETS = "training_sets"
DQ_RESULTS = "dq_results"
RUNS = "runs"
TEMPERATURES = "temperatures"
SLOT_METRICS = "slot_metrics"
CALIBRATION_BINS = "calibration_bins"
PREDICTIONS = "predictions"
EXPERIMENT_RESULTS = "experiment_results"
AUCTION_REPLAY = "auction_replay"
EXPERT_MASK_METRICS = "expert_mask_metrics"

Result = TypeVar("Result")

# The job that writes each table: what a missing table's error tells the user to run.
WRITTEN_BY = {
    IMPRESSIONS: "ingest (a raw log) or generate_logs (synthetic)", QUARANTINE: "build_features",
    FEATURES: "build_features", VOCABULARIES: "build_features", ENTITY_DAILY: "build_features",
    TRAINING_SETS: "train", SAMPLING_RATES: "train", DQ_RESULTS: "validate", RUNS: "any job",
    TEMPERATURES: "calibrate_evaluate", SLOT_METRICS: "calibrate_evaluate",
    CALIBRATION_BINS: "calibrate_evaluate", PREDICTIONS: "calibrate_evaluate or score",
    EXPERT_MASK_METRICS: "calibrate_evaluate", EXPERIMENT_RESULTS: "experiments",
    AUCTION_REPLAY: "replay_auction",
}


# constraint name -> SQL predicate every row must satisfy (Delta CHECK constraints: a write
# with one violating row fails whole, naming the constraint)
CONSTRAINTS: dict[str, dict[str, str]] = {
    FEATURES: {
        "impression_id_present": "impression_id IS NOT NULL",
        "slot_present": "slot IS NOT NULL",
        # present, not a fixed list: a conf folder names its own modalities (MovieLens: eras),
        # and the build already quarantines a slot its conf does not map to one
        "modality_present": "modality IS NOT NULL",
        "label_binary": "label IN (0, 1)",
    },
    TRAINING_SETS: {
        "set_id_present": "set_id IS NOT NULL",
        "label_binary": "label IN (0, 1)",
        "sample_weight_positive": "sample_weight > 0",
    },
    PREDICTIONS: {
        "impression_id_present": "impression_id IS NOT NULL",
        "pctr_probability": "pctr >= 0 AND pctr <= 1",
        "pctr_raw_probability": "pctr_raw >= 0 AND pctr_raw <= 1",
        "label_binary_or_unknown": "label IS NULL OR label IN (0, 1)",
    },
}


def _constraints_of(name: str) -> dict[str, str]:
    """``CONSTRAINTS`` of table ``name``, qualified (``db.table``) or not."""
    return CONSTRAINTS.get(name.rsplit(".", 1)[-1], {})


def _constraint_property(constraint: str) -> str:
    """The table property Delta keeps a CHECK constraint in (it lower-cases the name)."""
    return f"delta.constraints.{constraint.lower()}"


def creation_properties(name: str, properties: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``delta.*`` properties a write that creates table ``name`` gives it: ``properties`` and
    the table's CHECK constraints (``CONSTRAINTS``), which Delta then checks on that first write
    too. Measured: three ALTER TABLE ADD CONSTRAINTs after the first write took 10-14 s of a job's
    fresh JVM (each a commit and a scan); as properties of the creating write they cost nothing."""
    return {**(properties or {}),
            **{_constraint_property(constraint): predicate for constraint, predicate in _constraints_of(name).items()}}


def ensure_constraints(spark: SparkSession, name: str) -> list[str]:
    """Add the constraints ``name`` lacks (ADD CONSTRAINT checks the rows already there), for a
    table created without them (by an older version of the jobs, or not by ``creation_properties``);
    returns the names added. A no-op, one metadata read, once they exist."""
    constraints = _constraints_of(name)
    if not constraints:
        return []
    present = {r.key for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    added = []
    for constraint, predicate in constraints.items():
        if _constraint_property(constraint) not in present:
            spark.sql(f"ALTER TABLE {name} ADD CONSTRAINT {constraint} CHECK ({predicate})")
            added.append(constraint)
    return added


def table_exists(spark: SparkSession, name: str) -> bool:
    return spark.catalog.tableExists(name)


def require_table(spark: SparkSession, name: str) -> None:
    """Raise TableNotFound, naming the job that writes ``name``, when it does not exist."""
    if not table_exists(spark, name):
        writer = WRITTEN_BY.get(name.rsplit(".", 1)[-1], "the job that writes it")
        raise TableNotFound(f"table {name} does not exist: run {writer} first")


def read_table(spark: SparkSession, name: str, version: int | None = None) -> DataFrame:
    require_table(spark, name)
    if version is None:
        return spark.table(name)
    return spark.sql(f"SELECT * FROM {name} VERSION AS OF {int(version)}")


class TableNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class TableFiles:
    """What reading a table's data files directly needs: Spark's description of the table, and for
    a Delta table the schema and data files of one snapshot (``DataFrame.inputFiles()``: the files
    of that snapshot's log, never a directory listing, so files removed by later versions stay
    unread; ``schema`` is the table's columns whatever its format). ``format`` is None for a view
    or anything ``DESCRIBE DETAIL`` refuses; ``version`` None is the latest snapshot, resolved
    anew by every read of the table (as ``spark.table``)."""
    name: str
    format: str | None
    version: int | None = None
    location: str = ""
    partition_columns: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    table_features: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    schema: T.StructType | None = None


def table_files(spark: SparkSession, name: str, version: int | None = None) -> TableFiles:
    """``name``'s description and, when it is a Delta table, the schema and files of ``version``
    (default: the latest). Properties and table features are the table's current ones:
    ``DESCRIBE DETAIL`` has no time travel. The latest version is not looked up (DESCRIBE HISTORY
    runs a Spark job: ~0.7-1 s, measured on 2 loaded cores, as long as scoring 100k rows)."""
    from pyspark.errors import AnalysisException

    require_table(spark, name)
    try:
        detail = spark.sql(f"DESCRIBE DETAIL {name}").first().asDict()
    except AnalysisException:                  # a view: no files of its own
        return TableFiles(name, None, schema=spark.table(name).schema)
    if detail["format"] != "delta":
        return TableFiles(name, detail["format"], location=detail["location"] or "",
                          schema=spark.table(name).schema)
    snapshot = read_table(spark, name, version)
    return TableFiles(name, "delta", version, detail["location"], tuple(detail["partitionColumns"] or ()),
                      dict(detail["properties"] or {}), tuple(detail["tableFeatures"] or ()),
                      tuple(sorted(snapshot.inputFiles())), snapshot.schema)


def log_date_range(spark: SparkSession, cfg: Config, table: str = IMPRESSIONS) -> tuple[dt.date, dt.date]:
    """First and last day of the raw log (its date partition column only); an empty table is an
    error naming the job that fills it."""
    name = cfg.table(table)
    first, last = read_table(spark, name).agg(F.min(cfg.schema.date), F.max(cfg.schema.date)).first()
    if first is None:
        raise ValueError(f"{name} holds no rows: run {WRITTEN_BY[table]} first, or pass --start-date/--end-date")
    return first, last


class DataFileError(RuntimeError):
    """A data file a Delta version references is missing or not a complete Parquet file."""


PARQUET_MAGIC = b"PAR1"


def check_data_files(spark: SparkSession, name: str, version: int | None = None) -> TableFiles:
    """``table_files`` of ``name`` at ``version``, after checking that every data file it lists
    exists and ends in Parquet's footer magic: a file deleted (a VACUUM with a short retention,
    a hand-made cleanup) or truncated (a copy cut short) is named here, before any worker reads."""
    from pyarrow import fs as pafs

    snapshot = table_files(spark, name, version)
    at = f"{name} version {version}" if version is not None else f"{name} (latest version)"
    for url in snapshot.files:
        filesystem, path = filesystem_and_path(url)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataFileError(f"{at}: data file {url} is missing (deleted by a VACUUM or by hand?); "
                                "rebuild the features (build_features) or use a version whose files exist")
        tail = b""
        if info.size >= 2 * len(PARQUET_MAGIC):
            with filesystem.open_input_file(path) as handle:
                handle.seek(info.size - len(PARQUET_MAGIC))
                tail = handle.read(len(PARQUET_MAGIC))
        if tail != PARQUET_MAGIC:
            raise DataFileError(f"{at}: data file {url} is not a complete Parquet file ({info.size} bytes, "
                                "no footer): rebuild the features (build_features)")
    return snapshot


def read_date_range(spark: SparkSession, name: str, date_column: str, start: dt.date,
                    end: dt.date, version: int | None = None) -> DataFrame:
    return read_table(spark, name, version).where(
        (F.col(date_column) >= F.lit(start)) & (F.col(date_column) <= F.lit(end)))


def replace_date_range(df: DataFrame, name: str, date_column: str, start: dt.date, end: dt.date,
                       partition_by: Iterable[str] | None = None,
                       properties: Mapping[str, str] | None = None, only_where: str | None = None,
                       with_undated: bool = False) -> int:
    """Write ``df`` as the complete content of [start, end] in table ``name``; returns the version.

    Rows of ``df`` outside the range make Delta refuse the write (replaceWhere is checked),
    so a bug cannot silently spill into other dates. ``only_where`` (a SQL predicate) narrows
    what is replaced to the rows it matches, e.g. one writer's rows of a shared table;
    ``with_undated`` adds the rows whose date is null (rejected rows whose date could not be
    read). ``properties`` (``delta.*`` table properties) are set when this write creates the table,
    with its constraints (``creation_properties``).
    """
    spark = df.sparkSession
    df = faults.during_write(df, name)
    writer = df.write.format("delta").mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if table_exists(spark, name):
        check_same_columns(spark.table(name), df, name)
        where = f"{date_column} >= '{start.isoformat()}' AND {date_column} <= '{end.isoformat()}'"
        if with_undated:
            where = f"({where}) OR {date_column} IS NULL"
        if only_where is not None:
            where = f"({where}) AND ({only_where})"
        writer = writer.option("replaceWhere", where)
    else:
        for key, value in creation_properties(name, properties).items():
            writer = writer.option(key, value)     # delta.* options become the new table's properties
    writer, tag = tag_write(writer)
    with conflicts_named(name, f"{date_column} {start}..{end}"), constraints_named(name):
        writer.saveAsTable(name)
    faults.after_commit(name)
    return written_version(spark, name, tag)


class ConcurrentWriteError(RuntimeError):
    """Another job committed to the rows this write replaces while it ran; it was not committed."""


@contextmanager
def conflicts_named(name: str, rows: str):
    """Delta's optimistic-concurrency conflicts as one ConcurrentWriteError naming the table and
    the rows two jobs both replaced. The losing write committed nothing and the winner's rows
    stand, so a table never holds both runs' rows: re-running the loser replaces them again."""
    import delta.exceptions.captured  # noqa: F401 - turns Delta's Java conflicts into Python exceptions
    from delta.exceptions import base as delta_conflicts

    kinds = (delta_conflicts.DeltaConcurrentModificationException, delta_conflicts.ConcurrentWriteException,
             delta_conflicts.MetadataChangedException, delta_conflicts.ProtocolChangedException,
             delta_conflicts.ConcurrentAppendException, delta_conflicts.ConcurrentDeleteReadException,
             delta_conflicts.ConcurrentDeleteDeleteException, delta_conflicts.ConcurrentTransactionException)
    try:
        yield
    except kinds as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ConcurrentWriteError(
            f"{name}: another job committed to {rows} while this one was writing them "
            f"({type(exc).__name__}: {detail}). Nothing of this write was committed and the other job's "
            "rows stand; re-run this job if its result is still wanted") from None


class ConstraintViolation(ValueError):
    """Rows of a write broke one of the table's CHECK constraints; nothing was committed."""


@contextmanager
def constraints_named(name: str):
    """A write refused by one of the table's CHECK constraints (``CONSTRAINTS``) as one
    ConstraintViolation naming the table, the constraint and the offending values. Delta's
    other refusals (rows outside a replaceWhere range, ...) pass through unchanged."""
    ours = {c.lower(): p for c, p in _constraints_of(name).items()}
    try:
        yield
    except Exception as exc:               # Delta's AnalysisException / SparkException via Py4J
        found = re.search(r"CHECK constraint (\w+) .*? violated by row with values:((?:\n - [^\n]*)+)", str(exc))
        if not ours or not found or found.group(1).lower() not in ours:
            raise
        values = ", ".join(v.strip(" -") for v in found.group(2).strip().splitlines())
        raise ConstraintViolation(f"{name}: a row breaks the table's constraint {found.group(1)} "
                                  f"({ours[found.group(1).lower()]}): {values}; nothing was written") from None


def replace_log_range(df: DataFrame, cfg: Config, start: dt.date, end: dt.date,
                      table: str = IMPRESSIONS) -> int:
    """Write raw impression logs as the complete content of [start, end] of ``table``,
    partitioned by the log's date column; returns the version.

    File statistics are kept on the event time only (the date is the partition): Delta's
    default, min/max of the first 32 columns, cost ~40% of a generated log's write on 2 cores,
    and no other log column is ordered within a file, so its min/max would skip nothing."""
    s = cfg.schema
    return replace_date_range(df, cfg.table(table), s.date, start, end, [s.date],
                              properties={"delta.dataSkippingStatsColumns": s.timestamp})


class SchemaChanged(ValueError):
    """The rows to write have other columns than the table: replacing some dates would mix them."""


def check_same_columns(table: DataFrame, df: DataFrame, name: str) -> None:
    have = {f.name: f.dataType.simpleString() for f in table.schema.fields}
    new = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    if have == new:
        return
    added, removed = sorted(set(new) - set(have)), sorted(set(have) - set(new))
    changed = sorted(f"{c} {have[c]} -> {new[c]}" for c in set(have) & set(new) if have[c] != new[c])
    raise SchemaChanged(
        f"{name} was written with other columns (new: {added or '-'}; gone: {removed or '-'}; "
        f"changed type: {changed or '-'}), e.g. by an older version of this job. Replacing some dates "
        f"would leave a table of two shapes: drop it (DROP TABLE {name}, or `make clean-data` for the "
        "local demo warehouse) and rebuild the whole range")


# Run ids this process minted (core.lineage.new_run_id), and the (table, run id) pairs it has written.
_MINTED_RUN_IDS: set[str] = set()
_RUN_ROWS_WRITTEN: set[tuple[str, str]] = set()


def note_minted_run_id(run_id: str) -> str:
    """Record that this process made ``run_id`` (unique: time and a random suffix), so no table
    holds rows of it, or of an id derived from it (``<run_id>-...``), until this process writes some."""
    _MINTED_RUN_IDS.add(run_id)
    return run_id


def _holds_no_rows_of(name: str, run_id: str) -> bool:
    minted = run_id in _MINTED_RUN_IDS or any(run_id.startswith(f"{m}-") for m in _MINTED_RUN_IDS)
    return minted and (name, run_id) not in _RUN_ROWS_WRITTEN


def replace_run_rows(df: DataFrame, name: str, run_id: str) -> int:
    """Replace the rows of one run id (re-running a run id rewrites only its own rows).

    The first write of a run id this process minted appends: no other process can have written
    it, and an append skips ``replaceWhere``'s search for the rows it would replace (measured,
    ``record_run`` in a warm session: 1.0 s against 1.6-1.8; the first after the table's creation
    1.0 s against 3.8). A run id given from outside (``--run-id``: Airflow, a rerun) replaces.
    A run table may gain columns (a newer version of a job reports more): they are added to the
    table, and the rows of earlier runs hold null there. A column that changed type still fails."""
    spark = df.sparkSession
    df = faults.during_write(df, name)
    writer = df.write.format("delta")
    if not table_exists(spark, name):
        writer = writer.mode("overwrite").options(**creation_properties(name))
    elif _holds_no_rows_of(name, run_id):
        writer = writer.mode("append").option("mergeSchema", "true")
    else:
        writer = (writer.mode("overwrite").option("replaceWhere", f"run_id = '{run_id}'")
                  .option("mergeSchema", "true"))
    writer, tag = tag_write(writer)
    with conflicts_named(name, f"the rows of run {run_id}"), constraints_named(name):
        writer.saveAsTable(name)
    _RUN_ROWS_WRITTEN.add((name, run_id))
    faults.after_commit(name)
    return written_version(spark, name, tag)


def concurrently(tasks: Mapping[str, Callable[[], Result]]) -> dict[str, Result]:
    """Run each task in its own thread; returns each one's result (the first error is raised).

    Spark jobs from several threads share the executors, and what a Delta write waits for on
    the driver (log listing, snapshot jobs, commit) overlaps. Cache what the tasks share
    before calling, or each thread computes it again."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(tasks))) as pool:
        futures = {name: pool.submit(task) for name, task in tasks.items()}
        return {name: future.result() for name, future in futures.items()}


def replace_run_rows_of_tables(frames: Mapping[str, DataFrame], run_id: str) -> dict[str, int]:
    """replace_run_rows into several tables at once (see ``concurrently``); returns each
    table's new version."""
    return concurrently({name: partial(replace_run_rows, df, name, run_id) for name, df in frames.items()})


def overwrite_table(df: DataFrame, name: str) -> int:
    writer, tag = tag_write(df.write.format("delta").mode("overwrite").option("overwriteSchema", "true"))
    writer.saveAsTable(name)
    return written_version(df.sparkSession, name, tag)
