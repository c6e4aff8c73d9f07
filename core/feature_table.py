"""The feature table's contract, the one place that names its columns: what build_features writes
and what training, validation, calibration and scoring read.

``features`` is a daily store: one partition per event_date, written once, holding every accepted
row of the day (no split, nothing dropped by sampling). A categorical raw column ``c`` becomes its
persistent vocabulary id ``cat_c`` (features/vocabulary.py: a value keeps its id in every later
build); a dense one, and each point-in-time history aggregate, ``dense_<name>``, the raw value or
its log1p (``features.transforms.log1p_feature_names``), never standardised: the model carries
its own statistics. The model reads the categorical columns in conf/schema.yaml's order, then the
dense ones (raw dense first, then history), then the slot id.

A training set (``training_sets``, chosen at training time: core/training_sets.py) holds the
down-sampled rows of its train days in the same columns plus ``TRAINING_SET_COLUMNS``."""
from __future__ import annotations

from core.config import Config

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = SPLITS
# Point-in-time aggregates (features/transforms.py computes them): dense feature stems.
HISTORY_FEATURES = ("user_modality_impressions", "user_modality_clicks", "user_modality_ctr",
                    "ad_impressions", "ad_clicks", "ad_ctr")
# the columns before the features, and after them (passthrough columns go between)
LEADING = ("impression_id", "event_ts", "slot", "slot_id", "modality", "label")
TRAILING = ("build_run_id", "event_date")
# what a training set's rows add: 1 / the row's down-sampling rate, and the set's id
TRAINING_SET_COLUMNS = ("sample_weight", "set_id")
# a column only the layout before the daily store wrote (one split per day, baked in)
OLD_LAYOUT_COLUMN = "split"


def old_layout_error(table: str) -> str:
    """The one line that refuses a features table written by the layout before the daily store."""
    return (f"{table} was written by an older feature layout (one build per window, with a "
            f"'{OLD_LAYOUT_COLUMN}' column); drop it and its build's tables and rebuild every day: "
            f"spark-submit jobs/maintain.py --drop-old-layout, then jobs/build_features.py for the days")


def categorical_column(raw: str) -> str:
    return f"cat_{raw}"


def dense_column(name: str) -> str:
    return f"dense_{name}"


def history_feature_names(cfg: Config) -> tuple[str, ...]:
    return tuple(f"hist_{stem}_{cfg.features.history_days}d" for stem in HISTORY_FEATURES)


def dense_feature_names(cfg: Config) -> tuple[str, ...]:
    """Every dense input of the model, in column order (raw dense first, then history)."""
    return cfg.schema.dense + history_feature_names(cfg)


def model_input_columns(cfg: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(categorical, dense) feature-table columns, in the order the model reads them."""
    return (tuple(categorical_column(c) for c in cfg.schema.categorical),
            tuple(dense_column(c) for c in dense_feature_names(cfg)))


def feature_columns(cfg: Config, present: list[str]) -> list[str]:
    """The features table's column order; passthrough columns where the log has them."""
    categorical, dense = model_input_columns(cfg)
    passthrough = [c for c in cfg.schema.passthrough if c in present]
    return [*LEADING, *categorical, *dense, *passthrough, *TRAILING]
