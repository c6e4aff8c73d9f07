"""jobs/ingest.py's library: a team's raw log in any of four formats becomes the same typed
``impressions`` rows; values that do not fit the schema are quarantined naming the column and
the value, with the row as it was read; re-ingesting replaces, never duplicates."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from core import tables
from features.ingest import RawSource, SourceError, ingest
from features.quality import SchemaDriftError
from tests.helpers import STARTER_COLUMNS, STARTER_CONF, own_log

START = dt.date(2026, 3, 2)


def _impressions(spark, cfg):
    return spark.table(cfg.table(tables.IMPRESSIONS))


def test_every_source_format_ingests_the_same_typed_rows(spark, fresh_db, tmp_path):
    cfg = fresh_db(conf_dir=STARTER_CONF)
    log = own_log(spark, START, 2, 400).cache()
    log.write.csv(str(tmp_path / "csv"), header=True)
    log.write.json(str(tmp_path / "json"))
    log.write.parquet(str(tmp_path / "parquet"))
    log.write.format("delta").save(str(tmp_path / "delta"))
    log.write.format("delta").saveAsTable(f"{cfg.database}.raw_log")
    sources = [RawSource(str(tmp_path / "csv"), "csv"), RawSource(str(tmp_path / "json"), "json"),
               RawSource(str(tmp_path / "parquet") + "/*.parquet", "parquet"),
               RawSource(str(tmp_path / "delta"), "delta"), RawSource(f"{cfg.database}.raw_log", "delta")]
    seen = []
    for source in sources:
        result = ingest(spark, cfg, source, f"ingest-{source.format}")
        assert (result.start, result.end, result.read_rows, result.accepted_rows, result.quarantined_rows) == \
            (START, START + dt.timedelta(days=1), 800, 800, 0), source
        assert result.derived_date                     # the starter's log has no event_date: from event_ts
        rows = _impressions(spark, cfg).orderBy("impression_id").collect()
        seen.append([tuple(r) for r in rows])
    assert all(s == seen[0] for s in seen[1:])          # CSV's text reads back as Parquet's types
    kinds = dict(_impressions(spark, cfg).dtypes)
    assert (kinds["event_ts"], kinds["event_date"], kinds["clicked"], kinds["ad_duration_s"], kinds["hour"]) == \
        ("timestamp", "date", "int", "double", "string")
    first = log.orderBy("impression_id").first()
    assert seen[0][0][:4] == (first.impression_id, first.event_ts, first.slot, first.clicked)
    assert not tables.table_exists(spark, cfg.table(tables.QUARANTINE))   # nothing rejected, nothing written


CSV_HEADER = ",".join(STARTER_COLUMNS + ("event_date",))
GOOD = "sa-{id},{ts},stream_audio,{click},u1,ad1,c1,adv1,ios,phone,SE,7,{duration},{day}"


def _row(id: str, ts: str = "2026-03-02 10:00:00", click: str = "0", duration: str = "30",
         day: str = "2026-03-02", slot: str = "stream_audio") -> str:
    return GOOD.format(id=id, ts=ts, click=click, duration=duration, day=day).replace("stream_audio", slot)


def test_bad_values_are_quarantined_naming_column_and_value_and_reingesting_replaces(spark, fresh_db, tmp_path):
    cfg = fresh_db(conf_dir=STARTER_CONF)
    first = tmp_path / "day1.csv"
    first.write_text("\n".join([
        CSV_HEADER,
        _row("1"),
        _row("2", click="true"),                                  # a boolean label is a label
        _row("3", ts="yesterday"),
        _row("4", click="maybe"),
        _row("5", duration="12s"),
        _row("6", slot="car_radio"),
        _row("1", ts="2026-03-02 11:00:00"),                      # the same id again, later
        _row("8", day="2026-03-0x"),                              # no day: quarantined, not lost
        _row("9", ts="2026-03-03 09:00:00", day="2026-03-03"),
    ]) + "\n")
    source = RawSource(str(first), "csv")
    result = ingest(spark, cfg, source, "ingest-1")
    assert (result.read_rows, result.accepted_rows, result.quarantined_rows, result.derived_date) == (9, 3, 6, False)
    accepted = {r.impression_id: r.clicked for r in _impressions(spark, cfg).collect()}
    assert accepted == {"sa-1": 0, "sa-2": 1, "sa-9": 0}
    quarantine = spark.table(cfg.table(tables.QUARANTINE))
    reasons = {r.impression_id: (r.reason, r.event_date, r.stage) for r in quarantine.collect()}
    stage = f"ingest:{first}"
    assert reasons == {
        "sa-3": ("event_ts: 'yesterday' is not a timestamp", START, stage),
        "sa-4": ("clicked: 'maybe' is not 0 or 1", START, stage),
        "sa-5": ("ad_duration_s: '12s' is not a number", START, stage),
        "sa-6": ("slot: 'car_radio' is not in the taxonomy", START, stage),
        "sa-1": ("impression_id: duplicate of an earlier row", START, stage),
        "sa-8": ("event_date: '2026-03-0x' is not a date (YYYY-MM-DD)", None, stage),
    }
    # the row as it was read, text and all
    raw = json.loads(quarantine.where("impression_id = 'sa-4'").first().raw_row)
    assert raw["clicked"] == "maybe" and raw["event_ts"] == "2026-03-02 10:00:00"

    # again: the same rows, nothing twice
    ingest(spark, cfg, source, "ingest-2")
    assert _impressions(spark, cfg).count() == 3 and quarantine.count() == 6
    # another day from another file: the first file's days and rejects stay
    second = tmp_path / "day3.csv"
    second.write_text("\n".join([CSV_HEADER, _row("10", ts="2026-03-04 08:00:00", day="2026-03-04"),
                                 _row("11", ts="2026-03-04 08:00:00", day="2026-03-04", click="2")]) + "\n")
    result = ingest(spark, cfg, RawSource(str(second), "csv"), "ingest-3")
    assert (result.start, result.accepted_rows, result.quarantined_rows) == (dt.date(2026, 3, 4), 1, 1)
    assert _impressions(spark, cfg).count() == 4 and quarantine.count() == 7
    assert quarantine.where("impression_id = 'sa-11'").first().reason == "clicked: '2' is not 0 or 1"
    # a range narrower than the file: only its days are replaced
    result = ingest(spark, cfg, source, "ingest-4", START + dt.timedelta(days=1), START + dt.timedelta(days=1))
    assert result.accepted_rows == 1 and _impressions(spark, cfg).count() == 4


def test_an_unreadable_source_is_named(spark, fresh_db, tmp_path):
    cfg = fresh_db(conf_dir=STARTER_CONF)
    with pytest.raises(SourceError, match=r"raw source .*nowhere\.parquet does not exist"):
        ingest(spark, cfg, RawSource(str(tmp_path / "nowhere.parquet"), "parquet"), "x")
    with pytest.raises(SourceError, match=r"Delta table 'analytics\.ad_logs' does not exist"):
        ingest(spark, cfg, RawSource("analytics.ad_logs", "delta"), "x")
    with pytest.raises(SourceError, match=r"unknown source format 'avro'"):
        ingest(spark, cfg, RawSource(str(tmp_path), "avro"), "x")
    own_log(spark, START, 1, 50).drop("ad_duration_s").write.parquet(str(tmp_path / "old"))
    with pytest.raises(SchemaDriftError, match=r"raw source .*old: missing column\(s\) ad_duration_s"):
        ingest(spark, cfg, RawSource(str(tmp_path / "old"), "parquet"), "x")
    own_log(spark, START, 1, 50).withColumn("bid", F.lit(1.0)).write.parquet(str(tmp_path / "new"))
    with pytest.raises(SchemaDriftError, match=r"unexpected column\(s\) bid"):
        ingest(spark, cfg, RawSource(str(tmp_path / "new"), "parquet"), "x")
    assert not tables.table_exists(spark, cfg.table(tables.IMPRESSIONS))     # nothing was half-written
