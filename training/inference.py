"""Batch inference inside Spark: a trained artifact scores feature rows in Python tasks.

The model's weights and description are broadcast once; every Python worker builds the model
once per broadcast (cached by content hash) and scores Arrow record batches as numpy views (no
pandas on the Spark path). Output per row: the ``keep`` columns, the own-task logit, the
down-sampling-corrected probability ``pctr_raw`` and, given temperatures, the calibrated ``pctr``.
The same code (``Scorer``) scores the validation and test splits for evaluation and candidate
tables for production scoring, so what is evaluated is what is served; ``score_rows`` is its
pandas face.

Two ways in, one scorer:

- ``training.table_scoring.score_table`` (jobs/score.py, calibrate_evaluate): Python tasks read
  one Delta snapshot's own Parquet files, so the rows never cross the JVM -> Python boundary.
- ``score_dataframe`` (here): any DataFrame, its rows converted to Arrow by the JVM and scored in
  ``mapInArrow``; ``score_table`` falls back to it where the files alone do not say what the
  snapshot holds.
"""
from __future__ import annotations

import gc
import hashlib
import io
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.artifact import ModelArtifact, read_artifact
from training.data import FeatureLayout

log = logging.getLogger(__name__)

_MODELS: dict[str, tuple] = {}          # payload sha256 -> (model, ModelArtifact), per Python worker

SCORE_COLUMNS = ("task", "logit", "pctr_raw", "pctr")


def artifact_payload(artifact_dir, artifact: ModelArtifact) -> bytes:
    """model.pt + model.json of an artifact (``artifact``: its model.json, already read) as one
    broadcastable blob; the weights are loaded into the model here, so a mismatch fails on the driver."""
    from training.artifact import DESCRIPTION_FILE, WEIGHTS_FILE

    model = artifact.build(torch.load(Path(artifact_dir) / WEIGHTS_FILE, weights_only=True))
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
    rows at a time, so memory stays bounded whatever the input batch size. An id the model has
    no embedding row for (a value admitted to the vocabulary after it was trained) scores as
    OOV (``FeatureLayout.categorical_inputs``), so one model scores any later day.
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
    blob = artifact_payload(artifact_dir, artifact)
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
