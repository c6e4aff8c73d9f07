"""Auction replay (calibration/auction.py): eq. 1, break formation, GSP and the summary, by hand."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from pyspark.sql import functions as F

from calibration import auction
from core.columns import uniform

T0 = dt.datetime(2026, 1, 10, 12, 0, 0)          # on a 15-minute boundary
CANDIDATE = ("impression_id string, event_ts timestamp, slot string, modality string, focus_state string, "
             "max_bid double, pacing double, trailing_ctr double, true_ctr double")
AUCTIONED = "model string, modality string, break_id string, won boolean, price double, true_ctr double"


@pytest.fixture(scope="module")
def cfg(make_config):
    return make_config()


def _settings(cfg, **changes):
    return replace(cfg.auction, **changes)


def test_final_bid_follows_eq_1_and_is_capped_at_the_max_bid(spark):
    rows = [(1, 10.0, 0.25, 0.002, 0.004),   # (10 / 1.25) * (0.002 / 0.004) = 4
            (2, 10.0, 1.0, 0.02, 0.01),      # (10 / 2) * 2 = 10 = o exactly
            (3, 10.0, 0.0, 0.03, 0.01),      # 10 * 3 = 30 -> capped at 10
            (4, 6.0, 0.5, 0.001, 0.002),     # 4 * 0.5 = 2
            (5, 8.0, 0.5, 0.001, 0.0),       # b = 0: the limit, o
            (6, 8.0, 0.5, 0.001, None)]      # no b at all: o
    df = spark.createDataFrame(rows, "k int, o double, p double, c double, b double")
    got = {r.k: r.bid for r in df.select("k", auction.final_bid(F.col("o"), F.col("p"), F.col("c"),
                                                                F.col("b")).alias("bid")).collect()}
    assert got == pytest.approx({1: 4.0, 2: 10.0, 3: 10.0, 4: 2.0, 5: 8.0, 6: 8.0})


def test_gsp_winners_pay_the_next_bid_and_the_last_position_the_reserve_floor(spark):
    rows = [("b1", "audio", "a", 5.0), ("b1", "audio", "b", 3.0), ("b1", "audio", "c", 4.0),
            ("b1", "audio", "d", 1.0),
            ("b2", "video", "v", 2.0), ("b2", "video", "w", 7.0),
            ("b3", "video", "x", 1.5)]                       # a lone candidate: no runner-up
    breaks = spark.createDataFrame(rows, "break_id string, modality string, impression_id string, bid double")

    def served(reserve):
        out = auction.run_gsp(breaks, "bid", {"audio": 2, "video": 1}, reserve).where("won").collect()
        return {r.impression_id: (r["rank"], r.price) for r in out}

    # ranks a(5) c(4) b(3) d(1): a pays c's 4, c (last position) pays b's 3; w pays v's 2
    assert served(0.0) == {"a": (1, 4.0), "c": (2, 3.0), "w": (1, 2.0), "x": (1, 0.0)}
    # reserve 3.5: the last audio position pays max(3.5, 3); the lone video candidate the reserve
    assert served(3.5) == {"a": (1, 4.0), "c": (2, 3.5), "w": (1, 3.5)}
    # reserve 4.5: c's 4 is below it and is not served; a pays the reserve
    assert served(4.5) == {"a": (1, 4.5), "w": (1, 4.5)}


def test_gsp_ties_are_broken_by_the_seeded_hash_whatever_the_row_order(spark):
    ids = [f"imp-{i}" for i in range(8)]
    frame = spark.createDataFrame([("b", "video", i, 2.0) for i in ids],
                                  "break_id string, modality string, impression_id string, bid double")
    hashes = {r.impression_id: r.h for r in frame.select(
        "impression_id", uniform(11, "gsp_tie", F.col("impression_id")).alias("h")).collect()}
    expected = min(ids, key=hashes.get)
    for df in (frame, frame.orderBy(F.col("impression_id").desc()).repartition(3)):
        won = auction.run_gsp(df, "bid", {"video": 1}, 0.0, seed=11).where("won").collect()
        assert [(r.impression_id, r.price) for r in won] == [(expected, 2.0)]
    by_seed = None
    for s in range(4):
        won = auction.run_gsp(frame, "bid", {"video": 1}, 0.0, seed=s).where("won").select("impression_id")
        by_seed = won if by_seed is None else by_seed.unionByName(won)
    assert len({r.impression_id for r in by_seed.collect()}) > 1     # the seed's hash decides, not the order


def test_breaks_serve_audio_out_of_focus_and_video_in_focus_only(spark, cfg):
    rows = [(f"{slot}-{focus}-{i}", T0 + dt.timedelta(seconds=i), slot, modality, focus,
             1.0, 0.0, 0.01, 0.01)
            for slot, modality in (("stream_audio", "audio"), ("stream_video", "video"))
            for focus in ("in_focus", "out_of_focus") for i in range(4)]
    settings = _settings(cfg, candidates_per_break=4, positions={"audio": 2, "video": 1})
    kept = auction.form_breaks(spark.createDataFrame(rows, CANDIDATE), settings, cfg.schema) \
        .select("slot", "focus_state").distinct().collect()
    assert sorted(tuple(r) for r in kept) == [("stream_audio", "out_of_focus"), ("stream_video", "in_focus")]


def test_breaks_cut_a_window_by_hash_and_keep_a_remainder_only_above_the_positions(spark, cfg):
    def rows(slot, modality, n, start):
        return [(f"{slot}-{start.minute}-{i:02d}", start + dt.timedelta(seconds=7 * i), slot, modality,
                 "out_of_focus" if modality == "audio" else "in_focus", 1.0, 0.0, 0.01, 0.01) for i in range(n)]

    data = (rows("stream_audio", "audio", 15, T0)                          # 6 + 6 + 3 (3 > 2: kept)
            + rows("stream_audio", "audio", 14, T0 + dt.timedelta(minutes=15))   # 6 + 6 + 2 (dropped)
            + rows("podcast_video", "video", 2, T0))                       # 2 > 1: one break of 2
    settings = _settings(cfg, candidates_per_break=6, positions={"audio": 2, "video": 1}, seed=3)
    df = spark.createDataFrame(data, CANDIDATE)
    got = auction.form_breaks(df, settings, cfg.schema).select("impression_id", "break_id", "break_size").collect()
    sizes = {}
    for r in got:
        sizes.setdefault(r.break_id, set()).add(r.break_size)
    window = int(T0.timestamp()) // 900
    assert sorted((b, s.pop()) for b, s in sizes.items()) == sorted(
        [(f"stream_audio:{window}:0", 6), (f"stream_audio:{window}:1", 6), (f"stream_audio:{window}:2", 3),
         (f"stream_audio:{window + 1}:0", 6), (f"stream_audio:{window + 1}:1", 6),
         (f"podcast_video:{window}:0", 2)])
    # within a window, candidates are ordered by the seeded hash of the impression id
    first_window = [i for i, *_ in rows("stream_audio", "audio", 15, T0)]
    hashes = {r.impression_id: r.h for r in df.select(
        "impression_id", uniform(3, "break_order", F.col("impression_id")).alias("h")).collect()}
    ordered = sorted(first_window, key=hashes.get)
    members = {r.impression_id: r.break_id for r in got}
    assert {i for i in ordered[:6]} == {i for i in first_window if members[i] == f"stream_audio:{window}:0"}
    assert {i for i in ordered[12:]} == {i for i in first_window if members[i] == f"stream_audio:{window}:2"}


def test_trailing_ctr_counts_the_same_ad_strictly_before_the_event_within_the_window(spark, cfg):
    hour = dt.timedelta(hours=1)
    rows = [("r1", T0 - 24 * hour, "a1", "stream_audio", 1),                          # exactly 24 h before: in
            ("r2", T0 - 24 * hour - dt.timedelta(seconds=1), "a1", "stream_audio", 1),  # 24 h + 1 s: out
            ("r3", T0 - hour, "a1", "stream_audio", 0),
            ("r4", T0, "a1", "stream_audio", 1),                                      # same instant: out
            ("r5", T0, "a1", "stream_audio", 0),
            ("o1", T0 - hour, "a9", "stream_audio", 1),                               # another ad: out
            ("n1", T0, "a2", "podcast", 0)]                                           # a new ad
    schema = cfg.schema
    df = spark.createDataFrame(rows, f"{schema.id} string, {schema.timestamp} timestamp, {schema.ad} string, "
                                     f"{schema.slot} string, {schema.label} int")
    plain = {r[schema.id]: (r.trailing_impressions, r.trailing_ctr) for r in auction.trailing_ctr(
        df, _settings(cfg, trailing_ctr_prior=0.0, trailing_ctr_hours=24), schema, ({}, 0.0)).collect()}
    assert plain["r5"] == (2, pytest.approx(0.5)) and plain["r4"] == (2, pytest.approx(0.5))   # r1, r3
    assert plain["r3"] == (2, pytest.approx(1.0))                                             # r1, r2
    assert plain["r1"] == (1, pytest.approx(1.0))                                             # r2 only
    assert plain["r2"] == (0, None) and plain["n1"] == (0, None)                              # no history, no prior
    smoothed = {r[schema.id]: r.trailing_ctr for r in auction.trailing_ctr(
        df, _settings(cfg, trailing_ctr_prior=2.0, trailing_ctr_hours=24), schema,
        ({"stream_audio": 0.25}, 0.1)).collect()}
    assert smoothed["r5"] == pytest.approx((1 + 2 * 0.25) / (2 + 2))
    assert smoothed["n1"] == pytest.approx(0.1)              # slot without a prior: the global mean
    assert smoothed["r2"] == pytest.approx(0.25)             # new ad: the slot's mean


def test_campaign_terms_are_seeded_per_campaign(spark, cfg):
    df = spark.createDataFrame([(f"i{i}", f"cmp{i % 3}") for i in range(9)],
                               f"impression_id string, {cfg.auction.campaign_column} string")
    flat = auction.campaign_terms(df, _settings(cfg, max_bid_sd=0.0, pacing_max=0.5)).collect()
    assert [r.max_bid for r in flat] == pytest.approx([cfg.auction.max_bid_median] * 9)
    per_campaign = {}
    for r in auction.campaign_terms(df, _settings(cfg, pacing_max=0.5)).collect():
        per_campaign.setdefault(r[cfg.auction.campaign_column], set()).add((r.max_bid, r.pacing))
    assert all(len(v) == 1 for v in per_campaign.values()) and len(per_campaign) == 3
    values = [v.pop() for v in per_campaign.values()]
    assert len({o for o, _ in values}) == 3 and all(0.0 <= p <= 0.5 for _, p in values)


def test_summary_ctr_and_ecpc_count_only_served_candidates(spark):
    rows = [("m", "audio", "b1", True, 4.0, 0.01), ("m", "audio", "b1", True, 3.0, 0.03),
            ("m", "audio", "b1", False, None, 0.9),
            ("m", "audio", "b2", True, 2.0, 0.02), ("m", "audio", "b2", True, 1.0, 0.04),
            ("m", "video", "b3", True, 2.0, 0.05), ("m", "video", "b3", False, None, 0.5)]
    got = {r.modality: r for r in auction.replay_summary(spark.createDataFrame(rows, AUCTIONED)).collect()}
    expect = {"audio": (2, 4, 0.10, 0.025, 10.0, 100.0), "video": (1, 1, 0.05, 0.05, 2.0, 40.0),
              "all": (3, 5, 0.15, 0.03, 12.0, 80.0)}
    for modality, (breaks, served, clicks, ctr, spend, ecpc) in expect.items():
        r = got[modality]
        assert (r.breaks, r.served) == (breaks, served)
        assert (r.clicks, r.ctr, r.spend, r.ecpc) == pytest.approx((clicks, ctr, spend, ecpc))


def test_replay_uses_the_same_breaks_for_both_models_and_reports_table_6_changes(spark, cfg):
    # bids = min(10 * pctr / 0.01, 10) = 1000 * pctr (max bid 10, pacing 0, trailing CTR 0.01)
    def cand(i, slot, modality, focus, true_ctr, second):
        return (i, T0 + dt.timedelta(seconds=second), slot, modality, focus, 10.0, 0.0, 0.01, true_ctr)

    candidates = spark.createDataFrame([
        cand("i1", "stream_audio", "audio", "out_of_focus", 0.01, 1),
        cand("i2", "stream_audio", "audio", "out_of_focus", 0.02, 2),
        cand("i3", "stream_audio", "audio", "out_of_focus", 0.03, 3),
        cand("i4", "stream_audio", "audio", "out_of_focus", 0.04, 4),
        cand("i5", "stream_audio", "audio", "in_focus", 0.5, 5),        # not an audio pod's focus
        cand("i6", "stream_audio", "audio", "out_of_focus", 0.5, 6),    # scored by one model only
        cand("v1", "stream_video", "video", "in_focus", 0.1, 1),
        cand("v2", "stream_video", "video", "in_focus", 0.2, 2),
        cand("v3", "stream_video", "video", "in_focus", 0.05, 3)], CANDIDATE)
    pctr = {"wide_deep": {"i1": .005, "i2": .004, "i3": .003, "i4": .001, "i5": .009, "i6": .009,
                          "v1": .002, "v2": .001, "v3": .0005},
            "camoe": {"i1": .001, "i2": .002, "i3": .004, "i4": .006, "i5": .009,
                      "v1": .001, "v2": .003, "v3": .002}}
    predictions = spark.createDataFrame([(m, i, p) for m, ps in pctr.items() for i, p in ps.items()],
                                        "model string, impression_id string, pctr double")
    settings = _settings(cfg, candidates_per_break=4, positions={"audio": 2, "video": 1}, reserve_price=0.0)
    summary, auctioned = auction.replay(candidates, predictions, settings, cfg.schema, ["wide_deep", "camoe"])

    rows = auctioned.select("model", "break_id", "impression_id", "won", "price").collect()
    members = {m: {(r.break_id, r.impression_id) for r in rows if r.model == m} for m in pctr}
    assert members["wide_deep"] == members["camoe"]
    assert {i for _, i in members["camoe"]} == {"i1", "i2", "i3", "i4", "v1", "v2", "v3"}
    served = {m: {r.impression_id: r.price for r in rows if r.model == m and r.won} for m in pctr}
    assert served["wide_deep"] == pytest.approx({"i1": 4.0, "i2": 3.0, "v1": 1.0})
    assert served["camoe"] == pytest.approx({"i4": 4.0, "i3": 2.0, "v2": 2.0})

    collected = summary.collect()
    got = {(r.model, r.modality): r for r in collected}
    expect = {("wide_deep", "audio"): (2, 0.03, 7.0, None, None),
              ("wide_deep", "video"): (1, 0.1, 1.0, None, None),
              ("wide_deep", "all"): (3, 0.13, 8.0, None, None),
              ("camoe", "audio"): (2, 0.07, 6.0, 100 * (0.035 / 0.015 - 1), 100 * ((6 / .07) / (7 / .03) - 1)),
              ("camoe", "video"): (1, 0.2, 2.0, 100.0, 0.0),
              ("camoe", "all"): (3, 0.27, 8.0, 100 * (0.27 / 0.13 - 1), 100 * ((8 / .27) / (8 / .13) - 1))}
    assert set(got) == set(expect)
    for key, (served_n, clicks, spend, ctr_change, ecpc_change) in expect.items():
        r = got[key]
        assert r.served == served_n and r.breaks == 1 + (key[1] == "all")
        assert (r.clicks, r.spend, r.ctr, r.ecpc) == pytest.approx((clicks, spend, clicks / served_n, spend / clicks))
        assert r.ctr_change_pct == pytest.approx(ctr_change) and r.ecpc_change_pct == pytest.approx(ecpc_change)
    table = auction.markdown_table([r.asDict() for r in collected])
    assert "| camoe | audio | 1 | 2 | 0.07 | 0.03500 | 85.71 | +133.3 | -63.3 |" in table


def test_missing_predictions_name_the_model_and_the_job_to_run(spark):
    rows = [("run-a", "camoe", "train-1", dt.datetime(2026, 1, 1, 10), "i1"),
            ("run-b", "camoe", "train-2", dt.datetime(2026, 1, 2, 10), "i1")]
    predictions = spark.createDataFrame(
        rows, "run_id string, model string, model_run_id string, scored_at timestamp, impression_id string")
    latest = auction.prediction_runs(predictions, ["camoe"])
    assert (latest["camoe"]["run_id"], latest["camoe"]["model_run_id"]) == ("run-b", "train-2")
    assert auction.prediction_runs(predictions, ["camoe"], ["run-a"])["camoe"]["run_id"] == "run-a"
    with pytest.raises(auction.MissingPredictions,
                       match=r"no predictions of model 'wide_deep'; run jobs/calibrate_evaluate\.py for "
                             r"model wide_deep first"):
        auction.prediction_runs(predictions, ["wide_deep", "camoe"], table="camoe.predictions")
    with pytest.raises(auction.MissingPredictions, match=r"no rows of run 'run-a' for model 'wide_deep'"):
        auction.prediction_runs(predictions, ["wide_deep", "camoe"], ["run-a", "run-b"])


def test_replay_job_writes_table_6_rows_and_names_a_model_without_predictions(spark, fresh_db):
    import argparse

    from core import tables
    from core.lineage import RunRecord
    from jobs import replay_auction
    from tests.helpers import generated, write_raw

    cfg = fresh_db("generator.num_ads=40")
    start = dt.date(2026, 1, 1)
    write_raw(generated(spark, cfg, start, 2, 3000), cfg, start, start + dt.timedelta(days=1))
    test_day = spark.table(cfg.table(tables.IMPRESSIONS)) \
        .where(F.col("event_date") == F.lit(start + dt.timedelta(days=1)))
    columns = [F.lit("train-x").alias("model_run_id"), F.current_timestamp().alias("scored_at"), "impression_id",
               "event_date", "slot", F.lit("audio").alias("task"), F.lit(0.0).alias("logit")]
    oracle = test_day.select(F.lit("eval-c").alias("run_id"), F.lit("camoe").alias("model"), *columns,
                             F.col("true_ctr").alias("pctr_raw"), F.col("true_ctr").alias("pctr"),
                             F.col("clicked").alias("label"), "true_ctr")
    tables.replace_run_rows(oracle, cfg.table(tables.PREDICTIONS), "eval-c")
    args = argparse.Namespace(models=None, prediction_runs=None)
    with pytest.raises(auction.MissingPredictions, match="run jobs/calibrate_evaluate.py for model wide_deep first"):
        replay_auction.run(spark, cfg, args, RunRecord(run_id="replay-0", job="replay_auction"))

    flat = test_day.select(F.lit("eval-w").alias("run_id"), F.lit("wide_deep").alias("model"), *columns,
                           F.lit(0.004).alias("pctr_raw"), F.lit(0.004).alias("pctr"),
                           F.col("clicked").alias("label"), "true_ctr")
    tables.replace_run_rows(flat, cfg.table(tables.PREDICTIONS), "eval-w")
    record = RunRecord(run_id="replay-1", job="replay_auction")
    assert replay_auction.run(spark, cfg, args, record) == 0
    rows = {(r.model, r.modality): r for r in spark.table(cfg.table(tables.AUCTION_REPLAY)).collect()}
    assert set(rows) == {(m, x) for m in ("wide_deep", "camoe") for x in ("audio", "video", "all")}
    assert all(r.run_id == "replay-1" and r.breaks > 0 and r.served >= r.breaks for r in rows.values())
    assert {rows[("camoe", x)].breaks for x in ("audio", "video")} == \
        {rows[("wide_deep", x)].breaks for x in ("audio", "video")}
    assert rows[("camoe", "all")].prediction_run_id == "eval-c" and rows[("wide_deep", "all")].ctr_change_pct is None
    # bidding on the true click probability serves the likelier clicks than a constant pCTR
    assert rows[("camoe", "all")].ctr_change_pct > 0
    assert record.metrics["ctr_change_pct"]["all"] == pytest.approx(rows[("camoe", "all")].ctr_change_pct)
    assert record.inputs["prediction_runs"] == {"wide_deep": "eval-w", "camoe": "eval-c"}
