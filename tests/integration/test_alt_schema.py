"""The raw-log schema and slot taxonomy are configuration: a differently shaped log builds
features and passes the gates with only a conf file changed."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import functions as F

from core import tables
from features.pipeline import build_features, validate_tables
from features.sampling import every_stratum
from tests.helpers import write_raw

ALT = Path(__file__).resolve().parents[1] / "data" / "alt_log.yaml"
START, END = dt.date(2026, 5, 1), dt.date(2026, 5, 4)


def _alt_log(spark, n_per_day=300):
    slots = F.element_at(F.array(F.lit("radio_spot"), F.lit("radio_spot"), F.lit("audiobook_spot"),
                                 F.lit("clip")), (F.col("id") % 4 + 1).cast("int"))
    day = (F.col("id") / n_per_day).cast("int")
    return spark.range(0, 4 * n_per_day).select(
        F.concat(F.lit("x-"), F.col("id").cast("string")).alias("imp_uuid"),
        F.timestamp_seconds(F.unix_timestamp(F.lit("2026-05-01 00:00:00")) + day * 86400
                            + (F.col("id") % n_per_day) * 60).alias("ts"),
        F.date_add(F.lit(START), day).alias("dt"),
        slots.alias("placement"),
        ((F.col("id") % 7) == 0).alias("is_click"),
        F.concat(F.lit("L"), (F.col("id") % 23).cast("string")).alias("listener"),
        F.concat(F.lit("C"), (F.col("id") % 5).cast("string")).alias("creative"),
        F.when(F.col("id") % 2 == 0, "SE").otherwise("NO").alias("market"),
        F.when(F.col("id") % 3 == 0, "ios").otherwise("android").alias("os"),
        (96.0 + (F.col("id") % 4) * 64).alias("bitrate_kbps"),
    )


def test_a_differently_shaped_log_builds_features_from_conf_alone(spark, fresh_db):
    cfg = fresh_db(extra_files=[ALT])
    assert cfg.taxonomy.slot_names == ("radio_spot", "audiobook_spot", "clip")
    write_raw(_alt_log(spark), cfg, START, END)
    result = build_features(spark, cfg, START, END, "alt")
    assert result.quarantined_rows == 0 and result.accepted_rows == 1200

    feats = spark.table(cfg.table(tables.FEATURES))
    expected_cats = {"cat_listener", "cat_creative", "cat_market", "cat_os"}
    assert expected_cats <= set(feats.columns)
    assert "dense_bitrate_kbps" in feats.columns and "dense_hist_ad_clicks_3d" in feats.columns
    assert not any(c in feats.columns for c in ("cat_user_id", "dense_ad_duration_s", "true_ctr"))
    modality = {r.slot: r.modality for r in feats.select("slot", "modality").distinct().collect()}
    assert modality == {"radio_spot": "audio", "audiobook_spot": "audio", "clip": "video"}
    assert {r.label for r in feats.select("label").distinct().collect()} == {0, 1}
    # only radio_spot negatives are down-sampled in this conf, when a training set is drawn: the
    # store keeps every accepted row of every slot
    rates = every_stratum(cfg.taxonomy.slot_names, cfg.sampling.rates)
    assert rates[("radio_spot", 0)] == 0.5 and rates[("clip", 0)] == 1.0
    assert feats.count() == result.accepted_rows
    results, _ = validate_tables(spark, cfg, START, END, "alt-dq")
    assert all(r.success for r in results), "\n".join(r.summary() for r in results)


def test_rows_of_the_other_taxonomy_are_quarantined_under_this_one(spark, fresh_db):
    cfg = fresh_db(extra_files=[ALT])
    log = _alt_log(spark, 100).withColumn(
        "placement", F.when(F.col("imp_uuid") == "x-5", "stream_audio").otherwise(F.col("placement")))
    write_raw(log, cfg, START, END)
    build_features(spark, cfg, START, END, "alt-bad")
    q = spark.table(cfg.table(tables.QUARANTINE)).collect()
    assert [(r.impression_id, r.reason) for r in q] == [
        ("x-5", "placement: 'stream_audio' is not in the taxonomy")]
