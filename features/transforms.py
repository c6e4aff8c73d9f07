"""Feature transforms: the taxonomy's columns, encoding by a vocabulary, dense values, the
smoothed CTR of the history features. Pure functions of DataFrames."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.columns import lookup
from core.config import Config
from core.feature_table import HISTORY_FEATURES, categorical_column, dense_column, history_feature_names

OOV_INDEX = 0
_CTR_PRIOR_IMPRESSIONS = 20.0   # smoothing: ctr = (clicks + prior_ctr * k) / (impressions + k)
_CTR_PRIOR = 0.01
# Vocabularies up to this many values are broadcast to every task (~100 bytes a value).
BROADCAST_MAX_VALUES = 2_000_000


def log1p_feature_names(cfg: Config) -> tuple[str, ...]:
    counts = tuple(name for stem, name in zip(HISTORY_FEATURES, history_feature_names(cfg))
                   if not stem.endswith("_ctr"))
    return cfg.features.log1p_dense + counts


# ----------------------------------------------------------------------------- taxonomy
def with_modality(df: DataFrame, cfg: Config, slot_col: str) -> DataFrame:
    return df.withColumn("modality", lookup(F.col(slot_col), cfg.taxonomy.modality_of()))


def slot_id_column(slot: Column, cfg: Config) -> Column:
    """The slot's position in the taxonomy, stored so readers need no string decoding."""
    return lookup(slot, {name: i for i, name in enumerate(cfg.taxonomy.slot_names)}).cast("int")


# ----------------------------------------------------------------------------- history
def day_start_second(day: dt.date) -> int:
    """Epoch second of ``day``'s UTC midnight."""
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def smoothed_ctr(clicks: str, impressions: str) -> Column:
    k = _CTR_PRIOR_IMPRESSIONS
    return (F.col(clicks) + _CTR_PRIOR * k) / (F.col(impressions) + k)


# ----------------------------------------------------------------------------- vocabularies
def feature_value_pairs(columns: tuple[str, ...]) -> Column:
    """One (feature, value) struct per column of a row, exploded: the value cast to string, the
    key vocabularies are stored under."""
    return F.explode(F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value"))
                               for c in columns]))


def encode_categoricals(df: DataFrame, vocabularies: DataFrame, columns: tuple[str, ...],
                        date_col: str | None = None) -> DataFrame:
    """Add ``cat_<column>`` int ids from ``vocabularies``; unseen or null values get 0. With
    ``date_col``, ``vocabularies`` also has ``admitted_on`` (features/vocabulary.py): a row gets
    a value's id only from that day on, 0 before it and where its date is null.

    One pass over ``df``: each column probes a hash table of its vocabulary broadcast once
    per build, so the rows are never shuffled (a shuffle join per column moved every row 15
    times). A vocabulary too large to broadcast (over ``BROADCAST_MAX_VALUES``) is joined
    the shuffled way. The ids are added in one projection after the joins: each DataFrame call
    re-analyses the whole plan, and a withColumn and a drop per join took ~2/3 of this
    function's ~9 s of driver time on the build's plan (tests/integration/test_features.py's
    lake, measured in-process).
    """
    sizes = {r["feature"]: r["count"] for r in
             vocabularies.where(F.col("feature").isin(list(columns)))
             .groupBy("feature").agg(F.count(F.lit(1)).alias("count")).collect()}
    kept = ("v", "i") if date_col is None else ("v", "i", "a")
    out = df
    for c in columns:
        vocab = vocabularies.where(F.col("feature") == c).select(
            F.col("value").alias(f"_v_{c}"), F.col("index").alias(f"_i_{c}"),
            *([] if date_col is None else [F.col("admitted_on").alias(f"_a_{c}")]))
        if sizes.get(c, 0) <= BROADCAST_MAX_VALUES:
            vocab = F.broadcast(vocab)
        out = out.join(vocab, F.col(c).cast("string") == F.col(f"_v_{c}"), "left")
    day = None if date_col is None else F.col(date_col).cast("date")
    ids = {categorical_column(c): F.coalesce(F.col(f"_i_{c}") if day is None else
                                             F.when(F.col(f"_a_{c}") <= day, F.col(f"_i_{c}")),
                                             F.lit(OOV_INDEX)).cast("int") for c in columns}
    return out.withColumns(ids).drop(*[f"_{k}_{c}" for c in columns for k in kept])


# ----------------------------------------------------------------------------- dense
def _pre_scale(column: str, log1p: tuple[str, ...]) -> Column:
    v = F.col(column).cast("double")
    return F.log1p(F.greatest(v, F.lit(0.0))) if column in log1p else v


def dense_values(df: DataFrame, columns: tuple[str, ...], log1p: tuple[str, ...]) -> DataFrame:
    """Add ``dense_<column>``: the value, or log1p of it clipped at 0 for ``log1p`` columns, as
    float, in one projection. Never standardised here: the model carries its own statistics."""
    return df.withColumns({dense_column(c): _pre_scale(c, log1p).cast("float") for c in columns})
