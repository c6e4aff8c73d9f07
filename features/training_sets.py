"""A training set assembled by Spark from the daily feature table (core/training_sets.py defines
it): the window's train days down-sampled per (slot, label) stratum, every validation and test
row as it is.

The draw is a per-impression uniform of (seed, impression id), compared with the stratum's
rate, so a re-run keeps the same rows, and sets that differ only in rates are nested: a row kept
at rate 0.1 is kept at 0.3. Kept train rows carry ``sample_weight = 1 / rate``."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.feature_table import TEST, TRAIN, VALIDATION
from core.training_sets import TrainingSetSpec
from features.sampling import stratified_downsample


def train_rows(features: DataFrame, spec: TrainingSetSpec) -> DataFrame:
    """The set's train rows of ``features`` (one pinned snapshot of the daily table: the caller
    reads ``spec.features_version``): the train days, down-sampled, with ``set_id``, ``split``
    and ``sample_weight``."""
    days = _days(features, spec, TRAIN)
    sampled = stratified_downsample(days.withColumn("split", F.lit(TRAIN)), spec.rate_of, spec.seed)
    return sampled.withColumn("set_id", F.lit(spec.set_id))


def evaluation_rows(features: DataFrame, spec: TrainingSetSpec, split: str) -> DataFrame:
    """The set's validation or test rows: every row of those days, ``sample_weight`` 1."""
    if split not in (VALIDATION, TEST):
        raise ValueError(f"evaluation rows are validation or test rows, not {split!r}")
    return _days(features, spec, split).withColumns({"split": F.lit(split), "sample_weight": F.lit(1.0),
                                                     "set_id": F.lit(spec.set_id)})


def _days(features: DataFrame, spec: TrainingSetSpec, split: str) -> DataFrame:
    first, last = spec.window.bounds(split)
    return features.where(F.col("event_date").between(F.lit(first), F.lit(last)))

