"""What a failed job leaves behind (jobs/_cli.py run_recorded: its runs row, its exit code, its
one line) and the ingest lookups that would multiply or lose raw rows, on the suite's session."""
from __future__ import annotations

import argparse
import json
import re

import pytest

from core import lineage, tables
from core.config_data import IngestSettings, Lookup
from features.ingest import IngestConfigError, read_lookup
from jobs._cli import UsageError, run_recorded, setup_logging


def _runs_row(spark, cfg, run_id: str):
    rows = spark.table(cfg.table(tables.RUNS)).where(f"run_id = '{run_id}'").collect()
    assert len(rows) == 1, rows
    return rows[0]


def test_a_failed_job_is_recorded_failed_with_its_error_and_exits_by_kind(spark, fresh_db, capsys):
    """A job failure: exit 1, one line, a runs row ``failed`` with the error and what the job had
    recorded. A usage error found while running: exit 2, recorded the same. Catches a
    run_recorded that records nothing on failure, records ``succeeded``, or loses the error."""
    cfg = fresh_db()

    def lost_executor(spark, cfg, args, record):
        record.inputs["features"] = 3
        raise RuntimeError("the executor was lost")

    def unknown_table(spark, cfg, args, record):
        raise UsageError("--candidates nope: candidates table nope does not exist")

    code = run_recorded(spark, cfg, "train", lost_executor, argparse.Namespace(run_id="broken-1", conf_dir=None))
    assert (code, capsys.readouterr().err) == (1, "train: FAILED (RuntimeError): the executor was lost\n")
    row = _runs_row(spark, cfg, "broken-1")
    assert (row.job, row.status) == ("train", "failed")
    assert json.loads(row.metrics) == {"error": "RuntimeError: the executor was lost"}
    assert json.loads(row.inputs) == {"features": 3}

    code = run_recorded(spark, cfg, "score", unknown_table, argparse.Namespace(run_id="broken-2", conf_dir=None))
    assert (code, capsys.readouterr().err) == (
        2, "score: usage error: --candidates nope: candidates table nope does not exist\n")
    assert _runs_row(spark, cfg, "broken-2").status == "failed"


def test_a_failure_to_record_does_not_hide_the_jobs_own_error(spark, fresh_db, capsys, monkeypatch):
    """The runs table cannot be written (a metastore gone mid-run): the job's own error is still
    the last line and the exit code, the recording failure a warning before it. Catches a
    _try_record that lets its exception replace the original one."""
    cfg = fresh_db()
    setup_logging("train")             # the job's own stderr stream, as main() sets it up

    def metastore_gone(*args, **kwargs):
        raise RuntimeError("metastore connection refused")

    monkeypatch.setattr(lineage, "record_run", metastore_gone)

    def lost_executor(spark, cfg, args, record):
        raise RuntimeError("the executor was lost")

    code = run_recorded(spark, cfg, "train", lost_executor, argparse.Namespace(run_id="broken-3", conf_dir=None))
    err = capsys.readouterr().err
    assert code == 1 and err.splitlines()[-1] == "train: FAILED (RuntimeError): the executor was lost", err
    assert re.search(r"^\d\d:\d\d:\d\d WARNING train: could not record the failed run$", err, re.M), err
    assert "RuntimeError: metastore connection refused" in err
    monkeypatch.undo()
    assert not tables.table_exists(spark, cfg.table(tables.RUNS))


def _lookup(path, key) -> Lookup:
    return Lookup(name="ads", location=str(path), format="parquet", options={}, key=tuple(key))


def test_an_ingest_lookup_with_a_repeated_or_missing_key_is_refused_naming_it(spark, tmp_path):
    """A key held twice would multiply the raw rows it matches; a key column the file lacks would
    match none. Both are configuration errors (exit 2) naming the lookup, the key and examples.
    Catches a read_lookup that drops its uniqueness or column check."""
    path = tmp_path / "ads.parquet"
    spark.createDataFrame([("a1", "music"), ("a2", "news"), ("a1", "sports")], "ad_id string, category string") \
        .write.parquet(str(path))
    settings = IngestSettings(source="conf/schema.yaml")
    where = r"^conf/schema\.yaml: ingest\.lookups\.ads: "
    with pytest.raises(IngestConfigError, match=where + r"key ad_id is not unique in \S+ads\.parquet \(e\.g\. a1\): "
                                                        r"each raw row must match at most one row$"):
        read_lookup(spark, _lookup(path, ["ad_id"]), settings)
    with pytest.raises(IngestConfigError, match=where + r"key column\(s\) creative_id not in \S+ads\.parquet "
                                                        r"\(it has: ad_id, category\)$"):
        read_lookup(spark, _lookup(path, ["creative_id"]), settings)
    assert read_lookup(spark, _lookup(path, ["ad_id", "category"]), settings).count() == 3
