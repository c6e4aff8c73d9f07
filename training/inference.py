"""Batch inference inside Spark: a trained artifact scores feature rows in Python tasks.

The model's weights and description are broadcast once; every Python worker builds the model
once per broadcast (cached by content hash) and scores Arrow record batches as numpy views (no
pandas on the Spark path). Output per row: the ``keep`` columns, the own-task logit, the
down-sampling-corrected probability ``pctr_raw`` and, given temperatures, the calibrated ``pctr``.
The same code (``Scorer``) scores the validation and test splits for evaluation and candidate
tables for production scoring, so what is evaluated is what is served; ``score_rows`` is its
pandas face.

Two ways in, one scorer:

- ``score_table`` (jobs/score.py, calibrate_evaluate): the Python tasks read one Delta snapshot's
  own Parquet files (listed once, on the driver) with pyarrow: only the needed columns, files
  pruned by partition value, row groups without a selected row skipped. They apply the
  ``RowSelection`` and hand back only the ``keep`` and score columns through ``mapInArrow`` over
  one row per group of files. The rows
  never cross the JVM -> Python boundary, which alone cost more than half of the scoring time:
  measured, a no-op ``mapInArrow`` over the model's ~25 input columns ran at 0.31x a Spark scan.
- ``score_dataframe``: any DataFrame, its rows converted to Arrow by the JVM and scored in
  ``mapInArrow``. ``score_table`` falls back to it, with one warning, whenever the files alone do
  not say what the snapshot holds (``raw_files_untrusted``: deletion vectors, column mapping, type
  widening, a view or a non-Delta table, files outside Hive-style partition directories).
"""
from __future__ import annotations

import datetime as dt
import gc
import hashlib
import io
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
import torch

from training.artifact import ModelArtifact, read_artifact
from training.data import FeatureLayout

log = logging.getLogger(__name__)

_MODELS: dict[str, tuple] = {}          # payload sha256 -> (model, ModelArtifact), per Python worker

SCORE_COLUMNS = ("task", "logit", "pctr_raw", "pctr")


def artifact_payload(artifact_dir) -> bytes:
    """model.pt + model.json of an artifact as one broadcastable blob."""
    from training.artifact import DESCRIPTION_FILE, load_artifact

    model, artifact = load_artifact(artifact_dir)
    buffer = io.BytesIO()
    torch.save({"state": model.state_dict(), DESCRIPTION_FILE: artifact.to_json()}, buffer)
    return buffer.getvalue()


def _model(payload, key: str) -> tuple:
    """The broadcast model, built once per Python worker (workers are reused across tasks)."""
    if key not in _MODELS:
        from training.artifact import DESCRIPTION_FILE, ModelArtifact

        blob = torch.load(io.BytesIO(payload.value), weights_only=False)
        # One intra-op thread: Spark runs one Python worker per task slot (local[N]: N slots on
        # N cores), and the JVM's scan and Arrow transfer need the same cores. Measured on 2
        # cores, 2 workers x 2 threads ran the forward ~3x slower than 2 x 1.
        torch.set_num_threads(1)
        artifact = ModelArtifact.from_json(blob[DESCRIPTION_FILE], f"the broadcast {DESCRIPTION_FILE}")
        _MODELS[key] = (artifact.build(blob["state"]), artifact)
    return _MODELS[key]


def _settle_worker() -> None:
    """Drop a reused Python worker's per-task costs that grow with what it has imported, not with
    rows (measured on 2 cores: ~0.4 s of CPU per task, a 150k-row job has 2 tasks)."""
    _keep_zip_directories()
    # The daemon runs gc.collect() after every task: ~0.14 s over torch's ~190k objects. Freezing
    # moves what the worker holds now (modules, the cached model) out of the collector's sight;
    # later garbage is still collected.
    gc.freeze()


def _keep_zip_directories() -> None:
    """Stop the worker's per-task ``importlib.invalidate_caches()`` re-reading every zip on its path.

    Spark 4.0's worker calls it before each task, and every zipimporter (pyspark.zip and py4j's zip,
    one per package imported from them, spark-core's jar and the spark.jars.packages jars, which
    Spark also puts on the Python path) re-parses its archive's directory: measured ~0.25 s of
    CPU per task, as much as the Arrow round trip of ~75k rows. Archives already imported from
    never change while a worker lives (Spark's files are immutable once fetched); a zip added
    later gets its own, unpatched importer. Upstream, SPARK-54744 makes the call conditional."""
    import zipimport

    for finder in list(sys.path_importer_cache.values()):
        if isinstance(finder, zipimport.zipimporter):
            finder.invalidate_caches = _no_op


def _no_op() -> None:
    pass


@dataclass(frozen=True)
class Scorer:
    """A model and everything its scoring needs per row, as arrays built once (per worker, not per batch).

    ``score`` takes column arrays and returns task indices (``task_index``, into ``tasks``),
    logit, pctr_raw, pctr (and ``masked_pctr``); the model runs on at most ``rows_per_batch``
    rows at a time, so memory stays bounded whatever the input batch size.
    """
    model: torch.nn.Module
    layout: FeatureLayout
    tasks: tuple[str, ...]
    slot_to_task: np.ndarray             # (S,) int64
    slot_shift: np.ndarray               # (S,) float64: log(r_neg / r_pos) per slot id
    temperatures: np.ndarray             # (T,) float64 (ones without temperatures)
    rows_per_batch: int = 4096

    @classmethod
    def build(cls, model, artifact: ModelArtifact, slot_shift: Sequence[float],
              temperatures: Sequence[float] | None, rows_per_batch: int = 4096) -> Scorer:
        tasks = artifact.tasks
        return cls(model, artifact.layout, tasks, np.asarray(artifact.slot_to_task, dtype=np.int64),
                   np.asarray(slot_shift, dtype=np.float64),
                   np.ones(len(tasks)) if temperatures is None else np.asarray(temperatures, dtype=np.float64),
                   int(rows_per_batch))

    def score(self, slot: np.ndarray, column: Callable[[str, type], np.ndarray], rows: int,
              masked_experts: bool = False) -> dict[str, np.ndarray]:
        """Scores of ``rows`` rows; ``column(name, dtype)`` gives one feature column as a numpy array."""
        layout = self.layout
        slot = np.asarray(slot, dtype=np.int64)
        categorical = torch.from_numpy(layout.categorical_inputs([column(c, np.int64) for c in layout.categorical],
                                                                 slot))
        dense = (torch.from_numpy(np.stack([column(c, np.float32) for c in layout.dense], 1))
                 if layout.dense else torch.zeros(rows, 0))
        task = self.slot_to_task[slot]
        shift = self.slot_shift[slot]
        temps = self.temperatures[task]
        logit = self._own_task_logit(categorical, dense, task, None)
        corrected = logit + shift
        out = {"task_index": task, "logit": logit,
               "pctr_raw": _sigmoid(corrected), "pctr": _sigmoid(corrected / temps)}
        if masked_experts:
            experts = self.model.num_experts
            masked = []
            for k in range(experts):
                mask = torch.ones(experts, dtype=torch.bool)
                mask[k] = False
                z = self._own_task_logit(categorical, dense, task, mask)
                masked.append(_sigmoid((z + shift) / temps))
            out["masked_pctr"] = np.stack(masked, 1) if masked else np.zeros((rows, 0))
        return out

    def _own_task_logit(self, categorical, dense, task: np.ndarray, expert_mask) -> np.ndarray:
        """(n,) float64: the model's float32 logit of each row's own task, in row batches."""
        n = len(task)
        out = np.empty(n, dtype=np.float64)
        step = self.rows_per_batch
        with torch.inference_mode():
            for start in range(0, n, step):
                stop = min(start + step, n)
                logits = self.model(categorical[start:stop], dense[start:stop], expert_mask=expert_mask)  # (b, T)
                out[start:stop] = logits.numpy()[np.arange(stop - start), task[start:stop]]
        return out


def score_rows(frame, model, artifact: ModelArtifact, slot_shift: Sequence[float],
               temperatures: Sequence[float] | None, masked_experts: bool = False) -> dict[str, np.ndarray]:
    """Score one pandas batch of feature rows.

    frame: cat_* int ids, dense_* floats, slot_id. slot_shift: per slot id, log(r_neg / r_pos).
    temperatures: per task index. Returns task, logit, pctr_raw, pctr (and with
    ``masked_experts`` a (N, K) ``masked_pctr``: the calibrated pCTR with expert k zeroed).
    """
    scorer = Scorer.build(model, artifact, slot_shift, temperatures)
    out = scorer.score(frame["slot_id"].to_numpy(np.int64), lambda c, dtype: frame[c].to_numpy(dtype), len(frame),
                       masked_experts)
    out["task"] = np.asarray(scorer.tasks, dtype=object)[out.pop("task_index")]
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# The model's inputs cross the JVM -> Python boundary packed into two list columns built by
# F.array in the JVM: one values buffer each instead of ~25 Arrow columns. Spark's ArrowWriter
# pays per column and row; packed, a no-op mapInArrow over these rows measured 1.39x a scan's
# CPU instead of 1.87x.
IDS_COLUMN, DENSE_COLUMN = "__camoe_ids", "__camoe_dense"


def _packed(batch, name: str, names: Sequence[str]) -> np.ndarray:
    """(n, len(names)) numpy view of the list column ``name`` (F.array of ``names``, in order)."""
    import pyarrow as pa

    values = batch.column(name).flatten()                 # honours a sliced batch; no copy
    if not values.null_count:
        return values.to_numpy().reshape(batch.num_rows, len(names))
    if pa.types.is_integer(values.type):
        first = np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]
        raise ValueError(f"feature column {names[first % len(names)]} holds null(s); ids must be set")
    return values.to_numpy(zero_copy_only=False).reshape(batch.num_rows, len(names))   # nulls -> NaN


def score_record_batch(batch, scorer: Scorer, keep: Sequence[str], masked_experts: bool = False):
    """One Arrow record batch (``keep`` columns, ``IDS_COLUMN``: the categorical ids then slot_id,
    ``DENSE_COLUMN``: the dense features) -> its ``keep`` columns (the same Arrow arrays) plus
    task (string), logit, pctr_raw, pctr (+ masked_pctr list<double>)."""
    layout = scorer.layout
    ids = _packed(batch, IDS_COLUMN, [*layout.categorical, "slot_id"])
    dense = _packed(batch, DENSE_COLUMN, layout.dense) if layout.dense else np.zeros((batch.num_rows, 0))
    where = {**{c: (ids, i) for i, c in enumerate(layout.categorical)},
             **{c: (dense, i) for i, c in enumerate(layout.dense)}}

    def column(name: str, dtype) -> np.ndarray:
        matrix, i = where[name]
        return matrix[:, i].astype(dtype, copy=False)

    scored = scorer.score(ids[:, -1], column, batch.num_rows, masked_experts)
    return scored_batch({name: batch.column(name) for name in keep}, scored, scorer, masked_experts)


def scored_batch(kept: Mapping[str, object], scored: Mapping[str, np.ndarray], scorer: Scorer,
                 masked_experts: bool):
    """The output record batch: the ``kept`` Arrow arrays, then task (string), logit, pctr_raw,
    pctr (+ masked_pctr list<double>) from ``Scorer.score``'s arrays."""
    import pyarrow as pa

    rows = len(scored["logit"])
    task = pa.DictionaryArray.from_arrays(pa.array(scored["task_index"], pa.int32()),
                                          pa.array(scorer.tasks, pa.string())).cast(pa.string())
    names = [*kept, *SCORE_COLUMNS, *(["masked_pctr"] if masked_experts else [])]
    arrays = [*kept.values(), task, pa.array(scored["logit"]), pa.array(scored["pctr_raw"]),
              pa.array(scored["pctr"])]
    if masked_experts:
        values = scored["masked_pctr"]                                  # (n, K)
        offsets = np.arange(rows + 1, dtype=np.int32) * values.shape[1]
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1))))
    return pa.RecordBatch.from_arrays(arrays, names=names)


@dataclass(frozen=True)
class _Broadcast:
    """What every scoring task needs from the driver: the artifact (broadcast once, keyed by its
    content hash) and the per-slot shifts and per-task temperatures in the model's order."""
    payload: object
    key: str
    shift: list[float]
    temperatures: list[float] | None
    artifact: ModelArtifact


def _broadcast(spark, artifact_dir, slot_shift: Mapping[str, float],
               temperatures: Mapping[str, float] | None) -> _Broadcast:
    artifact = read_artifact(artifact_dir)
    slots = artifact.layout.slots
    missing = [s for s in slots if s not in slot_shift]
    if missing:
        raise ValueError(f"no down-sampling rate for slot(s) {missing}")
    temps = None
    if temperatures is not None:
        absent = [t for t in artifact.tasks if t not in temperatures]
        if absent:
            raise ValueError(f"no temperature for task(s) {absent} of model run {artifact.run_id}")
        temps = [float(temperatures[t]) for t in artifact.tasks]
    blob = artifact_payload(artifact_dir)
    key = hashlib.sha256(blob).hexdigest()    # content, not object identity: ids are reused
    return _Broadcast(spark.sparkContext.broadcast(blob), key, [float(slot_shift[s]) for s in slots], temps,
                      artifact)


def _worker_scorer(shared: _Broadcast, rows_per_batch: int) -> Scorer:
    """In a Python task: the worker's cached model as a Scorer (first task: built, worker settled)."""
    model, artifact = _model(shared.payload, shared.key)
    _settle_worker()
    return Scorer.build(model, artifact, shared.shift, shared.temperatures, rows_per_batch)


def _output_schema(keep_fields: Sequence, masked_experts: bool):
    from pyspark.sql import types as T

    fields = [*keep_fields, T.StructField("task", T.StringType()), T.StructField("logit", T.DoubleType()),
              T.StructField("pctr_raw", T.DoubleType()), T.StructField("pctr", T.DoubleType())]
    if masked_experts:
        fields.append(T.StructField("masked_pctr", T.ArrayType(T.DoubleType())))
    return T.StructType(fields)


def score_dataframe(df, artifact_dir, slot_shift: Mapping[str, float], temperatures: Mapping[str, float] | None,
                    keep: Sequence[str], masked_experts: bool = False, rows_per_batch: int = 4096):
    """``df``'s ``keep`` columns plus task, logit, pctr_raw, pctr (+ masked_pctr array).

    slot_shift: slot name -> log(r_neg / r_pos); temperatures: task name -> T (None: T = 1).
    rows_per_batch: rows per model call (Spark's Arrow batches are
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows; each is scored in such slices).
    The JVM converts every input column to Arrow for the Python worker: for a table's rows,
    ``score_table`` reads its files in Python instead, at about twice the rate.
    """
    shared = _broadcast(df.sparkSession, artifact_dir, slot_shift, temperatures)
    absent_columns = [c for c in shared.artifact.input_columns if c not in df.columns]
    if absent_columns:
        raise ValueError(f"rows to score lack feature column(s) {absent_columns}")
    schema = _output_schema([df.schema[c] for c in keep], masked_experts)
    keep = list(keep)

    def predict(batches: Iterator) -> Iterator:
        scorer = _worker_scorer(shared, rows_per_batch)
        for batch in batches:
            if batch.num_rows:
                yield score_record_batch(batch, scorer, keep, masked_experts)

    return model_inputs(df, shared.artifact.layout, keep).mapInArrow(predict, schema)


def model_inputs(df, layout: FeatureLayout, keep: Sequence[str]):
    """``df``'s ``keep`` columns plus the model's inputs packed as ``score_record_batch`` reads them."""
    from pyspark.sql import functions as F

    packed = [F.array(*layout.categorical, "slot_id").alias(IDS_COLUMN)]
    if layout.dense:
        packed.append(F.array(*layout.dense).alias(DENSE_COLUMN))
    return df.select(*dict.fromkeys(keep), *packed)


# ----------------------------------------------------------------------------- which rows
@dataclass(frozen=True)
class RowSelection:
    """Which rows of a table to score, one definition for Spark (``where``) and for the file
    reader (``arrow_mask``): the ``split`` (where the table has that column), ``date_column`` in
    [start, end], ``slot`` in ``slots``. A null in a compared column never matches, as in Spark SQL."""
    split: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    slots: tuple[str, ...] | None = None
    date_column: str = "event_date"

    def conditions(self, columns: Sequence[str]) -> tuple[tuple[str, str, object], ...]:
        """(column, operator, value) triples, operator one of ==, >=, <=, in."""
        out = []
        if self.split and "split" in columns:
            out.append(("split", "==", self.split))
        if self.start:
            out.append((self.date_column, ">=", self.start))
        if self.end:
            out.append((self.date_column, "<=", self.end))
        if self.slots is not None:
            out.append(("slot", "in", tuple(self.slots)))
        return tuple(out)

    def where(self, df):
        """``df`` restricted to the selected rows."""
        from pyspark.sql import functions as F

        for name, operator, value in self.conditions(df.columns):
            column = F.col(name)
            df = df.where(column.isin(list(value)) if operator == "in" else
                          column == F.lit(value) if operator == "==" else
                          column >= F.lit(value) if operator == ">=" else column <= F.lit(value))
        return df


def arrow_mask(conditions: Sequence[tuple[str, str, object]], column: Callable[[str], object]):
    """Boolean Arrow array: the rows meeting every condition (``column(name)``: an Arrow array);
    None without conditions. Nulls compare as null and select nothing, as Spark's filter does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    compare = {"==": pc.equal, ">=": pc.greater_equal, "<=": pc.less_equal}
    mask = None
    for name, operator, value in conditions:
        values = column(name)
        hit = (pc.is_in(values, value_set=pa.array(list(value), values.type)) if operator == "in"
               else compare[operator](values, pa.scalar(value, values.type)))
        mask = hit if mask is None else pc.and_(mask, hit)
    return None if mask is None else pc.fill_null(mask, False)


# ----------------------------------------------------------------------------- the snapshot's files
HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"

# Delta reader features under which a data file's bytes alone do not say which rows and values the
# snapshot holds: deletion vectors mark rows deleted outside the file, column mapping stores columns
# under physical names (and files under random prefixes), type widening leaves older files with
# narrower types than the schema. A feature, once in a table's protocol, stays unless history is
# rewritten, so the current protocol (DESCRIBE DETAIL has no time travel) speaks for older versions.
RAW_FILE_BREAKING_FEATURES = ("deletionVectors", "columnMapping", "typeWidening", "typeWidening-preview")

# Bytes of Parquet per scoring task at most (Spark's default spark.sql.files.maxPartitionBytes); at
# least one task per core, so small tables still use every core.
TASK_BYTES = 128 * 1024 * 1024


def partition_values(path: str, location: str) -> dict[str, str | None] | None:
    """The Hive-style ``column=value`` directories of a data file below the table's location, values
    unescaped (``DataFrame.inputFiles`` gives the Hive-escaped segments, e.g. %2F for /); a null
    partition is None. None when the file is not below ``location`` or a directory is not col=value."""
    base = location.rstrip("/") + "/"
    if not path.startswith(base):
        return None
    values = {}
    for segment in path[len(base):].split("/")[:-1]:
        name, equals, value = segment.partition("=")
        if not equals:
            return None
        values[unquote(name)] = None if value == HIVE_NULL_PARTITION else unquote(value)
    return values


def raw_files_untrusted(table) -> str | None:
    """Why ``table`` (``core.tables.TableFiles``) must be read through Spark, not from its
    Parquet files by pyarrow; None when its files can be trusted."""
    if table.format != "delta":
        kind = "a view (or a table DESCRIBE DETAIL refuses)" if table.format is None else f"a {table.format} table"
        return f"{table.name} is {kind}, not a Delta table"
    breaking = [f for f in table.table_features if f in RAW_FILE_BREAKING_FEATURES]
    if breaking:
        return f"{table.name} has Delta table feature(s) {breaking}"
    if table.properties.get("delta.enableDeletionVectors", "false").lower() == "true":
        return f"{table.name} has deletion vectors enabled"
    mode = table.properties.get("delta.columnMapping.mode", "none")
    if mode != "none":
        return f"{table.name} has column mapping mode {mode}"
    for path in table.files:
        values = partition_values(path, table.location)
        if values is None or set(values) != set(table.partition_columns):
            return (f"data file {path} is not in Hive-style directories of partition column(s) "
                    f"{list(table.partition_columns)} below {table.location}")
    try:
        _filesystem(table.location)
    except Exception as error:               # pyarrow has no filesystem for it (e.g. s3a://)
        return f"pyarrow cannot open {table.location}: {error}"
    return None


def _filesystem(location: str):
    """(pyarrow filesystem, path of ``location`` on it)."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(location)


def _partition_arrays(values: Mapping[str, str | None], types: Mapping[str, object]) -> dict:
    """One-row Arrow arrays of a file's partition values, typed as the table's columns."""
    import pyarrow as pa

    return {name: pa.array([value], pa.string()).cast(types[name]) for name, value in values.items()}


def file_groups(sizes: Sequence[int], groups: int) -> list[list[int]]:
    """File indices in ``groups`` groups of about equal bytes: the largest file first, each into
    the lightest group so far; within a group, files keep their given order."""
    loads, members = [0] * groups, [[] for _ in range(groups)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        lightest = loads.index(min(loads))
        loads[lightest] += sizes[i]
        members[lightest].append(i)
    return [sorted(m) for m in members if m]


def selected_files(table, conditions: Sequence[tuple[str, str, object]],
                   partition_types: Mapping[str, object]) -> list[tuple[str, dict]]:
    """(path on the pyarrow filesystem, partition values) of each of ``table``'s files whose
    partition values meet the ``conditions`` on partition columns (the others are left to rows)."""
    _, root = _filesystem(table.location)
    on_partitions = [c for c in conditions if c[0] in table.partition_columns]
    below = len(table.location.rstrip("/")) + 1
    files = []
    for path in table.files:
        values = partition_values(path, table.location)
        mask = arrow_mask(on_partitions, _partition_arrays(values, partition_types).__getitem__)
        if mask is None or mask[0].as_py():
            files.append((root.rstrip("/") + "/" + path[below:], values))
    return files


def score_parquet_file(open_file: Callable[[], object], source: str, partition: Mapping[str, object],
                       types: Mapping[str, object], conditions: Sequence[tuple[str, str, object]],
                       scorer: Scorer, keep: Sequence[str], masked_experts: bool = False,
                       rows_per_read: int = 65536) -> Iterator:
    """Scored record batches of the selected rows of one Parquet data file.

    partition: the file's one-row partition arrays (columns absent from the file); types: the
    table's Arrow type of every column read (keep columns are cast to it, a column the file lacks
    reads as nulls, as Spark reads it). Row groups are read in two steps: the columns of
    ``conditions`` first, and the rest only when a row is selected (a file holds one event_date,
    hence one split: scoring the test split skips the others' files after one small column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout = scorer.layout
    ids = [*layout.categorical, "slot_id"]
    on_rows = [c for c in conditions if c[0] not in partition]
    parquet = pq.ParquetFile(open_file())
    present = set(parquet.schema_arrow.names)

    def reader(batch, rows: int):
        def column(name: str):
            if name in partition:
                return partition[name].take(np.zeros(rows, dtype=np.int64))
            if name in present:
                return batch.column(name)
            return pa.nulls(rows, types[name])
        return column

    filter_columns = [c for c in dict.fromkeys(name for name, _, _ in on_rows) if c in present]
    read = [c for c in dict.fromkeys([*keep, *ids, *layout.dense]) if c in present]
    for group in range(parquet.num_row_groups):
        mask = None
        if on_rows:
            selectors = parquet.read_row_group(group, columns=filter_columns, use_threads=False).combine_chunks()
            mask = arrow_mask(on_rows, reader(selectors, parquet.metadata.row_group(group).num_rows))
            if isinstance(mask, pa.ChunkedArray):
                mask = mask.combine_chunks()
            if not mask.true_count:
                continue
            if mask.true_count == len(mask):
                mask = None                     # the usual case (one split per file): no copy
        offset = 0
        for batch in parquet.iter_batches(rows_per_read, row_groups=[group], columns=read, use_threads=False):
            if mask is not None:
                rows = batch.num_rows
                batch = batch.filter(mask.slice(offset, rows))
                offset += rows
            if not batch.num_rows:
                continue
            column_of = reader(batch, batch.num_rows)
            for name in ids:
                if column_of(name).null_count:
                    raise ValueError(f"feature column {name} holds null(s) in {source}; ids must be set")

            def column(name: str, dtype, column_of=column_of) -> np.ndarray:
                return column_of(name).to_numpy(zero_copy_only=False).astype(dtype, copy=False)  # nulls -> NaN

            scored = scorer.score(column("slot_id", np.int64), column, batch.num_rows, masked_experts)
            kept = {name: column_of(name).cast(types[name]) for name in keep}
            yield scored_batch(kept, scored, scorer, masked_experts)


def score_files(spark, table, artifact_dir, slot_shift: Mapping[str, float],
                temperatures: Mapping[str, float] | None, keep: Sequence[str],
                selection: RowSelection = RowSelection(), masked_experts: bool = False,
                rows_per_batch: int = 4096):
    """``score_dataframe``'s output for the selected rows of a Delta snapshot whose files are
    trusted (``raw_files_untrusted(table)`` is None), read by the Python tasks themselves.

    Files are pruned on the driver by their partition values; the rest are grouped by bytes into
    tasks (``TASK_BYTES``, at least one per core), and each task reads, filters and scores its
    files and returns only ``keep`` and the score columns."""
    from pyspark.sql.pandas.types import to_arrow_type

    shared = _broadcast(spark, artifact_dir, slot_shift, temperatures)
    schema = table.schema
    absent_columns = [c for c in shared.artifact.input_columns if c not in schema.names]
    if absent_columns:
        raise ValueError(f"rows to score in {table.name} lack feature column(s) {absent_columns}")
    conditions = selection.conditions(schema.names)
    read = dict.fromkeys([*keep, *(name for name, _, _ in conditions), *shared.artifact.input_columns])
    types = {name: to_arrow_type(schema[name].dataType) for name in read}
    partition_types = {name: to_arrow_type(schema[name].dataType) for name in table.partition_columns}

    filesystem, _ = _filesystem(table.location)
    files = selected_files(table, conditions, partition_types)
    sizes = [info.size for info in filesystem.get_file_info([p for p, _ in files])]
    tasks = min(len(files), max(spark.sparkContext.defaultParallelism, math.ceil(sum(sizes) / TASK_BYTES)))
    groups = [[files[i] for i in members] for members in file_groups(sizes, tasks)]
    keep = list(keep)
    location = table.location

    def predict(batches: Iterator) -> Iterator:
        scorer = _worker_scorer(shared, rows_per_batch)
        worker_fs, _ = _filesystem(location)
        for batch in batches:
            for group in batch.column(0).to_pylist():
                for path, values in groups[group]:
                    yield from score_parquet_file(_opener(worker_fs, path), path,
                                                  _partition_arrays(values, partition_types), types,
                                                  conditions, scorer, keep, masked_experts)

    # One partition per group of files, built in the JVM (spark.range): the tasks' only input is
    # their group's number; neither a shuffle nor a Python RDD stands before the scoring.
    return spark.range(0, len(groups), 1, max(1, len(groups))).mapInArrow(
        predict, _output_schema([schema[c] for c in keep], masked_experts))


def _opener(filesystem, path: str) -> Callable[[], object]:
    return lambda: filesystem.open_input_file(path)


def score_table(spark, table, artifact_dir, slot_shift: Mapping[str, float],
                temperatures: Mapping[str, float] | None, keep: Sequence[str],
                selection: RowSelection = RowSelection(), masked_experts: bool = False,
                rows_per_batch: int = 4096):
    """The selected rows of ``table`` (``core.tables.table_files``: one Delta snapshot's files, or
    whatever else the name holds), scored: their ``keep`` columns plus task, logit, pctr_raw, pctr
    (+ masked_pctr), as ``score_dataframe`` gives them.

    Read from the snapshot's Parquet files by the Python tasks (``score_files``) when the files
    can be trusted; otherwise (``raw_files_untrusted`` says why, in one warning) through Spark's
    reader and ``score_dataframe``, which applies deletion vectors, column mapping and views."""
    from core import tables

    reason = raw_files_untrusted(table)
    if reason is None:
        return score_files(spark, table, artifact_dir, slot_shift, temperatures, keep, selection,
                           masked_experts, rows_per_batch)
    log.warning("scoring %s through Spark's reader (score_dataframe), not its Parquet files: %s",
                table.name, reason)
    rows = selection.where(tables.read_table(spark, table.name, table.version))
    return score_dataframe(rows, artifact_dir, slot_shift, temperatures, keep, masked_experts, rows_per_batch)
