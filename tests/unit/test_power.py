"""calibration/power.py: seeds aligned on the same rows, paired changes per slot, claim verdicts (no JVM)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from calibration.paper_claims import PAPER_CLAIMS, label_free, masking_claims, resolve_claims
from calibration.power import Claim, compare, judge_claims, scored_rows, verdict
from core.config import PROJECT_ROOT, load_config


def _frame(seed: int = 0, n: int = 8000) -> pd.DataFrame:
    """Two slots; 'good' scores near the truth, 'noisy' far from it, 'twin' equal to 'noisy'."""
    rng = np.random.default_rng(seed)
    truth = rng.beta(1, 25, n)
    label = (rng.random(n) < truth).astype(int)
    slot = rng.choice(["stream_audio", "stream_video"], n, p=[0.8, 0.2])
    ids = [f"imp-{i:06d}" for i in range(n)]
    parts = []
    for model, noise in (("good", 0.1), ("noisy", 1.5), ("twin", 1.5)):
        for s in (1, 2):
            jitter = np.random.default_rng(100 * s + (model == "good")).normal(0, noise, n)
            if model == "twin":
                jitter = np.random.default_rng(100 * s).normal(0, noise, n)
            pctr = 1 / (1 + np.exp(-(np.log(truth / (1 - truth)) + jitter)))
            part = pd.DataFrame({"model": model, "seed": s, "impression_id": ids, "slot": slot, "label": label,
                                 "true_ctr": truth, "pctr": pctr})
            parts.append(part.sample(frac=1.0, random_state=s))       # each run in its own row order
    return pd.concat(parts, ignore_index=True)


def test_rows_are_aligned_by_impression_whatever_order_each_run_wrote_them():
    frame = _frame()
    rows = scored_rows(frame)
    assert rows.rows == 8000 and list(rows.impression_id[:2]) == ["imp-000000", "imp-000001"]
    assert rows.scores["good"].shape == (2, 8000) and rows.seeds["good"] == [1, 2]
    one = frame[(frame.model == "good") & (frame.seed == 2)].set_index("impression_id").loc["imp-000123"]
    assert rows.scores["good"][1, 123] == one.pctr and rows.true_ctr[123] == one.true_ctr
    assert rows.ceiling_ctr is None                                  # not in these rows


def test_a_run_that_misses_or_repeats_a_row_is_named():
    frame = _frame(n=2000)
    short = frame.drop(frame[(frame.model == "twin") & (frame.seed == 2)].index[:1])
    with pytest.raises(ValueError, match="twin seed 2 scored 1999 rows"):
        scored_rows(short)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['pctr'\]"):
        scored_rows(frame.drop(columns="pctr"))


def test_paired_changes_resolve_a_better_model_and_give_exactly_zero_for_a_copy():
    rows = scored_rows(_frame())
    better = {(c.segment, c.metric): c for c in compare(rows, "good", "noisy", ["all", "stream_audio"],
                                                        ["auc_pr", "excess_log_loss"])}
    assert better[("all", "auc_pr")].change.relative.lo > 0
    assert better[("all", "excess_log_loss")].change.absolute.hi < 0        # lower is better
    assert better[("stream_audio", "auc_pr")].rows == (rows.slot == "stream_audio").sum()
    # a copy, seed for seed (both ran seeds 1 and 2, so seed s is paired with seed s): every
    # per-seed difference is 0, and so is the interval
    same = compare(rows, "twin", "noisy", ["all"], ["auc_pr"])[0].change
    assert same.paired_seeds and (same.absolute.estimate, same.absolute.lo, same.absolute.hi) == (0.0, 0.0, 0.0)
    # not paired (the seeds counted as independent draws), the copy's seed spread widens it around 0
    from calibration.bootstrap import paired_bootstrap
    unpaired = paired_bootstrap("auc_pr", rows.scores["noisy"], rows.scores["twin"], labels=rows.label, resamples=50)
    assert unpaired.absolute.lo < 0 < unpaired.absolute.hi
    with pytest.raises(ValueError, match="model 'nope' has no scored rows"):
        compare(rows, "nope", "noisy", ["all"], ["auc_pr"])
    with pytest.raises(ValueError, match="unknown metric"):
        compare(rows, "good", "noisy", ["all"], ["accuracy"])


def test_verdicts_follow_the_interval_and_the_better_direction():
    rows = scored_rows(_frame())
    up = compare(rows, "good", "noisy", ["all"], ["auc_pr"])[0]
    down = compare(rows, "noisy", "good", ["all"], ["auc_pr"])[0]
    tie = compare(rows, "twin", "noisy", ["all"], ["auc_pr"])[0]
    assert (verdict(up, "higher"), verdict(down, "higher"), verdict(tie, "higher")) == (
        "confirmed", "refuted", "unresolved")
    assert verdict(up, "lower") == "refuted"


def test_claims_are_judged_only_for_models_that_ran():
    rows = scored_rows(_frame())
    claim = Claim("good beats noisy", "test", "good", "noisy", ("all", "stream_video", "podcast"))
    verdicts = judge_claims(rows, [claim])
    assert [(v.segment, v.verdict) for v in verdicts] == [("all", "confirmed"), ("stream_video", "confirmed")]
    assert verdicts[0].as_dict()["relative"]["lo"] > 0 and verdicts[0].as_dict()["paired_seeds"]
    assert judge_claims(rows, [Claim("x", "test", "camoe", "noisy", ("all",))]) == []     # camoe did not run
    assert {c.candidate for c in PAPER_CLAIMS} == {"camoe"}     # every paper claim is about the CAMoE role


def _renamed(frame: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    return frame.assign(model=frame["model"].map(lambda m: names.get(m, m)))


def test_claims_resolve_by_role_on_a_conf_with_other_model_names():
    """The starter conf calls its one-task network one_head: "2 tasks vs 1" is judged on it, and
    the claims whose roles no model plays are listed with the reason."""
    cfg = load_config(PROJECT_ROOT / "conf" / "examples" / "starter")
    settings = cfg.experiments.claims
    assert settings.roles == {"camoe": "camoe", "baseline": "wide_deep", "one_task": "one_head"}
    rows = scored_rows(_renamed(_frame(), {"good": "camoe", "noisy": "one_head", "twin": "wide_deep"}))
    claims, skipped = resolve_claims(rows, settings, cfg.taxonomy, cfg.models)
    by_reference = {c.reference: c for c in claims}
    assert set(by_reference) == {"wide_deep", "one_head"}
    two_vs_one = by_reference["one_head"]
    assert two_vs_one.claim == "2 tasks (audio/video) beat one task" and two_vs_one.candidate == "camoe"
    assert two_vs_one.segments == ("all", "stream_audio", "stream_video")
    verdicts = {v.segment: v.verdict for v in judge_claims(rows, [two_vs_one], resamples=30)}
    assert verdicts["all"] == "confirmed"
    reasons = {n.claim: n.reason for n in skipped}
    assert "no model plays 'no_alm'" in reasons["adaptive loss masking helps the video slots"]
    assert "'per_slot_tasks'" in reasons["2 tasks (audio/video) beat one task per slot"]
    assert "masked-expert scores were not recorded" in reasons["masking one expert at inference raises video AUC-PR"]
    # a role the conf gives a model that did not run: named as such
    cfg_default = load_config()
    rows_default = scored_rows(_renamed(_frame(), {"good": "camoe", "noisy": "camoe_t1", "twin": "wide_deep"}))
    _, skipped = resolve_claims(rows_default, cfg_default.experiments.claims, cfg_default.taxonomy, cfg_default.models)
    assert any(n.reason == "mmoe did not run in this experiment" for n in skipped)


def test_claim_roles_are_validated_naming_the_key():
    from core.config import ConfigError

    with pytest.raises(ConfigError, match=r"'experiments\.claims\.roles\.two_heads' is not a claim role"):
        load_config(overrides=["experiments.claims.roles.two_heads=camoe"])
    with pytest.raises(ConfigError, match=r"'experiments\.claims\.roles\.one_task' must be one of experiments"):
        load_config(overrides=["experiments.claims.roles.one_task=nope"])
    with pytest.raises(ConfigError, match=r"'experiments\.claims\.video_modality' must be one of the modalities"):
        load_config(overrides=["experiments.claims.video_modality=tv"])


def test_the_claims_follow_a_slots_yaml_with_other_slots():
    """The default conf names no slot in experiments.claims, so a team's slots load unchanged."""
    cfg = load_config(extra_files=[PROJECT_ROOT / "tests" / "data" / "alt_log.yaml"])
    assert cfg.experiments.claims.main_slots == ("radio_spot", "clip")
    assert cfg.experiments.claims.video_modality == "video"
    assert load_config().experiments.claims.main_slots == ("stream_audio", "stream_video")


def test_the_report_marks_resolved_changes_and_gives_the_achieved_half_widths():
    from calibration.experiment_report import power_markdown
    from calibration.experiments import power_analysis

    rows = scored_rows(_frame())
    power = power_analysis(rows, "noisy", ["stream_audio", "stream_video"], resamples=50)
    good = {(c["segment"], c["metric"]): c for c in power["comparisons"] if c["candidate"] == "good"}
    assert set(good) == {(s, m) for s in ("stream_audio", "stream_video", "all")
                         for m in ("auc_pr", "excess_log_loss", "true_calibration_ratio")}
    widths = power["auc_pr_change_half_width"]
    assert set(widths) == {"stream_audio", "stream_video"}
    expected = max(100 * c["relative"]["half_width"] for c in power["comparisons"]
                   if c["segment"] == "stream_video" and c["metric"] == "auc_pr")
    assert widths["stream_video"]["max_points"] == pytest.approx(expected)
    text = power_markdown(power, "noisy", ["stream_audio", "stream_video"], rows.seeds)
    good_row = next(line for line in text.splitlines() if line.startswith("| good |"))
    assert good_row.count("**") == 6                         # three resolved cells, each in bold
    twin_row = next(line for line in text.splitlines() if line.startswith("| twin |"))
    assert "**" not in twin_row.split("|")[-2]              # the copy's overall change is not resolved
    assert "target <= 3" in text and "good [1, 2]" in text


def test_the_pareto_plot_carries_each_models_intervals(tmp_path):
    from calibration.experiment_report import pareto_points
    from calibration.experiments import power_analysis
    from calibration.plots import pareto

    power = power_analysis(scored_rows(_frame()), "noisy", ["stream_audio", "stream_video"], resamples=30)
    points = pareto_points(power, "stream_audio", "stream_video").set_index("model")
    assert sorted(points.index) == ["good", "twin"]
    good = next(c for c in power["comparisons"] if (c["candidate"], c["segment"], c["metric"]) ==
                ("good", "stream_video", "auc_pr"))
    assert points.loc["good", "stream_video AUC-PR change hi"] == pytest.approx(100 * good["relative"]["hi"])
    x, y = "stream_audio AUC-PR change", "stream_video AUC-PR change"
    out = pareto(points.reset_index(), tmp_path / "pareto.png", x, y)
    assert out.stat().st_size > 1000


def test_camoe_is_held_to_the_ceiling_and_calibration_targets_per_slot():
    from calibration.experiment_report import target_checks, targets_markdown

    summary = {"camoe": {"stream_audio": {"signal_fraction_of_ceiling": 0.97, "true_calibration_ratio": 1.02,
                                          "rows": 1000, "positives": 12},
                         "stream_video": {"signal_fraction_of_ceiling": 0.90, "true_calibration_ratio": 1.08,
                                          "rows": 100, "positives": 4},
                         "all": {"signal_fraction_of_ceiling": 0.95, "true_calibration_ratio": 0.95,
                                 "rows": 1100, "positives": 16}},
               "wide_deep": {"stream_audio": {"signal_fraction_of_ceiling": 0.5}}}
    train_clicks = {"stream_audio": 100, "stream_video": 900, "all": 1000}
    checks = {c["slot"]: c for c in target_checks(summary, "camoe", ["stream_audio", "stream_video", "podcast"],
                                                  train_clicks)}
    assert set(checks) == {"stream_audio", "stream_video", "all"}        # podcast has no rows: no check
    assert (checks["stream_audio"]["meets_ceiling_target"], checks["stream_audio"]["calibration_within_bounds"]) \
        == (True, True)
    assert (checks["stream_video"]["meets_ceiling_target"], checks["stream_video"]["calibration_within_bounds"]) \
        == (False, False)
    assert checks["all"]["meets_ceiling_target"] and checks["all"]["calibration_within_bounds"]   # bounds inclusive
    assert target_checks(summary, "camoe_t7", ["stream_audio"]) == []                            # not run
    table = targets_markdown(list(checks.values()), "camoe")
    # the training clicks bound how closely any model can place a slot's mean: 1.96 / sqrt(clicks)
    assert checks["stream_audio"]["base_rate_precision"] == pytest.approx(0.196)
    assert checks["stream_audio"]["calibration_within_precision"]                 # 1.02 within 1 +- 0.196
    assert not checks["stream_video"]["calibration_within_precision"]             # 1.08 outside 1 +- 0.065
    assert "| stream_video | 100 | 4 | 0.900 | no | 1.080 | no | 900 | 0.065 | no |" in table
    assert target_checks(summary, "camoe", ["stream_audio"])[0]["calibration_within_precision"] is None


def test_masked_expert_scores_become_variants_judged_as_the_paper_states_them():
    """App. A.2: masking an expert *raises* video AUC-PR (Table 7), judged per video slot with the
    paper's number beside ours, the masked model paired seed for seed with the model."""
    from calibration.experiments import power_analysis

    cfg = load_config()
    frame = _renamed(_frame(n=4000), {"good": "camoe"})
    good = frame["model"] == "camoe"
    # 'camoe' recorded two masked variants: expert 0 zeroed = the noisy scores, expert 1 zeroed = itself
    noisy = frame[frame["model"] == "noisy"].set_index(["seed", "impression_id"])["pctr"]
    masked0 = noisy.reindex(pd.MultiIndex.from_frame(frame.loc[good, ["seed", "impression_id"]])).to_numpy()
    frame["masked_pctr"] = None
    frame.loc[good, "masked_pctr"] = pd.Series(
        [np.array([m, p]) for m, p in zip(masked0, frame.loc[good, "pctr"])], index=frame.index[good])
    rows = scored_rows(frame)
    assert set(rows.scores) == {"camoe", "noisy", "twin", "camoe/masked-expert-0", "camoe/masked-expert-1"}
    assert rows.seeds["camoe/masked-expert-0"] == [1, 2]
    assert np.array_equal(rows.scores["camoe/masked-expert-1"], rows.scores["camoe"])
    claims = masking_claims(rows, "camoe", ("stream_video",))
    assert [(c.candidate, c.reference, c.paper) for c in claims] == [
        ("camoe/masked-expert-0", "camoe", (("stream_video", 6.6),)),
        ("camoe/masked-expert-1", "camoe", (("stream_video", 6.5),))]
    assert masking_claims(rows, "camoe", ()) == []                       # no video slot: nothing to judge
    power = power_analysis(rows, "noisy", ["stream_audio", "stream_video"], resamples=30,
                           claim_settings=cfg.experiments.claims, taxonomy=cfg.taxonomy, models=cfg.models)
    assert not any("masked" in c["candidate"] for c in power["comparisons"])     # not in the model tables
    masking = {(c["candidate"], c["metric"]): c for c in power["claims"] if "masked" in c["candidate"]}
    assert {c["segment"] for c in masking.values()} == {"stream_video"}
    # zeroing expert 0 gives the noisy scores: AUC-PR falls, the paper's "raises" is refuted
    assert masking[("camoe/masked-expert-0", "auc_pr")]["verdict"] == "refuted"
    assert masking[("camoe/masked-expert-0", "auc_pr")]["paper_change_pct"] == 6.6
    assert masking[("camoe/masked-expert-1", "auc_pr")]["verdict"] == "unresolved"     # no change at all
    assert masking[("camoe/masked-expert-0", "excess_log_loss")]["verdict"] == "refuted"


def test_a_sampling_variant_raises_negative_rates_to_the_floor_and_keeps_positives():
    from calibration.experiments import sampling_entry, sampling_variant
    from core.config import SamplingSettings

    configured = SamplingSettings(seed=11, rates={("stream_audio", 0): 0.1, ("stream_audio", 1): 1.0,
                                                  ("stream_video", 0): 1.0, ("stream_video", 1): 0.8})
    milder = sampling_variant(configured, 0.3)
    assert milder.rates == {("stream_audio", 0): 0.3, ("stream_audio", 1): 1.0,
                            ("stream_video", 0): 1.0, ("stream_video", 1): 0.8}
    assert set(sampling_variant(configured, 1.0).rates.values()) == {1.0, 0.8}     # positives as configured
    assert milder.seed == 11 and sampling_entry("camoe", 1.0) == "camoe@negatives>=1"


def test_every_auc_pr_claim_is_also_judged_label_free_where_the_log_has_true_ctr():
    from calibration.experiments import power_analysis

    claim = Claim("good beats noisy", "test", "good", "noisy", ("all",))
    rows = scored_rows(_frame(n=3000))
    verdicts = judge_claims(rows, [claim, *label_free([claim])], resamples=30)
    assert [(v.claim.metric, v.verdict) for v in verdicts] == [
        ("auc_pr", "confirmed"), ("excess_log_loss", "confirmed")]
    blind = scored_rows(_frame(n=3000).drop(columns="true_ctr"))                 # a real log: label metrics only
    assert [v.claim.metric for v in judge_claims(blind, [claim, *label_free([claim])], resamples=30)] == ["auc_pr"]
    ece = Claim("good is calibrated better", "test", "good", "noisy", ("all",), "squared_ce_debiased")
    assert [c.metric for c in label_free([claim, ece])] == ["excess_log_loss"]       # calibration claims have no twin
    power = power_analysis(rows, "noisy", ["stream_audio"], resamples=20)
    assert power["claims"] == [] and power["claims_not_judged"] == []            # no claim settings given


def test_an_experiments_models_are_checked_before_anything_trains():
    """The one check behind both the job's exit 2 and the library's refusal: breaking any branch
    (an unknown model let through, the baseline or the sampling ablation's target not required)
    fails here."""
    from calibration.experiments import ModelChoiceError, experiment_models

    cfg = load_config()
    settings = cfg.experiments
    assert experiment_models(settings, cfg.models) == tuple(settings.models)
    assert experiment_models(settings, cfg.models, ["wide_deep", "camoe"], sampling_ablation=True) == \
        ("wide_deep", "camoe")
    cases = [(["wide_deep", "camoe9"], False, "models", "'camoe9' is not a model of conf/models.yaml"),
             (["camoe"], False, "models", "the baseline wide_deep (experiments.baseline) must be among them"),
             (["wide_deep", "dcnv2"], True, "sampling_ablation",
              "retrains experiments.target_model camoe: add it to the models")]
    for models, sampling, option, message in cases:
        with pytest.raises(ModelChoiceError, match=re.escape(message)) as raised:
            experiment_models(settings, cfg.models, models, sampling_ablation=sampling)
        assert raised.value.option == option
