"""Calibration and slot-level evaluation on a real trained model, real Spark and Delta tables."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from core import lineage, tables
from core.feature_table import TEST, TRAIN, VALIDATION
from features.reports import slot_metrics_sql
from training.artifact import load_artifact, read_artifact
from training.data import load_snapshot
from training.inference import score_dataframe, score_rows
from training.validation_scoring import score

START = dt.date(2026, 1, 1)
SLOTS = {"stream_audio", "podcast", "stream_audio_leavebehind", "podcast_leavebehind", "stream_video",
         "embedded_music", "podcast_video"}


def _camoe(spark, cfg):
    """The experiment's camoe (first seed): its ModelArtifact."""
    return read_artifact(lineage.find_train_run(spark, cfg, "exp1-train-camoe-seed17")["artifact"])


def _days(window, split: str) -> str:
    """SQL: the rows of ``split``'s days of ``window`` (a model's TrainingWindow)."""
    first, last = window.bounds(split)
    return f"event_date BETWEEN DATE'{first}' AND DATE'{last}'"


def _validation(spark, cfg, trained):
    """training.data's snapshot of the model's validation days (features, its pinned version)."""
    return load_snapshot(spark, cfg.table(tables.FEATURES), trained.features_version,
                         *trained.window.bounds(VALIDATION))


def _metrics(spark, cfg, result, model):
    """slot_metrics rows of ``model``'s first-seed evaluation in the experiment."""
    run = result.evaluations[model]
    return spark.table(cfg.table(tables.SLOT_METRICS)).where(f"run_id = '{run}'").toPandas()


def test_spark_inference_scores_exactly_like_the_training_loop(spark, experiment, monkeypatch):
    """Row by row, joined on impression_id: Spark's scoring gives each row the logit the training
    loop's validation scoring gives that row. (Sorted logits would also match if Spark paired its
    scores with the wrong rows, e.g. an Arrow batch's keys with another batch's scores.)

    The loop's scoring carries no row key; read with one reader thread, file by file, its rows
    come in each file's own order, which pyarrow reads the ids in (with more threads row groups
    come in thread order; the thread count changes no value)."""
    import functools

    import pandas as pd
    import pyarrow.parquet as pq

    from core.delta_versions import filesystem_and_path
    from training import data, validation_scoring

    cfg, result = experiment
    artifact = lineage.find_train_run(spark, cfg, "exp1-train-camoe-seed17")["artifact"]
    model, trained = load_artifact(artifact)
    layout = trained.layout
    validation = _validation(spark, cfg, trained)
    monkeypatch.setattr(validation_scoring, "iterate_batches", functools.partial(data.iterate_batches, workers=1))
    parts = []
    for file in validation.files:
        scored_file = score(model, (file,), layout, torch.tensor(trained.slot_to_task))
        filesystem, path = filesystem_and_path(file.url)
        ids = pq.read_table(path, columns=["impression_id", "label"], filesystem=filesystem).to_pandas()
        assert len(ids) == len(scored_file["logit"]) == file.rows, file.url
        # the reader's rows are the file's rows in order: the labels line up one for one
        assert (ids["label"].to_numpy() == scored_file["label"]).all(), file.url
        parts.append(ids.assign(logit=scored_file["logit"]))
    reference = pd.concat(parts, ignore_index=True)
    assert reference["impression_id"].is_unique and len(reference) == validation.rows
    features = tables.read_table(spark, cfg.table(tables.FEATURES), trained.features_version)
    no_shift = {s: 0.0 for s in layout.slots}
    scored = score_dataframe(features.where(_days(trained.window, VALIDATION)), artifact, no_shift, None,
                             keep=["impression_id", "label"]).toPandas()
    assert len(scored) == validation.rows
    joined = scored.merge(reference, on="impression_id", suffixes=("", "_loop"), validate="one_to_one")
    assert len(joined) == validation.rows
    assert (joined["label"] == joined["label_loop"]).all()
    np.testing.assert_allclose(joined["logit"], joined["logit_loop"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scored["pctr_raw"], 1 / (1 + np.exp(-scored["logit"])), rtol=1e-12)


@pytest.mark.parametrize("model_name", ["camoe", "wide_deep"])
def test_spark_scoring_equals_score_rows_on_the_same_rows(spark, experiment, model_name):
    """The mapInArrow path and the pandas ``score_rows`` give the same schema and values, shift,
    temperatures and expert masking included (wide_deep: no experts, empty masked lists). Values
    agree to float32 rounding: MKL's float32 logits can move by an ulp or two with the number of
    rows per model call, and Spark's Arrow batches slice the rows differently from one frame."""
    cfg, _ = experiment
    artifact = lineage.find_train_run(spark, cfg, f"exp1-train-{model_name}-seed17")["artifact"]
    model, trained = load_artifact(artifact)
    layout = trained.layout
    shift = {s: 0.25 * i - 1.0 for i, s in enumerate(layout.slots)}
    temperatures = {t: 1.5 + 0.25 * i for i, t in enumerate(trained.tasks)}
    rows = tables.read_table(spark, cfg.table(tables.FEATURES), trained.features_version) \
        .where(_days(trained.window, VALIDATION))
    keep = ["impression_id", "event_date", "slot"]
    scored = score_dataframe(rows, artifact, shift, temperatures, keep=keep, masked_experts=True)
    assert [(f.name, f.dataType.simpleString()) for f in scored.schema] == [
        (c, rows.schema[c].dataType.simpleString()) for c in keep] + [
        ("task", "string"), ("logit", "double"), ("pctr_raw", "double"), ("pctr", "double"),
        ("masked_pctr", "array<double>")]
    got = scored.toPandas().set_index("impression_id")
    frame = rows.select(*keep, *layout.categorical, *layout.dense, "slot_id").toPandas()
    want = score_rows(frame, model, trained, [shift[s] for s in layout.slots],
                      [temperatures[t] for t in trained.tasks], masked_experts=True)
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
    cfg, result = experiment
    run = result.evaluations["camoe"]
    temperatures = spark.table(cfg.table(tables.TEMPERATURES)).where(f"run_id = '{run}'").toPandas()
    assert sorted(temperatures["task"]) == ["audio", "video"]
    assert (temperatures["nll_after"] <= temperatures["nll_before"] + 1e-12).all()
    # each task's T is the minimiser of the NLL of its own corrected validation logits (here from
    # the training loop's scoring, not the evaluation's): caught, a T fitted on other rows (the
    # test split, the other task's) or on uncorrected logits, and nll/rows columns of other rows.
    # (It replaces "T > 0", which the fit's T = exp(log T) makes true whatever it fitted.)
    from calibration.evaluate import _nll, downsampling_shift

    model, trained = load_artifact(lineage.find_train_run(spark, cfg, "exp1-train-camoe-seed17")["artifact"])
    validation = _validation(spark, cfg, trained)
    scored = score(model, validation.files, trained.layout, torch.tensor(trained.slot_to_task))
    shift = downsampling_shift(spark, cfg, trained)
    z = scored["logit"].astype(np.float64) + np.array([shift[s] for s in trained.layout.slots])[scored["slot"]]
    y = scored["label"].astype(np.float64)
    low, high = cfg.evaluation.temperature_min, cfg.evaluation.temperature_max
    for row in temperatures.itertuples():
        sel = scored["task"] == list(trained.tasks).index(row.task)
        assert (row.validation_rows, row.validation_positives) == (sel.sum(), y[sel].sum()), row.task
        assert row.nll_before == pytest.approx(_nll(z[sel], y[sel], 1.0), rel=1e-5), row.task
        assert row.nll_after == pytest.approx(_nll(z[sel], y[sel], row.temperature), rel=1e-5), row.task
        assert low < row.temperature < high, row.task                  # an interior minimum, not a bound
        for factor in (0.9, 1 / 0.9):
            assert _nll(z[sel], y[sel], row.temperature) < _nll(z[sel], y[sel], row.temperature * factor), row.task
    m = _metrics(spark, cfg, result, "camoe")
    per_slot = m[m["level"] == "slot"].pivot_table(index="slot", columns="calibrated", values="auc_pr",
                                                  dropna=False)     # a slot without test clicks: NaN
    assert set(per_slot.index) == SLOTS
    # T is one monotone map per task: every slot's and task's ranking is unchanged
    np.testing.assert_allclose(per_slot[True], per_slot[False], rtol=1e-9)


def test_slot_metrics_hold_every_segment_with_oracle_and_change_vs_baseline(spark, experiment):
    cfg, result = experiment
    camoe, wide = _metrics(spark, cfg, result, "camoe"), _metrics(spark, cfg, result, "wide_deep")
    assert set(map(tuple, camoe[["level", "slot"]].drop_duplicates().values)) == (
        {("slot", s) for s in SLOTS} | {("task", "audio"), ("task", "video"), ("all", "all")})
    assert len(camoe) == 2 * 10 and len(wide) == 2 * 9                # wide_deep has one task: "all"
    test_rows = spark.table(cfg.table(tables.FEATURES)).where(_days(_camoe(spark, cfg).window, TEST)).count()
    overall = camoe[(camoe["level"] == "all") & camoe["calibrated"]].iloc[0]
    assert overall["rows"] == test_rows
    assert camoe[(camoe["level"] == "slot") & camoe["calibrated"]]["rows"].sum() == test_rows
    # the oracle's AUC-PR is that of the true click probability over the same test rows (any
    # AUC-PR lies in (0, 1], so a range check could not tell it from the model's own or a slot's)
    from core.metrics import average_precision

    truth = spark.table(cfg.table(tables.PREDICTIONS)).where(f"run_id = '{result.evaluations['camoe']}'") \
        .select("label", "true_ctr").toPandas()
    assert len(truth) == test_rows
    assert overall["oracle_auc_pr"] == pytest.approx(
        average_precision(truth["label"].to_numpy(np.float64), truth["true_ctr"].to_numpy(np.float64)), rel=1e-9)
    assert overall["auc_pr_oracle_fraction"] == pytest.approx(overall["auc_pr"] / overall["oracle_auc_pr"])
    # % change vs the baseline run, recomputed by hand from the two runs' rows
    assert set(camoe["baseline_run_id"]) == {result.evaluations["wide_deep"]}
    base = wide.set_index(["level", "slot", "calibrated"])["auc_pr"]
    for _, row in camoe[camoe["level"] == "slot"].iterrows():
        expected = 100 * (row["auc_pr"] / base[(row["level"], row["slot"], row["calibrated"])] - 1)
        assert row["auc_pr_change_pct"] == pytest.approx(expected, nan_ok=True)   # NaN: no test clicks
    assert wide["auc_pr_change_pct"].isna().all()                     # the baseline has none


def test_label_free_and_ceiling_columns_equal_the_numpy_metrics_of_the_predictions(spark, experiment):
    from core.metrics import (
        average_precision,
        excess_log_loss,
        normalized_entropy,
        signal_fraction,
        signal_gain,
        true_calibration_ratio,
    )

    cfg, result = experiment
    run = result.evaluations["camoe"]
    metrics = spark.table(cfg.table(tables.SLOT_METRICS)).where(f"run_id = '{run}' AND calibrated").toPandas()
    features = tables.read_table(spark, cfg.table(tables.FEATURES)).where(_days(_camoe(spark, cfg).window, TEST))
    rows = (spark.table(cfg.table(tables.PREDICTIONS)).where(f"run_id = '{run}'")
            .join(features.select("impression_id", "ceiling_ctr"), "impression_id").toPandas())
    assert len(rows) == features.count()
    rows["base"] = rows.groupby("slot")["true_ctr"].transform("mean")
    for level, segment, sel in [("all", "all", np.ones(len(rows), bool))] + [
            ("slot", s, (rows["slot"] == s).to_numpy()) for s in ("stream_audio", "stream_video")]:
        got = metrics[(metrics["level"] == level) & (metrics["slot"] == segment)].iloc[0]
        t, p, c, b = (rows.loc[sel, k].to_numpy() for k in ("true_ctr", "pctr", "ceiling_ctr", "base"))
        assert got["excess_log_loss"] == pytest.approx(excess_log_loss(t, p), rel=1e-6)
        assert got["normalized_entropy"] == pytest.approx(normalized_entropy(rows.loc[sel, "label"].to_numpy(), p),
                                                          rel=1e-6)
        assert got["true_calibration_ratio"] == pytest.approx(true_calibration_ratio(t, p), rel=1e-9)
        assert got["signal_gain"] == pytest.approx(signal_gain(t, p, b), rel=1e-6, abs=1e-12)
        assert got["signal_fraction_of_ceiling"] == pytest.approx(signal_fraction(t, p, c, b), rel=1e-6)
        assert got["signal_fraction_of_oracle"] == pytest.approx(signal_fraction(t, p, t, b), rel=1e-6)
        # the ceiling scored as a model, on the rows that have one (a range check could not fail)
        known = ~np.isnan(c)
        assert got["ceiling_auc_pr"] == pytest.approx(
            average_precision(rows.loc[sel, "label"].to_numpy(np.float64)[known], c[known]), rel=1e-9)
        assert got["auc_pr_ceiling_fraction"] == pytest.approx(got["auc_pr"] / got["ceiling_auc_pr"])
    # the ceiling gains less than the oracle (the unobserved attention), so it is a stricter yardstick
    overall = metrics[metrics["level"] == "all"].iloc[0]
    assert overall["signal_fraction_of_ceiling"] > overall["signal_fraction_of_oracle"]


def test_bins_predictions_masks_plots_and_sql(spark, experiment):
    cfg, result = experiment
    run = result.evaluations["camoe"]
    bins = spark.table(cfg.table(tables.CALIBRATION_BINS)).where(f"run_id = '{run}'").toPandas()
    per = bins[(bins["level"] == "slot") & bins["calibrated"]].groupby(["slot", "scheme"])
    assert (per["bin"].max() < cfg.evaluation.ece_bins).all()
    rows = bins[(bins["level"] == "all") & bins["calibrated"]].groupby("scheme")["rows"].sum()
    test_rows = spark.table(cfg.table(tables.FEATURES)).where(_days(_camoe(spark, cfg).window, TEST)).count()
    assert rows.to_dict() == {"equal_mass": test_rows, "equal_width": test_rows}

    predictions = spark.table(cfg.table(tables.PREDICTIONS)).where(f"run_id = '{run}'")
    assert predictions.count() == test_rows
    assert predictions.where("pctr <= 0 OR pctr >= 1 OR pctr IS NULL").count() == 0
    # each expert zeroed in turn, per impression (what the masking claims are judged from)
    assert [r.k for r in predictions.selectExpr("size(masked_pctr) AS k").distinct().collect()] == [2]

    masks = spark.table(cfg.table(tables.EXPERT_MASK_METRICS)).where(f"run_id = '{run}' AND level = 'all'").toPandas()
    assert sorted(masks["masked_expert"]) == [-1, 0, 1]
    assert masks.set_index("masked_expert").loc[-1, "auc_pr_change_pct"] == 0.0

    from pathlib import Path
    assert Path(result.report).read_text().count("| camoe |") >= 1
    assert Path(result.pareto).stat().st_size > 1000
    plots = Path(cfg.storage.artifacts_dir) / "evaluation" / run
    assert (plots / "reliability.png").stat().st_size > 1000 and (plots / "auc_pr_vs_baseline.png").exists()
    assert not (plots.parent / result.seed_evaluations["camoe"][18]).exists()     # the first seed's only

    table = spark.sql(slot_metrics_sql(cfg, run)).toPandas()
    assert table["slot"].iloc[0] == "stream_audio" and len(table) == 10
    assert {"auc_pr_of_oracle", "auc_pr_of_ceiling", "signal_of_ceiling", "calib_vs_true"} <= set(table.columns)
    # a table without the reference columns (a log without true_ctr) gets a query without them
    plain = slot_metrics_sql(cfg, run, ["auc_pr", "roc_auc", "calibration_ratio"])
    assert "oracle" not in plain and "ceiling" not in plain and "true_calibration_ratio" not in plain
    results = spark.table(cfg.table(tables.EXPERIMENT_RESULTS)).where("run_id = 'exp1'")
    assert {r.model for r in results.select("model").distinct().collect()} == {"wide_deep", "camoe"}


def test_experiments_train_every_seed_and_report_paired_intervals_and_claims(spark, experiment):
    import json
    from pathlib import Path

    cfg, result = experiment
    entries = {"wide_deep": [17, 18], "camoe": [17, 18]}
    assert {m: sorted(s) for m, s in result.seed_evaluations.items()} == entries
    results = spark.table(cfg.table(tables.EXPERIMENT_RESULTS)) \
        .where("run_id = 'exp1' AND level = 'all' AND calibrated")
    assert sorted((r.model, r.seed, r.eval_run_id) for r in results.collect()) == [
        ("camoe", 17, "exp1-eval-camoe-seed17"), ("camoe", 18, "exp1-eval-camoe-seed18"),
        ("wide_deep", 17, "exp1-eval-wide_deep-seed17"), ("wide_deep", 18, "exp1-eval-wide_deep-seed18")]
    document = json.loads(Path(result.json).read_text())
    assert document["baseline"] == "wide_deep" and document["seeds"] == entries
    test_rows = spark.table(cfg.table(tables.FEATURES)).where(_days(_camoe(spark, cfg).window, TEST)).count()
    assert document["test_rows"] == test_rows
    overall = next(c for c in document["comparisons"]
                   if (c["candidate"], c["segment"], c["metric"]) == ("camoe", "all", "auc_pr"))
    assert overall["reference"] == "wide_deep" and overall["rows"] == test_rows
    assert overall["relative"]["lo"] <= overall["relative"]["estimate"] <= overall["relative"]["hi"]
    # the estimate is the mean over seeds of each seed's AUC-PR, as slot_metrics holds them
    per_seed = {(r.model, r.seed): r.auc_pr for r in results.collect()}
    assert overall["candidate_value"] == pytest.approx((per_seed[("camoe", 17)] + per_seed[("camoe", 18)]) / 2,
                                                       rel=1e-6)
    # Table 2's claim and expert masking (app. A.2, camoe's two experts zeroed in turn, from the
    # predictions' masked_pctr, judged per video slot) are judged; the claims whose roles did not
    # run are listed with the reason
    claims = {(c["claim"], c["candidate"], c["segment"]) for c in document["claims"] if c["metric"] == "auc_pr"}
    test_days = spark.table(cfg.table(tables.FEATURES)).where(_days(_camoe(spark, cfg).window, TEST))
    video = sorted({r.slot for r in test_days.select("slot").distinct().collect()}
                   & set(cfg.taxonomy.slots_of_modality("video")))
    assert claims == {("CAMoE beats the production baseline", "camoe", s)
                      for s in ("all", "stream_audio", "stream_video")} | {
        (f"masking expert {k + 1} at inference raises video AUC-PR", f"camoe/masked-expert-{k}", s)
        for k in (0, 1) for s in video}
    masking = next(c for c in document["claims"] if c["candidate"] == "camoe/masked-expert-0")
    assert masking["reference"] == "camoe" and masking["paired_seeds"]
    assert masking["paper_change_pct"] == {"stream_video": 6.6, "podcast_video": 1.6,
                                           "embedded_music": 68.0}[masking["segment"]]
    not_judged = {c["claim"]: c["reason"] for c in document["claims_not_judged"]}
    assert not_judged["2 tasks (audio/video) beat one task"] == "camoe_t1 did not run in this experiment"
    assert set(document["auc_pr_change_half_width"]) == {"stream_audio", "stream_video"}
    camoe = document["models"]["camoe"]["all"]
    # the summary is the mean over the two seeds of each seed's calibrated overall row (a
    # positivity check could not catch one seed's value, the uncalibrated row's, or another column's)
    seeds = spark.table(cfg.table(tables.SLOT_METRICS)).where(
        "run_id IN ('exp1-eval-camoe-seed17', 'exp1-eval-camoe-seed18') AND level = 'all' AND calibrated").toPandas()
    assert len(seeds) == 2
    for column in ("signal_fraction_of_ceiling", "true_calibration_ratio"):
        assert camoe[column] == pytest.approx(seeds[column].mean(), rel=1e-12), column
    # --quick (the fixture's mode) and the targets for CAMoE, per slot, from the same summary
    assert document["quick"] is True
    targets = {t["slot"]: t for t in document["targets"]["camoe"]}
    assert targets["all"]["signal_fraction_of_ceiling"] == camoe["signal_fraction_of_ceiling"]
    assert targets["all"]["meets_ceiling_target"] == (camoe["signal_fraction_of_ceiling"] >= 0.95)
    report = Path(result.report).read_text()
    assert "over test impressions and training seeds" in report and "| claim |" in report
    assert "Claims not judged here:" in report and "paper's change %" in report
    assert "(--quick)" in report.splitlines()[0] and "signal / ceiling" in report


def test_an_unknown_training_run_is_a_readable_error(spark, experiment):
    cfg, _ = experiment
    with pytest.raises(LookupError, match="no succeeded training run 'nope'.*run jobs/train.py first"):
        lineage.find_train_run(spark, cfg, "nope")


def test_batch_scoring_serves_the_pctr_that_was_evaluated(spark, experiment):
    from serving.scoring import score_run

    cfg, result = experiment
    summary = score_run(spark, cfg, "score-1", "exp1-train-camoe-seed17")
    assert summary.calibration_run_id == result.evaluations["camoe"]
    predictions = spark.table(cfg.table(tables.PREDICTIONS))
    served = predictions.where("run_id = 'score-1'").select("impression_id", "task", "pctr").toPandas()
    evaluated = predictions.where(f"run_id = '{result.evaluations['camoe']}'").select(
        "impression_id", "task", "pctr").toPandas()
    joined = served.merge(evaluated, on="impression_id", suffixes=("", "_eval"))
    assert len(joined) == len(served) == len(evaluated) == summary.rows
    assert (joined["task"] == joined["task_eval"]).all()
    np.testing.assert_allclose(joined["pctr"], joined["pctr_eval"], rtol=1e-12)


def test_scoring_an_uncalibrated_model_says_what_to_run(spark, experiment):
    from serving.scoring import score_run

    cfg, _ = experiment
    record = lineage.RunRecord(run_id="uncalibrated", job="train",
                              outputs={"model_artifact": lineage.find_train_run(spark, cfg, "exp1-train-camoe-seed17")
                                       ["artifact"]}, metrics={"model": "camoe"})
    lineage.record_run(spark, cfg, record)
    with pytest.raises(LookupError, match="uncalibrated has no temperatures.*calibrate_evaluate.py"):
        score_run(spark, cfg, "score-2", "uncalibrated")


def test_a_unimodal_model_is_validated_calibrated_and_evaluated_on_its_own_slots_only(spark, experiment):
    from calibration.evaluate import evaluate_run
    from training.runner import train

    cfg, _ = experiment
    _, _, artifact = train(spark, cfg, "uni-train", model_name="unimodal_video", backend="local", num_proc=1,
                           epochs=1)
    lineage.record_run(spark, cfg, lineage.RunRecord(run_id="uni-train", job="train",
                                                   outputs={"model_artifact": str(artifact)},
                                                   metrics={"model": "unimodal_video"}))
    evaluate_run(spark, cfg, "uni-eval", "uni-train")
    video = {"stream_video", "embedded_music", "podcast_video"}
    features = spark.table(cfg.table(tables.FEATURES)).where("modality = 'video'")
    m = spark.table(cfg.table(tables.SLOT_METRICS)).where("run_id = 'uni-eval' AND calibrated").toPandas()
    assert set(m[m["level"] == "slot"]["slot"]) == video
    window = read_artifact(artifact).window
    assert window == _camoe(spark, cfg).window            # the same snapshot's last day ends both windows
    assert m[m["level"] == "all"]["rows"].iloc[0] == features.where(_days(window, TEST)).count()
    temperature = spark.table(cfg.table(tables.TEMPERATURES)).where("run_id = 'uni-eval'").first()
    assert temperature.validation_rows == features.where(_days(window, VALIDATION)).count()
    assert read_artifact(artifact).model_slots == ("stream_video", "embedded_music", "podcast_video")


def test_reanalysing_an_experiment_trains_nothing_and_gives_the_same_intervals(spark, experiment):
    import json
    from pathlib import Path

    from calibration.experiments import run_experiments

    cfg, result = experiment
    runs_before = spark.table(cfg.table(tables.RUNS)).where("job = 'train'").count()
    again = run_experiments(spark, cfg, "exp1-again", reanalyse="exp1", quick=True)
    assert spark.table(cfg.table(tables.RUNS)).where("job = 'train'").count() == runs_before
    assert again.seed_evaluations == result.seed_evaluations
    first, second = (json.loads(Path(r.json).read_text()) for r in (result, again))
    assert second["comparisons"] == first["comparisons"] and second["claims"] == first["claims"]
    assert second["sampling"] == first["sampling"] and second["features_version"] == first["features_version"]
    assert "(the evaluations of `exp1`, analysed again)" in Path(again.report).read_text()
    with pytest.raises(ValueError, match="has no rows of experiment 'exp9'"):
        run_experiments(spark, cfg, "exp9-again", reanalyse="exp9")


@pytest.mark.rebuilds_shared_lake
def test_the_sampling_ablation_trains_on_every_train_row_without_a_feature_rebuild(spark, eval_lake, make_config):
    import json
    from pathlib import Path

    from calibration.experiments import run_experiments

    # on the shared lake, after every test of it (the marker): its training runs become the
    # lake's latest, which a test asking for "the latest training run" would otherwise get
    cfg = make_config("training.batch_size=256", "training.shuffle_buffer=0", "experiments.seeds=[17]",
                      "experiments.epochs=1", "experiments.baseline=camoe",
                      "experiments.sampling_ablation_floors=[1.0]", database=eval_lake.database)
    features = cfg.table(tables.FEATURES)
    features_before = tables.latest_version(spark, features)
    tables.note_minted_run_id("exp-s")    # new to the lake, as an id jobs/experiments.py mints
    result = run_experiments(spark, cfg, "exp-s", models=("camoe",), sampling_ablation=True)
    assert set(result.seed_evaluations) == {"camoe", "camoe@negatives>=1"}
    # rates belong to the training set: the features table is not rebuilt, both models read one
    # snapshot through one window, each from its own training set
    assert tables.latest_version(spark, features) == features_before
    versions = {r.model: r.features_version for r in spark.table(cfg.table(tables.EXPERIMENT_RESULTS))
                .where("run_id = 'exp-s'").select("model", "features_version").distinct().collect()}
    assert versions == {"camoe": features_before, "camoe@negatives>=1": features_before}
    main, variant = (read_artifact(lineage.find_train_run(spark, cfg, run)["artifact"])
                     for run in ("exp-s-train-camoe", "exp-s-train-camoe-negatives-1"))
    assert main.window == variant.window and main.training_set_id != variant.training_set_id
    sets = spark.table(cfg.table(tables.TRAINING_SETS))

    def set_rows(artifact) -> int:
        return sets.where(f"set_id = '{artifact.training_set_id}'").count()

    train_days = spark.table(features).where(_days(main.window, TRAIN)).count()
    assert set_rows(variant) == train_days > set_rows(main)             # floor 1.0 keeps every train row
    assert {s for (_, label), s in variant.spec.rate_of.items() if label == 0} <= {1.0}
    # evaluation reads the same validation and test days for both (never down-sampled)
    temperatures = spark.table(cfg.table(tables.TEMPERATURES)).where(
        "run_id IN ('exp-s-eval-camoe', 'exp-s-eval-camoe-negatives-1')").groupBy("run_id").sum("validation_rows")
    assert len({r[1] for r in temperatures.collect()}) == 1
    document = json.loads(Path(result.json).read_text())
    assert document["window"] == main.window.describe()
    overall = [c for c in document["sampling"] if c["segment"] == "all"]
    assert {(c["candidate"], c["reference"], c["metric"]) for c in overall} == {
        ("camoe@negatives>=1", "camoe", m) for m in ("auc_pr", "excess_log_loss", "true_calibration_ratio")}
    assert "Sampling ablation, AUC-PR: % change vs the same model" in Path(result.report).read_text()


def test_masked_scores_are_recalibrated_with_their_own_experts_temperatures(spark, experiment):
    """App. A.2's masked models are judged calibrated as the model is: expert k's temperatures
    are fitted on the validation logits with expert k zeroed (each beats the model's own there),
    and the test's masked_pctr is sigmoid(logit_k / T_k) instead of sigmoid(logit_k / T)."""
    from calibration.evaluate import _nll, downsampling_shift, fit_run_temperatures, recalibrate_masked
    from training.table_scoring import RowSelection, score_table

    cfg, _ = experiment
    artifact_dir = lineage.find_train_run(spark, cfg, "exp1-train-camoe-seed17")["artifact"]
    artifact = read_artifact(artifact_dir)
    snapshot = tables.check_data_files(spark, artifact.features_table, artifact.features_version)
    shift = downsampling_shift(spark, cfg, artifact)
    temperatures, _, masked = fit_run_temperatures(spark, cfg, snapshot, artifact_dir, artifact, shift, True)
    tasks = list(artifact.tasks)
    assert masked.shape == (2, len(tasks))
    validation = score_table(spark, snapshot, artifact_dir, shift, None, keep=["label"], masked_experts=True,
                             selection=RowSelection.of_split(artifact.window, VALIDATION, artifact.model_slots)
                             ).toPandas()
    raw = np.stack(validation["masked_pctr"].to_numpy())
    for k in range(2):
        for i, task in enumerate(tasks):
            sel = (validation["task"] == task).to_numpy()
            z, y = np.log(raw[sel, k]) - np.log1p(-raw[sel, k]), validation["label"].to_numpy()[sel]
            assert _nll(z, y, masked[k, i]) <= _nll(z, y, temperatures[task]) + 1e-9
    assert not np.allclose(masked, [[temperatures[t] for t in tasks]] * 2, rtol=1e-3)

    p = np.array([[0.1, 0.02], [0.3, 0.6]])
    rows = spark.createDataFrame([(tasks[0], p[0].tolist()), (tasks[1], p[1].tolist())],
                                 "task string, masked_pctr array<double>")
    got = np.array([r.masked_pctr for r in recalibrate_masked(rows, tasks, temperatures, masked).collect()])
    for i, task in enumerate(tasks):
        logit_k = (np.log(p[i]) - np.log1p(-p[i])) * temperatures[task]        # the logit before T
        np.testing.assert_allclose(got[i], 1 / (1 + np.exp(-logit_k / masked[:, i])), rtol=1e-9)
