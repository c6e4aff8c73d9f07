"""Calibration and slot-level evaluation on a real trained model, real Spark and Delta tables."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from features import tables
from features.reports import slot_metrics_sql
from training.data import FeatureLayout, load_snapshot
from training.inference import score_dataframe, score_rows
from training.loop import load_artifact, score

START = dt.date(2026, 1, 1)
SLOTS = {"stream_audio", "podcast", "stream_audio_leavebehind", "podcast_leavebehind", "stream_video",
         "embedded_music", "podcast_video"}


def _metrics(spark, cfg, model):
    return spark.table(cfg.table(tables.SLOT_METRICS)).where(f"model = '{model}'").toPandas()


def test_spark_inference_scores_exactly_like_the_training_loop(spark, experiment):
    cfg, result = experiment
    artifact = tables.find_train_run(spark, cfg, "exp1-train-camoe")["artifact"]
    model, description = load_artifact(artifact)
    layout = FeatureLayout.from_dict(description["layout"])
    validation = load_snapshot(spark, cfg.table(tables.FEATURES), description["features_version"], "validation")
    reference = score(model, validation.files, layout, torch.tensor(description["slot_to_task"]))
    features = tables.read_table(spark, cfg.table(tables.FEATURES), description["features_version"])
    no_shift = {s: 0.0 for s in layout.slots}
    scored = score_dataframe(features.where("split = 'validation'"), artifact, no_shift, None,
                             keep=["impression_id"]).toPandas()
    assert len(scored) == validation.rows
    np.testing.assert_allclose(np.sort(scored["logit"]), np.sort(reference["logit"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scored["pctr_raw"], 1 / (1 + np.exp(-scored["logit"])), rtol=1e-12)


@pytest.mark.parametrize("model_name", ["camoe", "wide_deep"])
def test_spark_scoring_equals_score_rows_on_the_same_rows(spark, experiment, model_name):
    """The mapInArrow path and the pandas ``score_rows`` give the same schema and values, shift,
    temperatures and expert masking included (wide_deep: no experts, empty masked lists). Values
    agree to float32 rounding: MKL's float32 logits can move by an ulp or two with the number of
    rows per model call, and Spark's Arrow batches slice the rows differently from one frame."""
    cfg, _ = experiment
    artifact = tables.find_train_run(spark, cfg, f"exp1-train-{model_name}")["artifact"]
    model, description = load_artifact(artifact)
    layout = FeatureLayout.from_dict(description["layout"])
    shift = {s: 0.25 * i - 1.0 for i, s in enumerate(layout.slots)}
    temperatures = {t: 1.5 + 0.25 * i for i, t in enumerate(description["tasks"])}
    rows = tables.read_table(spark, cfg.table(tables.FEATURES), description["features_version"]) \
        .where("split = 'validation'")
    keep = ["impression_id", "event_date", "slot"]
    scored = score_dataframe(rows, artifact, shift, temperatures, keep=keep, masked_experts=True)
    assert [(f.name, f.dataType.simpleString()) for f in scored.schema] == [
        (c, rows.schema[c].dataType.simpleString()) for c in keep] + [
        ("task", "string"), ("logit", "double"), ("pctr_raw", "double"), ("pctr", "double"),
        ("masked_pctr", "array<double>")]
    got = scored.toPandas().set_index("impression_id")
    frame = rows.select(*keep, *layout.categorical, *layout.dense, "slot_id").toPandas()
    want = score_rows(frame, model, description, [shift[s] for s in layout.slots],
                      [temperatures[t] for t in description["tasks"]], masked_experts=True)
    got = got.loc[frame["impression_id"]]
    assert len(got) == len(frame) > 0
    assert (got["event_date"].to_numpy() == frame["event_date"].to_numpy()).all()
    assert (got["slot"].to_numpy() == frame["slot"].to_numpy()).all()
    assert (got["task"].to_numpy() == want["task"]).all()
    for name in ("logit", "pctr_raw", "pctr"):
        np.testing.assert_allclose(got[name].to_numpy(), want[name], rtol=1e-6, atol=1e-7)
    masked = np.stack(got["masked_pctr"].to_numpy())
    assert masked.shape == want["masked_pctr"].shape == (len(frame), model.num_experts)
    np.testing.assert_allclose(masked, want["masked_pctr"], rtol=1e-6, atol=1e-7)


def test_temperatures_lower_validation_nll_and_keep_per_slot_ranking(spark, experiment):
    cfg, _ = experiment
    temperatures = spark.table(cfg.table(tables.TEMPERATURES)).where("model = 'camoe'").toPandas()
    assert sorted(temperatures["task"]) == ["audio", "video"]
    assert (temperatures["temperature"] > 0).all()
    assert (temperatures["nll_after"] <= temperatures["nll_before"] + 1e-12).all()
    m = _metrics(spark, cfg, "camoe")
    per_slot = m[m["level"] == "slot"].pivot_table(index="slot", columns="calibrated", values="auc_pr",
                                                  dropna=False)     # a slot without test clicks: NaN
    assert set(per_slot.index) == SLOTS
    # T is one monotone map per task: every slot's and task's ranking is unchanged
    np.testing.assert_allclose(per_slot[True], per_slot[False], rtol=1e-9)


def test_slot_metrics_hold_every_segment_with_oracle_and_change_vs_baseline(spark, experiment):
    cfg, result = experiment
    camoe, wide = _metrics(spark, cfg, "camoe"), _metrics(spark, cfg, "wide_deep")
    assert set(map(tuple, camoe[["level", "slot"]].drop_duplicates().values)) == (
        {("slot", s) for s in SLOTS} | {("task", "audio"), ("task", "video"), ("all", "all")})
    assert len(camoe) == 2 * 10 and len(wide) == 2 * 9                # wide_deep has one task: "all"
    test_rows = spark.table(cfg.table(tables.FEATURES)).where("split = 'test'").count()
    overall = camoe[(camoe["level"] == "all") & camoe["calibrated"]].iloc[0]
    assert overall["rows"] == test_rows
    assert camoe[(camoe["level"] == "slot") & camoe["calibrated"]]["rows"].sum() == test_rows
    assert 0 < overall["oracle_auc_pr"] <= 1 and overall["auc_pr_oracle_fraction"] == pytest.approx(
        overall["auc_pr"] / overall["oracle_auc_pr"])
    # % change vs the baseline run, recomputed by hand from the two runs' rows
    assert set(camoe["baseline_run_id"]) == {result["evaluations"]["wide_deep"]}
    base = wide.set_index(["level", "slot", "calibrated"])["auc_pr"]
    for _, row in camoe[camoe["level"] == "slot"].iterrows():
        expected = 100 * (row["auc_pr"] / base[(row["level"], row["slot"], row["calibrated"])] - 1)
        assert row["auc_pr_change_pct"] == pytest.approx(expected, nan_ok=True)   # NaN: no test clicks
    assert wide["auc_pr_change_pct"].isna().all()                     # the baseline has none


def test_bins_predictions_masks_plots_and_sql(spark, experiment):
    cfg, result = experiment
    run = result["evaluations"]["camoe"]
    bins = spark.table(cfg.table(tables.CALIBRATION_BINS)).where(f"run_id = '{run}'").toPandas()
    per = bins[(bins["level"] == "slot") & bins["calibrated"]].groupby(["slot", "scheme"])
    assert (per["bin"].max() < cfg.evaluation.ece_bins).all()
    rows = bins[(bins["level"] == "all") & bins["calibrated"]].groupby("scheme")["rows"].sum()
    test_rows = spark.table(cfg.table(tables.FEATURES)).where("split = 'test'").count()
    assert rows.to_dict() == {"equal_mass": test_rows, "equal_width": test_rows}

    predictions = spark.table(cfg.table(tables.PREDICTIONS)).where(f"run_id = '{run}'")
    assert predictions.count() == test_rows
    assert predictions.where("pctr <= 0 OR pctr >= 1 OR pctr IS NULL").count() == 0

    masks = spark.table(cfg.table(tables.EXPERT_MASK_METRICS)).where(f"run_id = '{run}' AND level = 'all'").toPandas()
    assert sorted(masks["masked_expert"]) == [-1, 0, 1]
    assert masks.set_index("masked_expert").loc[-1, "auc_pr_change_pct"] == 0.0

    from pathlib import Path
    assert Path(result["report"]).read_text().count("| camoe |") >= 1
    assert Path(result["pareto"]).stat().st_size > 1000
    plots = Path(cfg.storage.artifacts_dir) / "evaluation" / run
    assert (plots / "reliability.png").stat().st_size > 1000 and (plots / "auc_pr_vs_baseline.png").exists()

    table = spark.sql(slot_metrics_sql(cfg, run)).toPandas()
    assert table["slot"].iloc[0] == "stream_audio" and len(table) == 10
    results = spark.table(cfg.table(tables.EXPERIMENT_RESULTS)).where("run_id = 'exp1'")
    assert {r.model for r in results.select("model").distinct().collect()} == {"wide_deep", "camoe"}


def test_an_unknown_training_run_is_a_readable_error(spark, experiment):
    cfg, _ = experiment
    with pytest.raises(LookupError, match="no succeeded training run 'nope'.*run jobs/train.py first"):
        tables.find_train_run(spark, cfg, "nope")


def test_batch_scoring_serves_the_pctr_that_was_evaluated(spark, experiment):
    from calibration.scoring import score_run

    cfg, result = experiment
    summary = score_run(spark, cfg, "score-1", "exp1-train-camoe")
    assert summary["calibration_run_id"] == result["evaluations"]["camoe"]
    predictions = spark.table(cfg.table(tables.PREDICTIONS))
    served = predictions.where("run_id = 'score-1'").select("impression_id", "task", "pctr").toPandas()
    evaluated = predictions.where(f"run_id = '{result['evaluations']['camoe']}'").select(
        "impression_id", "task", "pctr").toPandas()
    joined = served.merge(evaluated, on="impression_id", suffixes=("", "_eval"))
    assert len(joined) == len(served) == len(evaluated) == summary["rows"]
    assert (joined["task"] == joined["task_eval"]).all()
    np.testing.assert_allclose(joined["pctr"], joined["pctr_eval"], rtol=1e-12)


def test_scoring_an_uncalibrated_model_says_what_to_run(spark, experiment):
    from calibration.scoring import score_run

    cfg, _ = experiment
    record = tables.RunRecord(run_id="uncalibrated", job="train",
                              outputs={"model_artifact": tables.find_train_run(spark, cfg, "exp1-train-camoe")
                                       ["artifact"]}, metrics={"model": "camoe"})
    tables.record_run(spark, cfg, record)
    with pytest.raises(LookupError, match="uncalibrated has no temperatures.*calibrate_evaluate.py"):
        score_run(spark, cfg, "score-2", "uncalibrated")


def test_a_unimodal_model_is_validated_calibrated_and_evaluated_on_its_own_slots_only(spark, experiment):
    from calibration.evaluate import evaluate_run
    from training.runner import train

    cfg, _ = experiment
    _, _, artifact = train(spark, cfg, "uni-train", model_name="unimodal_video", backend="local", num_proc=1,
                           epochs=1)
    tables.record_run(spark, cfg, tables.RunRecord(run_id="uni-train", job="train",
                                                   outputs={"model_artifact": str(artifact)},
                                                   metrics={"model": "unimodal_video"}))
    evaluate_run(spark, cfg, "uni-eval", "uni-train")
    video = {"stream_video", "embedded_music", "podcast_video"}
    features = spark.table(cfg.table(tables.FEATURES)).where("modality = 'video'")
    m = spark.table(cfg.table(tables.SLOT_METRICS)).where("run_id = 'uni-eval' AND calibrated").toPandas()
    assert set(m[m["level"] == "slot"]["slot"]) == video
    assert m[m["level"] == "all"]["rows"].iloc[0] == features.where("split = 'test'").count()
    temperature = spark.table(cfg.table(tables.TEMPERATURES)).where("run_id = 'uni-eval'").first()
    assert temperature.validation_rows == features.where("split = 'validation'").count()
    _, description = load_artifact(artifact)
    assert description["model_slots"] == ["stream_video", "embedded_music", "podcast_video"]
