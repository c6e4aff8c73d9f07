"""One auction replay run (jobs/replay_auction.py): two models' predictions of the test days and
the raw impressions before them through calibration/auction.py's GSP auctions, written to
``auction_replay``."""
from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass

from pyspark.sql import functions as F

from calibration import auction
from core import tables
from core.columns import lookup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuctionReplaySummary:
    """What one replay read and wrote; ``rows`` are its auction_replay rows, baseline model first."""
    models: tuple[str, str]              # (baseline, candidate)
    first: dt.date
    last: dt.date
    outcome: str                         # true_ctr, or the logged label on a log without it
    prediction_runs: dict[str, str]      # model -> predictions.run_id
    model_runs: dict[str, str]           # model -> training run id
    inputs: dict[str, int]               # table -> Delta version read
    version: int                         # auction_replay's version written
    rows: list[dict]


def replay_run(spark, cfg, run_id: str, models=None, prediction_run_ids=None) -> AuctionReplaySummary:
    """Replay ``models`` (default ``auction.models``) on their predictions (default: each model's
    latest predictions run) and write the per (model, modality) rows under ``run_id``."""
    settings = cfg.require("auction", "replay_auction", "the replayed auctions' bids, pacing, pods and the raw "
                           "log's focus and campaign columns")
    schema = cfg.schema
    models = list(models or settings.models)
    for name in models:
        cfg.model(name)                      # unknown names fail with the list of models
    if len(set(models)) != 2:
        raise ValueError(f"--models needs two different models, got {models}")
    pred_table = cfg.table(tables.PREDICTIONS)
    if not tables.table_exists(spark, pred_table):
        raise auction.MissingPredictions(f"{pred_table} does not exist; run jobs/calibrate_evaluate.py for "
                                         f"model(s) {', '.join(models)} first")
    predictions = spark.table(pred_table)
    runs = auction.prediction_runs(predictions, models, prediction_run_ids, pred_table)
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
        out = summary.select(F.lit(run_id).alias("run_id"), "model", model_run.alias("model_run_id"),
                             pred_run.alias("prediction_run_id"), F.lit(first).alias("start_date"),
                             F.lit(last).alias("end_date"), *auction.SUMMARY_COLUMNS[1:],
                             F.current_timestamp().alias("replayed_at"))
        version = tables.replace_run_rows(out, cfg.table(tables.AUCTION_REPLAY), run_id)
    finally:
        auctioned.unpersist()
    written = spark.table(cfg.table(tables.AUCTION_REPLAY)).where(F.col("run_id") == run_id)
    rows = [r.asDict() for r in written.collect()]
    order = {m: i for i, m in enumerate(models)}
    rows.sort(key=lambda r: (order[r["model"]], r["modality"] == auction.ALL, r["modality"]))
    if not any(r["served"] for r in rows):
        raise ValueError(f"no impression was served: no breaks formed from {first}..{last} "
                         "(check auction.serve_focus and the predictions' impressions)")
    return AuctionReplaySummary(
        models=(models[0], models[1]), first=first, last=last, outcome=outcome,
        prediction_runs={m: r["run_id"] for m, r in runs.items()},
        model_runs={m: r["model_run_id"] for m, r in runs.items()},
        inputs={tables.PREDICTIONS: tables.latest_version(spark, pred_table),
                tables.IMPRESSIONS: tables.latest_version(spark, imp_table)},
        version=version, rows=rows)
