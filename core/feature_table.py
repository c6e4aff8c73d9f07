"""The feature table's contract, the one place that names its columns: what build_features writes
and what training, validation, calibration and scoring read.

A categorical raw column ``c`` becomes the vocabulary index ``cat_c``; a dense one, and each
point-in-time history aggregate, the standardised ``dense_<name>``. The model reads the
categorical columns in conf/schema.yaml's order, then the dense ones (raw dense first, then
history), then the slot id."""
from __future__ import annotations

from core.config import Config

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = SPLITS
# Point-in-time aggregates (features/transforms.py computes them): dense feature stems.
HISTORY_FEATURES = ("user_modality_impressions", "user_modality_clicks", "user_modality_ctr",
                    "ad_impressions", "ad_clicks", "ad_ctr")
# the columns before the features, and after them (passthrough columns go between)
LEADING = ("impression_id", "event_ts", "split", "slot", "slot_id", "modality", "label")
TRAILING = ("build_run_id", "event_date")


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
    return [*LEADING, *categorical, *dense, "sample_weight", *passthrough, *TRAILING]
