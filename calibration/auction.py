"""Offline auction replay: the paper's Final Bid (eq. 1) in a generalised second-price auction.

The paper (section 5, Table 6) bids with

    final_bid = min((o / (1 + p)) * (c / b), o)                                     (eq. 1)

c = the model's calibrated pCTR of the impression, b = the ad's trailing CTR (24 h), p = the
campaign's pacing multiplier, o = the campaign's max bid. This module replays the test days
as a sequence of ad breaks, runs a GSP auction per break on eq. 1 bids for two models and
estimates CTR and eCPC per modality, the metrics of the paper's Table 6.

Simplification (the synthetic log has one (user, ad) pair per impression, no candidate lists):
a break's candidates are real impressions of the same slot in the same ``break_seconds``
window, each with its own user, context and ``true_ctr``. The auction decides which of them
are *served*; the expected clicks of a served candidate are its ``true_ctr`` (the oracle click
probability, so the replay needs no counterfactual clicks). Audio pods are replayed on
out-of-focus impressions and video pods on in-focus ones (``auction.serve_focus``): the paper's
hard case, where audio ads play while the screen is off.

Steps, each a pure function over Spark DataFrames (the job does the I/O):

- ``trailing_ctr``: per impression, b = (clicks + k * m) / (impressions + k) of the same ad over
  [event_ts - trailing_ctr_hours, event_ts) (strictly before: an impression at the same
  instant does not count; one exactly trailing_ctr_hours earlier does), smoothed with
  k = trailing_ctr_prior pseudo-impressions at m, the slot's mean CTR (the global mean for a
  slot without rows), so a new ad gets a finite b.
- ``campaign_terms``: o = max_bid_median * exp(max_bid_sd * z) and p = pacing_max * u per
  campaign, z ~ N(0, 1) and u ~ U(0, 1) seeded hashes of the campaign id (a rerun repeats them).
- ``form_breaks``: rows of the served focus state, grouped by (slot, break window), ordered by
  a seeded hash of the impression id and cut into breaks of ``candidates_per_break``. The
  incomplete last break of a window is kept when it has more candidates than the pod has
  positions (so every served position still has a runner-up setting its price, and scarce
  slots such as podcast video, a few in-focus impressions per window, are not dropped
  wholesale); smaller remainders are dropped. Breaks never depend on the model.
- ``run_gsp``: per break, candidates ranked by bid (ties: a seeded hash of the impression id,
  identical for every model); the top ``positions[modality]`` with bid >= reserve win; the
  winner at rank k pays max(reserve, bid at rank k + 1), the reserve when there is no next bid.
- ``replay_summary`` / ``compare_models`` / ``replay``: breaks, served, expected clicks, CTR,
  spend and eCPC per (model, modality) and over all modalities, with the % change of CTR and
  eCPC of the candidate model vs the baseline.

Prices are per served impression in the units of the max bid (conf says CPM: divide spend and
eCPC by 1000 for currency); the % changes the paper reports do not depend on the unit.
A bid whose b is 0 (prior 0 and an ad without clicks) is capped at o, the limit of eq. 1.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.columns import lookup, uniform
from core.config import AuctionSettings, RawLogSchema
from features.synthetic import standard_normal

SUMMARY_COLUMNS = ("model", "modality", "breaks", "served", "clicks", "ctr", "spend", "ecpc",
                   "ctr_change_pct", "ecpc_change_pct")
ALL = "all"


class MissingPredictions(LookupError):
    """A replayed model has no rows in the predictions table."""


# ----------------------------------------------------------------------------- bids
def final_bid(max_bid: Column, pacing: Column, pctr: Column, trailing_ctr: Column) -> Column:
    """Eq. 1: min((o / (1 + p)) * (c / b), o); o when b is not positive (the limit b -> 0)."""
    uncapped = (max_bid / (F.lit(1.0) + pacing)) * (pctr / trailing_ctr)
    return F.when(trailing_ctr > 0, F.least(uncapped, max_bid)).otherwise(max_bid)


def campaign_terms(df: DataFrame, settings: AuctionSettings) -> DataFrame:
    """Adds ``max_bid`` (o, lognormal around max_bid_median) and ``pacing`` (p) per campaign."""
    campaign = F.col(settings.campaign_column)
    z = standard_normal(settings.seed, "max_bid", campaign)
    return df.withColumns({
        "max_bid": F.lit(settings.max_bid_median) * F.exp(F.lit(settings.max_bid_sd) * z),
        "pacing": F.lit(settings.pacing_max) * uniform(settings.seed, "pacing", campaign),
    })


def mean_ctr(impressions: DataFrame, schema: RawLogSchema) -> tuple[dict[str, float], float]:
    """(slot -> mean CTR, global mean CTR) of ``impressions``: the prior of ``trailing_ctr``."""
    rows = impressions.groupBy(schema.slot).agg(F.count(F.lit(1)).alias("n"),
                                                F.sum(F.col(schema.label)).alias("clicks")).collect()
    n = sum(r["n"] for r in rows)
    overall = sum(float(r["clicks"] or 0) for r in rows) / n if n else 0.0
    return {r[schema.slot]: float(r["clicks"] or 0) / r["n"] for r in rows}, overall


def trailing_ctr(impressions: DataFrame, settings: AuctionSettings, schema: RawLogSchema,
                 prior: tuple[Mapping[str, float], float] | None = None) -> DataFrame:
    """Adds ``trailing_ctr`` (b), ``trailing_impressions`` and ``trailing_clicks`` per row.

    The window is the same ad's rows in [ts - trailing_ctr_hours, ts), at microsecond
    resolution. ``prior`` is (slot -> mean CTR, global mean), by default ``mean_ctr`` of
    ``impressions``; pass the history's own means to keep the replayed days out of it.
    """
    slot_means, overall = prior if prior is not None else mean_ctr(impressions, schema)
    micros = F.unix_micros(F.col(schema.timestamp))
    window = (Window.partitionBy(schema.ad).orderBy(micros)
              .rangeBetween(-settings.trailing_ctr_hours * 3600 * 1_000_000, -1))
    n = F.count(F.lit(1)).over(window)
    clicks = F.coalesce(F.sum(F.col(schema.label).cast("double")).over(window), F.lit(0.0))
    k = float(settings.trailing_ctr_prior)
    mean = lookup(F.col(schema.slot), dict(slot_means), default=float(overall)) if slot_means \
        else F.lit(float(overall))
    out = impressions.withColumns({"trailing_impressions": n, "trailing_clicks": clicks})
    smoothed = (F.col("trailing_clicks") + F.lit(k) * mean) / (F.col("trailing_impressions") + F.lit(k))
    return out.withColumn("trailing_ctr", F.when((F.col("trailing_impressions") + F.lit(k)) > 0, smoothed))


# ----------------------------------------------------------------------------- breaks
def with_modality(df: DataFrame, schema: RawLogSchema, modality_of: Mapping[str, str]) -> DataFrame:
    return df.withColumn("modality", lookup(F.col(schema.slot), dict(modality_of)))


def form_breaks(candidates: DataFrame, settings: AuctionSettings, schema: RawLogSchema) -> DataFrame:
    """Served-focus rows cut into ad breaks; adds break_id, break_start, break_size.

    ``candidates`` needs the schema's id, timestamp and slot columns, ``modality`` and the
    focus column. See the module docstring for the cut and which remainders are kept.
    """
    focus = F.col(settings.focus_column)
    served = candidates.where(focus == lookup(F.col("modality"), dict(settings.serve_focus)))
    seconds = settings.break_seconds
    window_n = F.floor(F.unix_seconds(F.col(schema.timestamp)) / F.lit(seconds)).cast("long")
    served = served.withColumn("_window", window_n)
    order = Window.partitionBy(schema.slot, "_window").orderBy(
        uniform(settings.seed, "break_order", F.col(schema.id)), F.col(schema.id))
    chunk = F.floor((F.row_number().over(order) - 1) / F.lit(settings.candidates_per_break)).cast("long")
    served = served.withColumn("_chunk", chunk)
    size = F.count(F.lit(1)).over(Window.partitionBy(schema.slot, "_window", "_chunk"))
    positions = lookup(F.col("modality"), dict(settings.positions))
    return (served.withColumn("break_size", size)
            .where(F.col("break_size") > positions)
            .withColumns({"break_id": F.concat_ws(":", F.col(schema.slot), F.col("_window").cast("string"),
                                                  F.col("_chunk").cast("string")),
                          "break_start": F.timestamp_seconds(F.col("_window") * F.lit(seconds))})
            .drop("_window", "_chunk"))


# ----------------------------------------------------------------------------- auction
def run_gsp(breaks: DataFrame, bid_col: str, positions_by_modality: Mapping[str, int], reserve_price: float,
            seed: int = 0, id_col: str = "impression_id", by: Sequence[str] = ()) -> DataFrame:
    """A generalised second-price auction per (``by``..., break_id); adds rank, won, price.

    rank 1 is the highest bid (ties: a seeded hash of ``id_col``, then the id itself); the top
    positions[modality] with bid >= reserve win and pay max(reserve, the next rank's bid), the
    reserve when there is none. ``price`` is null for candidates that are not served.
    """
    bid = F.col(bid_col)
    window = Window.partitionBy(*by, "break_id").orderBy(
        bid.desc(), uniform(seed, "gsp_tie", F.col(id_col)), F.col(id_col))
    reserve = F.lit(float(reserve_price))
    positions = lookup(F.col("modality"), dict(positions_by_modality))
    ranked = breaks.withColumns({"rank": F.row_number().over(window), "_next_bid": F.lead(bid, 1).over(window)})
    won = (F.col("rank") <= positions) & (bid >= reserve)
    return (ranked.withColumn("won", won)
            .withColumn("price", F.when(F.col("won"), F.greatest(reserve, F.coalesce(F.col("_next_bid"), reserve))))
            .drop("_next_bid"))


def replay_summary(auctioned: DataFrame, outcome_col: str = "true_ctr", by: Sequence[str] = ("model",)) -> DataFrame:
    """Per (``by``..., modality) and per ``by`` over all modalities (modality 'all'):
    breaks, served, clicks (sum of ``outcome_col`` over winners), ctr, spend, ecpc."""
    won = F.col("won")
    aggs = [F.countDistinct("break_id").alias("breaks"),
            F.sum(won.cast("long")).alias("served"),
            F.sum(F.when(won, F.col(outcome_col).cast("double"))).alias("clicks"),
            F.sum(F.when(won, F.col("price"))).alias("spend")]
    per_modality = auctioned.groupBy(*by, "modality").agg(*aggs)
    overall = auctioned.groupBy(*by).agg(*aggs).withColumn("modality", F.lit(ALL))
    rows = per_modality.unionByName(overall)
    return rows.select(
        *by, "modality", "breaks", "served", F.coalesce(F.col("clicks"), F.lit(0.0)).alias("clicks"),
        F.when(F.col("served") > 0, F.col("clicks") / F.col("served")).alias("ctr"),
        F.coalesce(F.col("spend"), F.lit(0.0)).alias("spend"),
        F.when(F.col("clicks") > 0, F.col("spend") / F.col("clicks")).alias("ecpc"))


def compare_models(summary: DataFrame, models: Sequence[str]) -> DataFrame:
    """Adds ctr_change_pct and ecpc_change_pct: 100 * (x / baseline - 1), baseline = models[0]
    (null on the baseline's own rows and where the baseline's value is 0 or null)."""
    baseline = models[0]
    base = summary.where(F.col("model") == baseline).select(
        "modality", F.col("ctr").alias("_base_ctr"), F.col("ecpc").alias("_base_ecpc"))

    def change(col: str, base_col: str) -> Column:
        return F.when((F.col("model") != baseline) & (F.col(base_col) != 0),
                      F.lit(100.0) * (F.col(col) / F.col(base_col) - 1.0))

    order = lookup(F.col("model"), {m: i for i, m in enumerate(models)}, default=len(models))
    return (summary.join(base, "modality", "left")
            .withColumns({"ctr_change_pct": change("ctr", "_base_ctr"),
                          "ecpc_change_pct": change("ecpc", "_base_ecpc")})
            .orderBy(order, F.col("modality") == ALL, "modality")
            .select(*SUMMARY_COLUMNS))


def replay(candidates: DataFrame, predictions: DataFrame, settings: AuctionSettings, schema: RawLogSchema,
           models: Sequence[str], outcome_col: str = "true_ctr") -> tuple[DataFrame, DataFrame]:
    """Replays the same breaks for every model; returns (summary with % changes, auctioned rows).

    candidates: one row per impression with the schema's id/timestamp/slot columns, modality,
    the focus column, trailing_ctr, max_bid, pacing and ``outcome_col``. predictions: model,
    impression id and pctr of the chosen run of each model. Only impressions that every model
    scored become candidates, so the breaks (which never depend on the model) are identical.
    """
    models = list(models)
    preds = predictions.where(F.col("model").isin(models)).select("model", schema.id, "pctr")
    scored_by_all = (preds.groupBy(schema.id).agg(F.countDistinct("model").alias("_models"))
                     .where(F.col("_models") == len(models)).select(schema.id))
    breaks = form_breaks(candidates.join(scored_by_all, schema.id, "left_semi"), settings, schema)
    bids = breaks.join(preds, schema.id).withColumn(
        "final_bid", final_bid(F.col("max_bid"), F.col("pacing"), F.col("pctr"), F.col("trailing_ctr")))
    auctioned = run_gsp(bids, "final_bid", settings.positions, settings.reserve_price, settings.seed,
                        schema.id, by=("model",))
    return compare_models(replay_summary(auctioned, outcome_col), models), auctioned


# ----------------------------------------------------------------------------- inputs and report
def prediction_runs(predictions: DataFrame, models: Sequence[str], run_ids: Sequence[str] | None = None,
                    table: str = "predictions") -> dict[str, dict[str, Any]]:
    """model -> {run_id, model_run_id, scored_at}: the given run per model, else its latest by scored_at.

    Raises ``MissingPredictions`` naming the model (and the job that writes its rows) when a
    model has no rows, or a given run is not a run of that model.
    """
    if run_ids is not None and len(run_ids) != len(models):
        raise ValueError(f"--prediction-runs needs one run per model ({len(models)}), got {len(run_ids)}")
    runs = {}
    for i, model in enumerate(models):
        rows = predictions.where(F.col("model") == model)
        if run_ids is not None:
            rows = rows.where(F.col("run_id") == run_ids[i])
        latest = (rows.groupBy("run_id", "model_run_id").agg(F.max("scored_at").alias("scored_at"))
                  .orderBy(F.col("scored_at").desc(), F.col("run_id").desc()).limit(1).collect())
        if not latest:
            if run_ids is not None:
                raise MissingPredictions(f"{table} has no rows of run {run_ids[i]!r} for model {model!r}; "
                                         f"check --prediction-runs (runs are listed in {table}.run_id)")
            raise MissingPredictions(f"{table} has no predictions of model {model!r}; "
                                     f"run jobs/calibrate_evaluate.py for model {model} first "
                                     f"(train it with jobs/train.py --model {model} if needed)")
        r = latest[0]
        runs[model] = {"run_id": r["run_id"], "model_run_id": r["model_run_id"], "scored_at": r["scored_at"]}
    return runs


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The paper's Table 6 analogue: one line per (model, modality)."""
    head = ["model", "modality", "breaks", "served", "clicks", "CTR", "eCPC", "CTR % chg", "eCPC % chg"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r["model"], r["modality"], f"{r['breaks']:d}", f"{r['served']:d}", _num(r["clicks"], "{:.2f}"),
                 _num(r["ctr"], "{:.5f}"), _num(r["ecpc"], "{:.2f}"), _num(r["ctr_change_pct"], "{:+.1f}"),
                 _num(r["ecpc_change_pct"], "{:+.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)
