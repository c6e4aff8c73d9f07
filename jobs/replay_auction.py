"""Replay the test days as GSP auctions on the paper's Final Bid (eq. 1) for two models.

Reads each model's predictions (the latest run per model by scored_at unless
--prediction-runs names them) and the raw impressions of those days plus the trailing-CTR
window before them, runs calibration/auction.py and writes per (model, modality) breaks,
served, expected clicks, CTR, spend, eCPC and the % change vs the first model to
camoe.auction_replay; prints the paper's Table 6 analogue.

    spark-submit jobs/replay_auction.py [--models wide_deep camoe] [--prediction-runs RUN_A RUN_B]
"""
from __future__ import annotations

import sys

from jobs._cli import log, main


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs=2, metavar=("BASELINE", "CANDIDATE"),
                        help="the two models (conf/models.yaml names) to replay; the first is the "
                             "baseline (default: auction.models)")
    parser.add_argument("--prediction-runs", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="predictions.run_id of each model (default: each model's latest run by scored_at)")


def run(spark, cfg, args, record) -> int:
    import datetime as dt
    import math

    from pyspark.sql import functions as F

    from calibration import auction
    from core import tables
    from core.columns import lookup

    settings = cfg.require("auction", "replay_auction", "the replayed auctions' bids, pacing, pods and the raw "
                           "log's focus and campaign columns")
    schema = cfg.schema
    models = list(args.models or settings.models)
    for name in models:
        cfg.model(name)                      # unknown names fail with the list of models
    if len(set(models)) != 2:
        raise ValueError(f"--models needs two different models, got {models}")
    pred_table = cfg.table(tables.PREDICTIONS)
    if not tables.table_exists(spark, pred_table):
        raise auction.MissingPredictions(f"{pred_table} does not exist; run jobs/calibrate_evaluate.py for "
                                         f"model(s) {', '.join(models)} first")
    predictions = spark.table(pred_table)
    runs = auction.prediction_runs(predictions, models, args.prediction_runs, pred_table)
    chosen = None
    for model, r in runs.items():
        rows = predictions.where((F.col("model") == model) & (F.col("run_id") == r["run_id"]))
        chosen = rows if chosen is None else chosen.unionByName(rows)
    first, last = chosen.agg(F.min("event_date"), F.max("event_date")).first()
    history_start = first - dt.timedelta(days=math.ceil(settings.trailing_ctr_hours / 24))

    imp_table = cfg.table(tables.IMPRESSIONS)
    impressions = tables.read_date_range(spark, imp_table, schema.date, history_start, last)
    missing = [c for c in (settings.focus_column, settings.campaign_column) if c not in impressions.columns]
    if missing:
        raise ValueError(f"{imp_table} has no column(s) {missing} (auction.focus_column / auction.campaign_column)")
    outcome = "true_ctr" if "true_ctr" in impressions.columns else schema.label
    if outcome != "true_ctr":
        log.warning("%s has no true_ctr: clicks are the logged %s of served impressions", imp_table, schema.label)
    replayed = F.col(schema.date) >= F.lit(first)
    history = impressions.where(~replayed)
    prior = auction.mean_ctr(history, schema) if history.limit(1).count() else None
    with_b = auction.trailing_ctr(impressions, settings, schema, prior).where(replayed)
    candidates = auction.campaign_terms(auction.with_modality(with_b, schema, cfg.taxonomy.modality_of()), settings)

    summary, auctioned = auction.replay(candidates, chosen.select("model", schema.id, "pctr"), settings, schema,
                                        models, outcome)
    auctioned.persist()
    try:
        model_run = lookup(F.col("model"), {m: r["model_run_id"] for m, r in runs.items()})
        pred_run = lookup(F.col("model"), {m: r["run_id"] for m, r in runs.items()})
        out = summary.select(F.lit(record.run_id).alias("run_id"), "model", model_run.alias("model_run_id"),
                             pred_run.alias("prediction_run_id"), F.lit(first).alias("start_date"),
                             F.lit(last).alias("end_date"), *auction.SUMMARY_COLUMNS[1:],
                             F.current_timestamp().alias("replayed_at"))
        version = tables.replace_run_rows(out, cfg.table(tables.AUCTION_REPLAY), record.run_id)
    finally:
        auctioned.unpersist()
    rows = [r.asDict() for r in spark.table(cfg.table(tables.AUCTION_REPLAY))
            .where(F.col("run_id") == record.run_id).collect()]
    order = {m: i for i, m in enumerate(models)}
    rows.sort(key=lambda r: (order[r["model"]], r["modality"] == auction.ALL, r["modality"]))
    if not any(r["served"] for r in rows):
        raise ValueError(f"no impression was served: no breaks formed from {first}..{last} "
                         "(check auction.serve_focus and the predictions' impressions)")

    record.inputs.update({tables.PREDICTIONS: tables.latest_version(spark, pred_table),
                          tables.IMPRESSIONS: tables.latest_version(spark, imp_table),
                          "prediction_runs": {m: r["run_id"] for m, r in runs.items()},
                          "model_runs": {m: r["model_run_id"] for m, r in runs.items()}})
    record.outputs[tables.AUCTION_REPLAY] = version
    record.metrics.update({
        "models": models, "dates": [str(first), str(last)], "outcome": outcome,
        "replay": {f"{r['model']}/{r['modality']}": {k: r[k] for k in ("breaks", "served", "clicks", "ctr", "ecpc")}
                   for r in rows},
        "ctr_change_pct": {r["modality"]: r["ctr_change_pct"] for r in rows if r["model"] == models[1]},
        "ecpc_change_pct": {r["modality"]: r["ecpc_change_pct"] for r in rows if r["model"] == models[1]}})
    print(f"Auction replay {first}..{last}: {models[1]} vs {models[0]} (prediction runs "
          + ", ".join(f"{m}={r['run_id']}" for m, r in runs.items()) + f"); clicks = sum of {outcome} of served ads")
    print(auction.markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main("replay_auction", __doc__, add_arguments, run))
