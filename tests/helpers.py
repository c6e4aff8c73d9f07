"""Helpers for tests that need raw logs in a table."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from core import tables
from core.config import Config
from features.synthetic import generate_impressions


def write_raw(df: DataFrame, cfg: Config, start: dt.date, end: dt.date) -> int:
    return tables.replace_date_range(df, cfg.table(tables.IMPRESSIONS), cfg.schema.date, start, end,
                                     [cfg.schema.date])


def generated(spark: SparkSession, cfg: Config, start: dt.date, days: int, rows_per_day: int) -> DataFrame:
    return generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=start, days=days,
                                rows_per_day=rows_per_day)


def recreate_database(spark: SparkSession, cfg: Config) -> None:
    spark.sql(f"DROP DATABASE IF EXISTS {cfg.database} CASCADE")
    spark.sql(f"CREATE DATABASE {cfg.database}")


def built_lake(spark: SparkSession, cfg: Config, start: dt.date, days: int, rows_per_day: int,
               run_id: str, burn_in_days: int | None = None):
    """A fresh database holding generated raw logs and the features built from them.

    ``burn_in_days`` (default: features.history_days) of logs before ``start`` are generated
    too; the build aggregates them (entity_daily only), so the first featurised day sees a full
    history window while the store's features (and a training window clipped to them) start on
    ``start``, as in ``make demo``."""
    from features.pipeline import build_features

    recreate_database(spark, cfg)
    tables.note_minted_run_id(run_id)     # a new database holds no rows of it, as of an id a job mints
    burn_in = cfg.features.history_days if burn_in_days is None else burn_in_days
    first = start - dt.timedelta(days=burn_in)
    end = start + dt.timedelta(days=days - 1)
    write_raw(generated(spark, cfg, first, days + burn_in, rows_per_day), cfg, first, end)
    return build_features(spark, cfg, start, end, run_id)


ROOT = Path(__file__).resolve().parent.parent
STARTER_CONF = ROOT / "conf" / "examples" / "starter"
MOVIELENS_CONF = ROOT / "conf" / "examples" / "movielens"
MOVIELENS_DATA = ROOT / "data" / "movielens"             # make movielens-data
# conf/examples/starter/schema.yaml's columns: a log as an ad server writes it (no event_date,
# no true_ctr)
STARTER_COLUMNS = ("impression_id", "event_ts", "slot", "clicked", "user_id", "ad_id", "campaign_id",
                   "advertiser_id", "platform", "device", "country", "hour", "ad_duration_s")


def own_log(spark: SparkSession, start: dt.date, days: int, rows_per_day: int) -> DataFrame:
    """A generated log cut to the starter conf's columns: what a team's own log looks like."""
    from core.config import load_config

    default = load_config()
    return generate_impressions(spark, default.generator, default.taxonomy, start_date=start, days=days,
                                rows_per_day=rows_per_day).select(*STARTER_COLUMNS)
