"""Great Expectations gates on real tables, dq_results, and the validate job's exit code."""
from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pyspark.sql import functions as F

from core import tables
from features.expectations import data_docs_index, gx_project
from features.pipeline import build_features, validate_tables
from jobs import validate as validate_job
from tests.helpers import built_lake, generated, write_raw

START, END = dt.date(2026, 1, 1), dt.date(2026, 1, 4)


def _page_text(url: str) -> str:
    """A Data Docs page's visible text, whitespace collapsed."""
    markup = Path(urlparse(url).path).read_text()
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup)))


@pytest.fixture(scope="module")
def good_lake(spark, make_config):
    cfg = make_config(database="quality_suite")
    built_lake(spark, cfg, START, 4, 3000, "q-build")
    return cfg


def test_clean_tables_pass_every_expectation_and_results_are_recorded(spark, good_lake):
    cfg = good_lake
    results, versions = validate_tables(spark, cfg, START, END, "q-ok")
    assert all(r.success for r in results), "\n".join(r.summary() for r in results)
    dq = spark.table(cfg.table(tables.DQ_RESULTS)).where("run_id = 'q-ok'")
    assert dq.count() == sum(len(r.outcomes) for r in results) >= 25
    assert dq.where("NOT success").count() == 0
    assert set(versions) == {"impressions", "features"}
    names = {r.expectation for r in dq.select("expectation").collect()}
    assert any("one build's partition" in n for n in names)
    assert any("expect_column_pair_values_to_be_in_set" in n for n in names)
    # GX Data Docs: each suite's result page, and an index naming both suites and the run
    pages = {r.table: r.data_docs for r in dq.select("table", "data_docs").distinct().collect()}
    assert set(pages) == {cfg.table(tables.IMPRESSIONS), cfg.table(tables.FEATURES)}
    assert all("Status: Succeeded" in _page_text(page) and "Run Name q-ok" in _page_text(page)
               for page in pages.values())
    index = data_docs_index(gx_project(cfg)).read_text()
    assert all(f"{table.replace('.', '_')}_suite" in index for table in pages) and "q-ok" in index


def test_feature_gate_catches_modality_mismatch_a_day_of_two_builds_and_non_finite_values(spark, good_lake, fresh_db):
    cfg = good_lake
    broken_cfg = fresh_db()
    feats = spark.table(cfg.table(tables.FEATURES))
    corrupted = (feats
                 .withColumn("modality", F.when(F.col("slot") == "podcast_video", "audio").otherwise(F.col("modality")))
                 .withColumn("build_run_id", F.when((F.col("event_date") == START) & (F.col("label") == 1),
                                                    "another-build").otherwise(F.col("build_run_id")))
                 .withColumn("dense_ad_duration_s", F.when(F.col("slot") == "podcast", float("inf"))
                             .otherwise(F.col("dense_ad_duration_s"))))
    write_raw(spark.table(cfg.table(tables.IMPRESSIONS)), broken_cfg, START, END)
    tables.replace_date_range(corrupted, broken_cfg.table(tables.FEATURES), "event_date", START, END, ["event_date"])
    results, _ = validate_tables(spark, broken_cfg, START, END, "q-bad")
    raw_result, feature_result = results
    assert raw_result.success
    assert not feature_result.success
    failed = {(o.expectation.split(":")[0], o.column) for o in feature_result.outcomes if not o.success}
    assert ("expect_column_pair_values_to_be_in_set", "slot,modality") in failed
    assert ("unexpected_rows_expectation", None) in failed
    assert ("expect_column_values_to_be_between", "dense_ad_duration_s") in failed
    assert len(failed) == 3
    summary = feature_result.summary()
    assert "FAILED expect_column_pair_values_to_be_in_set [slot,modality]" in summary
    page = _page_text(feature_result.data_docs)            # the Data Docs page says the same
    assert "Status: Failed" in page and "Unsuccessful Expectations 3" in page and "Run Name q-bad" in page


def test_validate_job_exits_non_zero_with_a_readable_summary(spark, good_lake, fresh_db, base_overrides, capsys):
    cfg = fresh_db()
    logs = generated(spark, cfg, START, 4, 500)
    # 2% of rows with an unknown slot: more than raw_max_bad_fraction allows
    noisy = logs.withColumn("slot", F.when(F.col("impression_id").endswith("0"), "car_radio")
                            .otherwise(F.col("slot")))
    write_raw(noisy, cfg, START, END)
    build_features(spark, cfg, START, END, "noisy-build")
    argv = [*(f"--set={o}" for o in base_overrides), f"--set=database={cfg.database}",
            "--start-date", "2026-01-01", "--end-date", "2026-01-04", "--run-id", "gate"]
    code = validate_job.cli(argv)
    err = capsys.readouterr().err
    assert code == 3                           # the exit code the README and the DAG promise
    assert "QUALITY GATE FAILED" in err
    assert "expect_column_values_to_be_in_set [slot]" in err
    run = spark.table(cfg.table(tables.RUNS)).where("run_id = 'gate'").first()
    assert run.status == "failed" and run.job == "validate"
    # the quarantine holds every bad row: accepted + quarantined = input
    quarantined = spark.table(cfg.table(tables.QUARANTINE)).count()
    assert quarantined == noisy.where("slot = 'car_radio'").count() > 0
    assert spark.table(cfg.table(tables.FEATURES)).where("event_date >= '2026-01-03'").count() + \
        spark.table(cfg.table(tables.QUARANTINE)).where("event_date >= '2026-01-03'").count() == 1000


def test_malformed_config_makes_a_job_exit_2_naming_the_key(capsys):
    code = validate_job.cli(["--set", "quality.positive_rate_bounds.max=1.5"])
    assert code == 2
    assert "'quality.positive_rate_bounds.max' must be in [0, 1], got 1.5" in capsys.readouterr().err
