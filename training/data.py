"""Petastorm over a pinned Delta snapshot of ``training_sets`` (a training set's train rows) or
``features`` (validation days), sharded per worker.

The reader never lists a directory: it gets exactly the Parquet files of one Delta version
(files removed by later overwrites stay on disk and must not be read), restricted to a day
range (and a training set) by partition pruning. Files are assigned to workers by a
deterministic row-balanced plan, so shards are disjoint, their union is the selection, and
every worker runs the same number of steps.

Batches arrive as torch tensors built column-wise (no per-row Python work): categorical
int64 (B, F + S) (the feature table's ids, then the slot inputs; an id >= the model's
cardinality is OOV), dense float32 (B, D) (raw: the model standardises them), label, slot index,
task index, sample weight (B,) (1 where the files have no ``sample_weight``: validation days).
"""
from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.feature_table import model_input_columns

OOV = 0                         # the id of every value a model has no row for


# ----------------------------------------------------------------------------- snapshot
@dataclass(frozen=True)
class DataFile:
    url: str
    rows: int


@dataclass(frozen=True)
class FeatureLayout:
    """Which feature-table columns feed the model, each categorical's vocabulary size, and the
    dense features' statistics over the training window's train days (the model standardises
    its raw inputs with them: ``training.model.DenseStandardizer``).

    The model's categorical inputs are the ``categorical`` columns followed by the slot
    inputs: the slot and/or its taxonomy attributes (``slot_features``), derived from
    ``slot_id`` through ``slot_feature_ids`` (per input, the 1-based id of each slot's value).
    """
    categorical: tuple[str, ...]
    dense: tuple[str, ...]
    cardinalities: tuple[int, ...]       # max index + 1 (index 0 = OOV), categorical then slot inputs
    slots: tuple[str, ...]               # slot names by slot_id (as the build stored them)
    slot_features: tuple[str, ...] = ()
    slot_feature_ids: tuple[tuple[int, ...], ...] = ()
    dense_mean: tuple[float, ...] = ()   # per dense column (empty: not standardised)
    dense_std: tuple[float, ...] = ()

    @property
    def columns(self) -> list[str]:
        """What the reader reads (and ``sample_weight`` where the files hold it)."""
        return [*self.categorical, *self.dense, "label", "slot_id"]

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the model's categorical inputs, in order."""
        return (*self.categorical, *(f"slot_input_{f}" for f in self.slot_features))

    def categorical_inputs(self, columns: Sequence[np.ndarray], slot_id: np.ndarray) -> np.ndarray:
        """(n, F + S) int64: the ``categorical`` columns, then the slot inputs of each row. An id
        the model has no row for (admitted after it was trained: >= its cardinality) is OOV, 0."""
        parts = []
        for c, size in zip(columns, self.cardinalities):
            ids = np.asarray(c, dtype=np.int64)                                 # (n,)
            # one comparison: a negative id viewed unsigned is above any size
            parts.append(np.where(ids.view(np.uint64) < size, ids, OOV))
        slot_id = np.asarray(slot_id, dtype=np.int64)
        parts += [np.asarray(ids, dtype=np.int64)[slot_id] for ids in self.slot_feature_ids]
        return np.stack(parts, axis=1)


@dataclass(frozen=True)
class Snapshot:
    """The data files of one Delta version of a table holding exactly its rows of the days
    ``start``..``end`` (and of one training set, ``set_id``): every file is of one partition."""
    table: str
    version: int
    start: dt.date
    end: dt.date
    set_id: str | None
    files: tuple[DataFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def describe(self) -> str:
        return f"{self.table}@{self.version} {self.start}..{self.end}" + (f" of set {self.set_id}" * bool(self.set_id))


def load_snapshot(spark, table: str, version: int, start: dt.date, end: dt.date,
                  set_id: str | None = None) -> Snapshot:
    """The files (and row counts) of ``table`` at Delta ``version`` holding the days
    [start, end] (of training set ``set_id``): found by partition pruning, so a file holds
    selected rows only (the table must be partitioned by event_date, and set_id when given)."""
    from pyspark.sql import functions as F

    partitions = spark.sql(f"DESCRIBE DETAIL {table}").first()["partitionColumns"] or []
    needed = ["event_date", *(["set_id"] if set_id is not None else [])]
    if [c for c in needed if c not in partitions]:
        raise ValueError(f"{table} is partitioned by {list(partitions)}, not {needed}: its files could hold "
                         "rows of other days; rebuild it")
    where = F.col("event_date").between(F.lit(start), F.lit(end))
    if set_id is not None:
        where = where & (F.col("set_id") == set_id)
    per_file = (spark.sql(f"SELECT * FROM {table} VERSION AS OF {int(version)}").where(where)
                .select(F.input_file_name().alias("file")).groupBy("file").count().collect())
    snapshot = Snapshot(table, int(version), start, end, set_id,
                        tuple(sorted((DataFile(r.file, int(r["count"])) for r in per_file), key=lambda f: f.url)))
    if not snapshot.files:
        raise ValueError(f"{snapshot.describe()}: no rows")
    return snapshot


def feature_layout(spark, cfg, train_days, source: str, slot_features: Sequence[str] = ("slot",)) -> FeatureLayout:
    """Column order from conf; vocabulary sizes from the persistent vocabularies (an id admitted
    later is OOV to this model); the slot inputs from the taxonomy the build stored as
    ``slot_id``; the dense statistics of ``train_days`` (a DataFrame: the training window's train
    days of the pinned features snapshot, before down-sampling; ``source`` names it)."""
    from pyspark.sql import functions as F

    from core import tables
    from features.vocabulary import cardinality
    from training.model import pooled_moments

    categorical, dense = model_input_columns(cfg)
    caps = cfg.features.vocabulary_caps
    state = tables.read_table(spark, cfg.table(tables.VOCABULARIES))
    tops = {r.feature: r.top for r in state.groupBy("feature").agg(F.max("index").alias("top")).collect()}
    cardinalities = tuple(cardinality(state, c, caps) if c in caps else (tops.get(c) or OOV) + 1
                          for c in cfg.schema.categorical)
    moments = [F.count(c) for c in dense] + [F.avg(c) for c in dense] + [F.var_pop(c) for c in dense]
    groups = train_days.groupBy("slot", "slot_id").agg(F.count(F.lit(1)), *moments).collect()    # one scan
    slots = cfg.taxonomy.slot_names
    stale = [(r.slot, r.slot_id) for r in groups if r.slot_id is None or r.slot_id >= len(slots)
             or slots[r.slot_id] != r.slot]
    if stale:
        raise ValueError(f"{source} was built with another slot taxonomy (slot, slot_id) {sorted(stale)}; "
                         f"conf/slots.yaml orders {', '.join(slots)}: rebuild the features")
    d = len(dense)
    stats = [pooled_moments([(r[3 + i], r[3 + d + i], r[3 + 2 * d + i]) for r in groups]) for i in range(d)]
    slot_feature_ids = tuple(cfg.taxonomy.input_ids(f) for f in slot_features)
    slot_cardinalities = tuple(len(cfg.taxonomy.input_values(f)) + 1 for f in slot_features)
    return FeatureLayout(categorical, dense, cardinalities + slot_cardinalities, slots, tuple(slot_features),
                         slot_feature_ids, tuple(m for m, _ in stats), tuple(s for _, s in stats))


# ----------------------------------------------------------------------------- sharding
@dataclass(frozen=True)
class ShardPlan:
    shards: tuple[tuple[DataFile, ...], ...]

    def rows(self, shard: int) -> int:
        return sum(f.rows for f in self.shards[shard])

    def steps_per_epoch(self, batch_size: int) -> int:
        """Steps every worker runs per epoch: enough for the largest shard."""
        return max(math.ceil(self.rows(i) / batch_size) for i in range(len(self.shards)))


def plan_shards(files: Sequence[DataFile], shard_count: int) -> ShardPlan:
    """Greedy row balancing: biggest file first onto the lightest shard (ties by index)."""
    if shard_count < 1:
        raise ValueError("shard_count must be >= 1")
    if len(files) < shard_count:
        raise ValueError(f"{len(files)} file(s) cannot feed {shard_count} workers; "
                         "use fewer workers or write more files (spark.shuffle_partitions)")
    loads = [0] * shard_count
    shards: list[list[DataFile]] = [[] for _ in range(shard_count)]
    for f in sorted(files, key=lambda f: (-f.rows, f.url)):
        i = min(range(shard_count), key=lambda k: (loads[k], k))
        shards[i].append(f)
        loads[i] += f.rows
    return ShardPlan(tuple(tuple(sorted(s, key=lambda f: f.url)) for s in shards))


# ----------------------------------------------------------------------------- reading
def guard_petastorm_end_of_data_race() -> None:
    """Petastorm's ThreadPool reads its per-worker counters, then ``ventilator.completed()``;
    when the ventilator finishes in between, the reader stops early and silently drops the
    last row groups (seen on small datasets in ~10-15% of runs). Reading ``completed()``
    first closes the window."""
    from petastorm.workers_pool.thread_pool import ThreadPool

    if getattr(ThreadPool, "_camoe_end_of_data_guard", False):
        return
    unguarded = ThreadPool.all_workers_done

    def all_workers_done(self):
        if self._ventilator is not None and not self._ventilator.completed():
            return False
        return unguarded(self)

    ThreadPool.all_workers_done = all_workers_done
    ThreadPool._camoe_end_of_data_guard = True


def make_reader(files: Sequence[DataFile], columns: Sequence[str], num_epochs: int = 1,
                seed: int | None = None, workers: int = 2, shuffle: bool = True):
    """A Petastorm batch reader over exactly ``files`` (never a directory listing)."""
    from petastorm import make_batch_reader

    guard_petastorm_end_of_data_race()
    # Petastorm 0.13 calls pyarrow APIs deprecated since pyarrow 5-11: a dozen FutureWarnings per
    # reader that name petastorm's lines, not ours (pyarrow is pinned where they still work)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
    # convert_early_to_numpy: Arrow -> numpy happens in the worker threads, in parallel,
    # instead of column by column on the consuming thread (1.5x rows/s measured here)
    return make_batch_reader([f.url for f in files], schema_fields=list(columns), num_epochs=num_epochs,
                             seed=seed, shuffle_row_groups=shuffle, reader_pool_type="thread",
                             workers_count=workers, convert_early_to_numpy=True)


@dataclass
class Batch:
    categorical: torch.Tensor     # (B, F + S) int64: categorical columns, then slot inputs
    dense: torch.Tensor           # (B, D) float32
    label: torch.Tensor           # (B,) float32
    slot: torch.Tensor            # (B,) int64
    task: torch.Tensor            # (B,) int64
    weight: torch.Tensor          # (B,) float32, sample_weight = 1 / sampling rate

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in
                       (self.categorical, self.dense, self.label, self.slot, self.task, self.weight)))

    def pin_memory(self) -> Batch:
        return Batch(*(t.pin_memory() for t in
                       (self.categorical, self.dense, self.label, self.slot, self.task, self.weight)))


def _chunk_tensors(chunk, layout: FeatureLayout) -> tuple:
    """One Petastorm row-group chunk (numpy columns) as (categorical, dense, label, slot, weight)."""
    categorical = torch.from_numpy(layout.categorical_inputs(
        [getattr(chunk, c) for c in layout.categorical], chunk.slot_id))                # (n, F + S)
    n = categorical.shape[0]
    dense = (torch.from_numpy(np.stack([getattr(chunk, c) for c in layout.dense], axis=1)
                              .astype(np.float32, copy=False)) if layout.dense else torch.zeros(n, 0))  # (n, D)
    weight = getattr(chunk, "sample_weight", None)                   # absent: validation days, unsampled
    return (categorical, dense, torch.from_numpy(chunk.label.astype(np.float32)),
            torch.from_numpy(chunk.slot_id.astype(np.int64)),
            torch.ones(n) if weight is None else torch.from_numpy(weight.astype(np.float32)))


def iterate_batches(files: Sequence[DataFile], layout: FeatureLayout, slot_to_task, batch_size: int,
                    seed: int | None = None, workers: int = 2, shuffle_buffer: int = 0,
                    shuffle: bool = True) -> Iterator[Batch]:
    """One pass over ``files`` as Batches (the last one may be short).

    Each row-group chunk is stacked into tensors once; batches are views into it, and only a
    batch straddling two chunks is copied. With ``shuffle_buffer`` > 0 rows are mixed across
    chunks in a buffer of that many rows (torch's RNG: ``torch.manual_seed`` reproduces it)."""
    buffer_rows = shuffle_buffer if (shuffle and shuffle_buffer) else 0
    carry: list[torch.Tensor] | None = None        # < batch_size rows left from earlier chunks
    pending: list[tuple] = []                      # shuffle buffer (chunks not yet mixed)
    pending_rows = 0

    def batches_from(columns: list) -> Iterator[Batch]:
        nonlocal carry
        rows = columns[0].shape[0]
        start = 0
        if carry is not None:                      # complete the straddling batch first
            need = batch_size - carry[0].shape[0]
            columns_head = [c[:need] for c in columns]
            carry = [torch.cat([a, b]) for a, b in zip(carry, columns_head)]
            start = min(need, rows)
            if carry[0].shape[0] < batch_size:
                return
            yield _batch(carry, slot_to_task)
            carry = None
        full_end = start + (rows - start) // batch_size * batch_size
        for offset in range(start, full_end, batch_size):
            yield _batch([c[offset:offset + batch_size] for c in columns], slot_to_task)
        if full_end < rows:
            carry = [c[full_end:] for c in columns]

    def mixed() -> list:
        columns = [torch.cat(parts) for parts in zip(*pending)]
        order = torch.randperm(columns[0].shape[0])
        return [c[order] for c in columns]

    # not ``with reader``: its __exit__ prints "Cache cleanup complete." to stdout on every
    # pass (no cache is configured; stop + join is the rest of what it does)
    columns = [*layout.columns, *(["sample_weight"] if files and _has_column(files[0], "sample_weight") else [])]
    reader = make_reader(files, columns, num_epochs=1, seed=seed, workers=workers, shuffle=shuffle)
    try:
        for chunk in reader:
            tensors = _chunk_tensors(chunk, layout)
            if not buffer_rows:
                yield from batches_from(list(tensors))
                continue
            pending.append(tensors)
            pending_rows += tensors[0].shape[0]
            if pending_rows >= buffer_rows:
                yield from batches_from(mixed())
                pending, pending_rows = [], 0
    finally:
        reader.stop()
        reader.join()
    if pending:
        yield from batches_from(mixed())
    if carry is not None and carry[0].shape[0]:
        yield _batch(carry, slot_to_task)


def _has_column(file: DataFile, name: str) -> bool:
    """Whether ``file``'s Parquet schema holds ``name`` (its footer only)."""
    import pyarrow.parquet as pq

    from core.delta_versions import filesystem_and_path

    filesystem, path = filesystem_and_path(file.url)
    with filesystem.open_input_file(path) as handle:
        return name in pq.read_schema(handle).names


def _batch(columns: list, slot_to_task) -> Batch:
    categorical, dense, label, slot, weight = columns
    return Batch(categorical, dense, label, slot, slot_to_task[slot], weight)
