"""A team's own log, driven by its conf folder alone (conf/examples/starter: no generator:, no
auction:, no true_ctr): ingest, build, gate, train, calibrate/evaluate, score and experiments
exit 0 and say what they left out; the jobs that need a missing section say which."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from calibration.slot_tables import NO_POSITIVES_NOTE
from core import tables
from jobs import experiments, generate_logs, ingest, pipeline, replay_auction
from tests.helpers import STARTER_CONF, own_log

START, DAYS = dt.date(2026, 3, 2), 5
LAST = START + dt.timedelta(days=DAYS - 1)


def test_a_teams_log_runs_every_job_from_its_conf_folder_alone(spark, fresh_db, base_overrides, tmp_path, capsys):
    cfg = fresh_db(conf_dir=STARTER_CONF)
    log = own_log(spark, START, DAYS, 2500)
    # no embedded_music click on the test day: its ranking metrics are undefined and say so
    silent = (F.col("slot") == "embedded_music") & (F.to_date("event_ts") == F.lit(LAST))
    log = log.withColumn("clicked", F.when(silent, F.lit(0)).otherwise(F.col("clicked")))
    garbled = log.limit(1).withColumn("impression_id", F.lit("garbled")).withColumn("ad_duration_s", F.lit("n/a"))
    log.withColumn("ad_duration_s", F.col("ad_duration_s").cast("string")).unionByName(garbled) \
        .write.csv(str(tmp_path / "raw"), header=True)
    flags = ["--conf-dir", str(STARTER_CONF), *[f"--set={o}" for o in base_overrides],
             f"--set=database={cfg.database}"]

    code = pipeline.main([*flags, "--steps", "ingest,build_features,validate,train,calibrate_evaluate,score",
                          "--step-args", f"ingest=--source {tmp_path / 'raw'} --format csv",
                          "--step-args", "train=--backend local --num-proc 1 --epochs 1 --model camoe"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert "no column event_date: each row's day is the date of its event_ts" in out.err
    assert f"ingested {START}..{LAST}" in out.err and "1 quarantined" in out.err
    assert "|slot |stream_audio" in out.out and "auc_pr_of_oracle" not in out.out
    assert "slot embedded_music" in out.err and NO_POSITIVES_NOTE in out.err
    # the jobs that created features and predictions gave them their CHECK constraints
    for table in (tables.FEATURES, tables.PREDICTIONS):
        assert tables.ensure_constraints(spark, cfg.table(table)) == [], table
    metrics = spark.table(cfg.table(tables.SLOT_METRICS))
    assert not {"oracle_auc_pr", "excess_log_loss", "auc_pr_ceiling_fraction"} & set(metrics.columns)
    notes = {r.slot: r.note for r in metrics.where("level = 'slot' AND calibrated").collect()}
    assert notes["embedded_music"] == NO_POSITIVES_NOTE and notes["stream_audio"] is None
    # the build replaced its own rejects of these days, not the ingest's
    quarantined = spark.table(cfg.table(tables.QUARANTINE)).collect()
    assert [(r.impression_id, r.stage, r.reason) for r in quarantined] == [
        ("garbled", f"ingest:{tmp_path / 'raw'}", "ad_duration_s: 'n/a' is not a number")]

    # the ablation set on a log without true_ctr: AUC-PR intervals, no label-free claims
    code = experiments.cli([*flags, "--models", "wide_deep", "camoe", "--set=experiments.seeds=[17]",
                            "--set=experiments.epochs=1", "--set=experiments.bootstrap_resamples=20",
                            "--report", str(tmp_path / "report.md")])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert "camoe" in report and "excess_log_loss" not in report

    # the jobs that need a section this conf leaves out say which, and exit 2 (not retried)
    for job, module in (("replay_auction", replay_auction), ("generate_logs", generate_logs)):
        code = module.cli(flags)
        err = capsys.readouterr().err
        assert code == 2 and f"{job} needs a '{'auction' if job == 'replay_auction' else 'generator'}:' section" \
            in err, err
    code = ingest.cli(flags)
    err = capsys.readouterr().err
    assert code == 2 and "ingest: usage error: --source and --format are required" in err, err
