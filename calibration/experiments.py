"""The paper's ablation tables from slot_metrics rows of several evaluation runs.

Input is a pandas frame of slot_metrics rows (one experiment: every model evaluated on the same
features snapshot); output is markdown: the analogues of the paper's Table 2 (per-slot % change
in AUC-PR vs the baseline), Table 3 (task groupings), Table 4 (ECE with and without ALM),
Table 5 (DCN / MMoE) and the oracle ceiling. Everything here is pure pandas.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd

# (title, models, what the paper asks of them)
ABLATIONS = (
    ("Task grouping (paper Table 3)", ("dcnv2", "camoe_t1", "camoe", "camoe_music_podcast", "camoe_t7"),
     "t=1 vs modality (audio/video) vs content (music/podcast) vs one task per slot"),
    ("Adaptive loss masking (paper Table 4)", ("camoe_no_alm", "camoe"), "CAMoE with and without ALM"),
    ("Experts (paper Table 5)", ("mmoe", "camoe"),
     "MLP experts with the x0 skip (MMoE = CAMoE without DCN) vs DCN-v2 cross + MLP experts"),
)


def change_table(metrics: pd.DataFrame, baseline: str, slots: list[str], column: str = "auc_pr") -> pd.DataFrame:
    """Rows: models; columns: slots + all; values: % change of ``column`` vs ``baseline``.

    metrics: calibrated slot_metrics rows with model, level, slot and ``column``. An ``oracle``
    row gives the ceiling: the true click probability scored as a model.
    """
    rows = metrics[metrics["calibrated"] & metrics["level"].isin(["slot", "all"])]
    wide = rows.pivot_table(index="model", columns="slot", values=column, aggfunc="first")
    wide = wide[[s for s in [*slots, "all"] if s in wide.columns]]
    if baseline not in wide.index:
        raise ValueError(f"baseline model {baseline!r} has no rows (models: {sorted(wide.index)})")
    base = wide.loc[baseline]
    change = 100.0 * (wide / base - 1.0)
    if "oracle_auc_pr" in rows.columns and column == "auc_pr":
        oracle = rows.drop_duplicates("slot").set_index("slot")["oracle_auc_pr"].reindex(wide.columns)
        change.loc["oracle"] = 100.0 * (oracle / base - 1.0)
    return change


def ece_table(metrics: pd.DataFrame, models: tuple[str, ...], slots: list[str]) -> pd.DataFrame:
    """ECE (equal-mass) per slot before and after temperature for ``models``."""
    rows = metrics[metrics["model"].isin(models) & metrics["level"].isin(["slot", "all"])]
    rows = rows.assign(variant=rows["model"] + rows["calibrated"].map({False: " (raw)", True: " (T)"}))
    wide = rows.pivot_table(index="variant", columns="slot", values="ece_equal_mass", aggfunc="first")
    return wide[[s for s in [*slots, "all"] if s in wide.columns]]


def pareto_points(power: dict, x_slot: str, y_slot: str) -> pd.DataFrame:
    """Fig. 7: per model, the % AUC-PR change vs the baseline on two slots with its 95% interval
    (``power_analysis``'s comparisons: seed-averaged, paired bootstrap). Columns: model, the two
    changes, and ``<change> lo`` / ``<change> hi``."""
    by_model: dict[str, dict] = {}
    for c in power["comparisons"]:
        if c["metric"] == "auc_pr" and c["segment"] in (x_slot, y_slot):
            by_model.setdefault(c["candidate"], {})[c["segment"]] = c["relative"]
    rows = []
    for model, changes in by_model.items():
        if x_slot in changes and y_slot in changes:
            row = {"model": model}
            for slot in (x_slot, y_slot):
                name = f"{slot} AUC-PR change"
                row.update({name: 100 * changes[slot]["estimate"], f"{name} lo": 100 * changes[slot]["lo"],
                            f"{name} hi": 100 * changes[slot]["hi"]})
            rows.append(row)
    return pd.DataFrame(rows)


def markdown_report(metrics: pd.DataFrame, baseline: str, slots: list[str], header: str = "") -> str:
    models = set(metrics["model"])
    with_oracle = "auc_pr_oracle_fraction" in metrics.columns and metrics["auc_pr_oracle_fraction"].notna().any()
    parts = [header,
             f"## AUC-PR, % change vs {baseline} per slot (paper Table 2)"
             + ("; `oracle` = true click probability" if with_oracle else ""),
             _fmt(change_table(metrics, baseline, slots), "{:+.1f}")]
    if with_oracle:
        fraction = metrics[metrics["calibrated"] & (metrics["level"] == "slot")].pivot_table(
            index="model", columns="slot", values="auc_pr_oracle_fraction", aggfunc="first")
        parts += ["## AUC-PR as a fraction of the oracle's",
                  _fmt(fraction[[s for s in slots if s in fraction.columns]], "{:.3f}")]
    else:
        parts.append("The log has no true click probability (true_ctr): the oracle, the learnable ceiling and "
                     "the label-free metrics are left out; every comparison is on the logged clicks.")
    for title, names, what in ABLATIONS:
        present = [m for m in names if m in models]
        if len(present) < 2:
            continue
        table = change_table(metrics, baseline, slots).loc[present]
        parts += [f"## {title}: {what}; AUC-PR % change vs {baseline}", _fmt(table, "{:+.1f}")]
        if "camoe_no_alm" in present:            # the paper's ALM table reports calibration too
            parts += ["ECE (equal-mass bins) before (raw) and after (T) temperature scaling:",
                      _fmt(ece_table(metrics, tuple(present), slots), "{:.5f}")]
    return "\n\n".join(p for p in parts if p) + "\n"


def _loss_name(settings) -> str:
    if settings.alm:
        return f"ALM ({settings.alm_normalization})"
    return "no ALM"


def _fmt(frame: pd.DataFrame, number: str) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for index, row in frame.iterrows():
        cells = ["" if pd.isna(v) else number.format(v) for v in row.values]
        lines.append(f"| {index} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- seeds and intervals
POWER_METRICS = ("auc_pr", "excess_log_loss", "true_calibration_ratio")
HALF_WIDTH_SLOTS = ("stream_audio", "stream_video")      # the power target: CI half-width <= 3 points


def power_analysis(rows, baseline: str, slots: list[str], resamples: int, masking_model: str = "camoe") -> dict:
    """Every model vs ``baseline`` per slot and overall (paired bootstrap over test impressions and
    seeds), the paper's claims judged from the same rows (expert masking on ``masking_model``),
    and the achieved AUC-PR half-widths.

    rows: ``calibration.power.ScoredRows``. Returns plain dicts (the JSON's shape)."""
    from calibration.power import ALL, CLAIMS, compare, is_masked_variant, judge_claims, label_free, masking_claims

    segments = [s for s in [*slots, ALL] if s == ALL or (rows.slot == s).any()]
    models = [m for m in rows.scores if not is_masked_variant(m) and SAMPLING_ENTRY not in m]
    comparisons = [c for model in models if model != baseline
                   for c in compare(rows, model, baseline, segments, POWER_METRICS, resamples)]
    # the sampling ablation: each variant vs the same model on the configured rates
    sampling = [c for variant in rows.scores if SAMPLING_ENTRY in variant
                for c in compare(rows, variant, variant.split(SAMPLING_ENTRY)[0], segments, POWER_METRICS,
                                 resamples)]
    half_widths = {}
    for slot in HALF_WIDTH_SLOTS:
        widths = [100 * c.change.relative.half_width for c in comparisons if c.segment == slot and c.metric == "auc_pr"]
        if widths:
            half_widths[slot] = {"max_points": max(widths), "mean_points": float(np.mean(widths))}
    claims = (*CLAIMS, *masking_claims(rows, masking_model))
    return {"comparisons": [c.as_dict() for c in comparisons], "sampling": [c.as_dict() for c in sampling],
            "claims": [v.as_dict() for v in judge_claims(rows, [x for c in claims for x in (c, *label_free([c]))],
                                                         resamples)],
            "auc_pr_change_half_width": half_widths}


def _interval_cell(relative: dict) -> str:
    """'+2.1 [-1.0, +5.3]' in % points; bold when the interval excludes 0."""
    if not np.isfinite(relative["lo"]):
        return ""
    cell = f"{100 * relative['estimate']:+.1f} [{100 * relative['lo']:+.1f}, {100 * relative['hi']:+.1f}]"
    return f"**{cell}**" if relative["lo"] > 0 or relative["hi"] < 0 else cell


def power_markdown(power: dict, baseline: str, slots: list[str], seeds: dict[str, list[int]]) -> str:
    """The report's interval tables: changes vs the baseline, the claims, the achieved widths."""
    from calibration.power import is_masked_variant

    parts = []
    for key, versus in (("comparisons", baseline), ("sampling", "the same model on conf/data.yaml's rates")):
        comparisons = pd.DataFrame(power.get(key, []))
        if comparisons.empty:
            continue
        columns = [s for s in [*slots, "all"] if s in set(comparisons["segment"])]
        what = "Sampling ablation, " if key == "sampling" else ""
        for metric, title in (("auc_pr", "AUC-PR"),
                              ("excess_log_loss", "excess log loss vs true_ctr (lower is better)"),
                              ("true_calibration_ratio", "calibration ratio vs true_ctr")):
            part = comparisons[comparisons["metric"] == metric]
            if part.empty or (metric == "true_calibration_ratio" and key != "sampling"):
                continue
            table = part.pivot_table(index="candidate", columns="segment", values="relative", aggfunc="first")
            table = table[[c for c in columns if c in table.columns]].map(_interval_cell)
            parts += [f"## {what}{title}: % change vs {versus} with 95% CI (paired bootstrap over test impressions "
                      f"and training seeds; bold: the interval excludes 0)", _fmt(table, "{}")]
    if power["claims"]:
        lines = ["| claim | paper | segment | metric | change % [95% CI] | verdict |", "|---|---|---|---|---|---|"]
        for c in power["claims"]:
            cell = _interval_cell(c["relative"]).replace("**", "")
            lines.append(f"| {c['claim']} ({c['candidate']} vs {c['reference']}) | {c['source']} | {c['segment']} | "
                         f"{c['metric']} | {cell} | {c['verdict']} |")
        parts += ["## The paper's claims: confirmed when the interval lies on the better side of 0, refuted "
                  "when on the worse side, unresolved when it covers 0", "\n".join(lines)]
    if power["auc_pr_change_half_width"]:
        parts.append("Achieved half-width of the AUC-PR change intervals (percentage points; target <= 3): "
                     + ", ".join(f"{slot} max {w['max_points']:.1f} (mean {w['mean_points']:.1f})"
                                 for slot, w in power["auc_pr_change_half_width"].items())
                     + ". Seeds per model: " + ", ".join(f"{m} {s}" for m, s in sorted(seeds.items())
                                                    if not is_masked_variant(m)) + ".")
    return "\n\n".join(parts)


def model_slot_summary(metrics: pd.DataFrame) -> dict:
    """Per model and segment, the calibrated slot_metrics averaged over seeds (JSON shape)."""
    wanted = ["auc_pr", "auc_pr_oracle_fraction", "auc_pr_ceiling_fraction", "signal_fraction_of_ceiling",
              "signal_fraction_of_oracle", "excess_log_loss", "true_calibration_ratio", "calibration_ratio",
              "ece_equal_mass", "rows", "positives"]
    rows = metrics[metrics["calibrated"] & metrics["level"].isin(["slot", "all"])]
    present = [c for c in wanted if c in rows.columns]
    mean = rows.groupby(["model", "slot"])[present].mean()
    out: dict = {}
    for (model, slot), values in mean.iterrows():
        out.setdefault(model, {})[slot] = {k: (None if pd.isna(v) else float(v)) for k, v in values.items()}
    return out


# ----------------------------------------------------------------------------- the sampling ablation
SAMPLING_ENTRY = "@negatives>="         # camoe@negatives>=1: camoe trained on a snapshot keeping every row


def sampling_entry(model: str, floor: float) -> str:
    return f"{model}{SAMPLING_ENTRY}{floor:g}"


def sampling_variant(sampling, floor: float):
    """``sampling`` (core.config.SamplingSettings) with every slot keeping at least ``floor``
    of its negatives; positives as configured. floor = 1.0 keeps every train row."""
    return replace(sampling, rates={(slot, label): max(rate, floor) if label == 0 else rate
                                    for (slot, label), rate in sampling.rates.items()})


# ----------------------------------------------------------------------------- the benchmark's targets
CEILING_SIGNAL_TARGET = 0.95            # gain(model) >= 0.95 gain(ceiling), gain = LL(slot base rate) - LL(x)
TRUE_CALIBRATION_BOUNDS = (0.95, 1.05)  # sum(pCTR) / sum(true_ctr) per slot after temperature


def target_checks(summary: dict, model: str, slots: list[str]) -> list[dict]:
    """Per slot (seed-averaged ``model_slot_summary``): does ``model`` capture >= 0.95 of the
    ceiling's signal and is its calibration ratio against true_ctr within [0.95, 1.05]?
    Empty when the model was not run or the log has no true_ctr."""
    lo, hi = TRUE_CALIBRATION_BOUNDS
    out = []
    for slot in [*slots, "all"]:
        values = summary.get(model, {}).get(slot)
        if not values or values.get("signal_fraction_of_ceiling") is None:
            continue
        fraction, ratio = values["signal_fraction_of_ceiling"], values.get("true_calibration_ratio")
        out.append({"slot": slot, "rows": values.get("rows"), "positives": values.get("positives"),
                    "signal_fraction_of_ceiling": fraction, "meets_ceiling_target": fraction >= CEILING_SIGNAL_TARGET,
                    "true_calibration_ratio": ratio,
                    "calibration_within_bounds": ratio is not None and lo <= ratio <= hi})
    return out


def targets_markdown(checks: list[dict], model: str) -> str:
    if not checks:
        return ""
    lines = [f"## {model}: share of the ceiling's signal (target >= {CEILING_SIGNAL_TARGET}) and calibration "
             f"vs true_ctr after temperature (target {TRUE_CALIBRATION_BOUNDS[0]}-{TRUE_CALIBRATION_BOUNDS[1]}), "
             "seed means",
             "| slot | test rows | clicks | signal / ceiling | met | sum pCTR / sum true_ctr | met |",
             "|---|---:|---:|---:|---|---:|---|"]
    for c in checks:
        ratio = "" if c["true_calibration_ratio"] is None else f"{c['true_calibration_ratio']:.3f}"
        lines.append(f"| {c['slot']} | {c['rows'] or 0:,.0f} | {c['positives'] or 0:,.0f} | "
                     f"{c['signal_fraction_of_ceiling']:.3f} | {'yes' if c['meets_ceiling_target'] else 'no'} | "
                     f"{ratio} | {'yes' if c['calibration_within_bounds'] else 'no'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one experiment
def run_experiments(spark, cfg, run_id: str, models: tuple[str, ...] | None = None,
                    features_version: int | None = None, report_path=None, log=None, quick: bool = False,
                    sampling_ablation: bool = False, reanalyse: str | None = None) -> dict:
    """Train and evaluate every model on one features snapshot; write experiment_results + report.
    ``quick``: ``ExperimentSettings.quick`` (two seeds, two epochs, 50 resamples).
    ``sampling_ablation``: also camoe on snapshots rebuilt per ``sampling_ablation_floors``.
    ``reanalyse``: an earlier experiment's run id: train nothing, analyse its recorded evaluations
    again (after a change to the analysis) into a report and rows under ``run_id``.

    Each training and evaluation is recorded in ``runs`` under ``<run_id>-train-<model>`` /
    ``<run_id>-eval-<model>``, so every number in the report traces back to a model artifact.
    """
    import time
    from pathlib import Path

    from pyspark.sql import functions as F

    from calibration import plots
    from calibration.evaluate import evaluate_run
    from core import lineage, tables
    from training.runner import train

    settings = cfg.require("experiments", "experiments", "the models, seeds and baseline of the ablation set")
    settings = settings.quick() if quick else settings
    target = settings.target_model          # held to the targets, masked, retrained by the sampling ablation
    models = tuple(models or settings.models)
    unknown = [m for m in models if m not in cfg.models]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; conf/models.yaml defines {list(cfg.models)}")
    if settings.baseline not in models:
        raise ValueError(f"the baseline {settings.baseline!r} must be among the models {list(models)}")
    seeds = settings.seeds or (cfg.training.seed,)
    version = features_version if features_version is not None else \
        tables.latest_version(spark, cfg.table(tables.FEATURES))
    order = [settings.baseline, *[m for m in models if m != settings.baseline]]
    evaluations: dict[str, str] = {}                    # entry -> its first seed's evaluation run
    seed_evaluations: dict[str, dict[int, str]] = {}    # entry (a model, or a sampling variant) -> seed -> run
    timings: dict[str, float] = {}

    def train_and_evaluate(entry: str, model: str, features_version: int, run_cfg=cfg) -> None:
        started = time.time()
        for seed in seeds:
            suffix = f"-seed{seed}" if len(seeds) > 1 else ""
            slug = entry.replace(SAMPLING_ENTRY, "-negatives-")
            train_run = lineage.RunRecord(run_id=f"{run_id}-train-{slug}{suffix}", job="train",
                                         params={"experiment": run_id, "model": model, "seed": seed})
            result, _, artifact = train(spark, run_cfg, train_run.run_id, model_name=model,
                                           features_version=features_version, num_proc=settings.num_proc,
                                           backend=settings.backend, epochs=settings.epochs,
                                           training_overrides={"seed": seed})
            train_run.inputs["features"] = features_version
            train_run.outputs["model_artifact"] = str(artifact)
            train_run.metrics.update({"model": model, "seed": seed, "best_epoch": result.best_epoch,
                                      "examples_per_second_per_worker": result.examples_per_second_rank0})
            lineage.record_run(spark, cfg, train_run)
            eval_run = lineage.RunRecord(run_id=f"{run_id}-eval-{slug}{suffix}", job="calibrate_evaluate",
                                        params={"experiment": run_id, "model": model, "seed": seed})
            # % changes in slot_metrics are vs the baseline trained with the same seed
            baseline_run = seed_evaluations.get(settings.baseline, {}).get(seed)
            # masked experts (one more forward pass and metric set per expert) are scored for the
            # model the masking claims are about only
            summary = evaluate_run(spark, cfg, eval_run.run_id, train_run.run_id, baseline_run,
                                   expert_masking=entry == target)
            eval_run.outputs.update(summary.outputs)
            eval_run.metrics.update(summary.metrics())
            lineage.record_run(spark, cfg, eval_run)
            seed_evaluations.setdefault(entry, {})[seed] = eval_run.run_id
            evaluations.setdefault(entry, eval_run.run_id)
            if log:
                log.info("experiment %s: %s seed %d trained and evaluated (test AUC-PR %.4f)", run_id, entry,
                         seed, summary.auc_pr or float("nan"))
        timings[entry] = round(time.time() - started, 1)

    if reanalyse:
        recorded = _recorded_evaluations(spark, cfg, reanalyse)
        seed_evaluations.update(recorded["seed_evaluations"])
        evaluations.update({e: by_seed[min(by_seed)] for e, by_seed in seed_evaluations.items()})
        version, seeds, timings = recorded["features_version"], recorded["seeds"], recorded["seconds"]
        order = [m for m in order if m in seed_evaluations]
    for model in order if not reanalyse else ():
        train_and_evaluate(model, model, version)
    floors = settings.sampling_ablation_floors if sampling_ablation and not reanalyse else ()
    if floors:
        if target not in models:
            raise ValueError(f"the sampling ablation retrains experiments.target_model {target!r}; "
                             "add it to the models")
        from features.pipeline import build_features

        first, last = tables.read_table(spark, cfg.table(tables.FEATURES), version).agg(
            F.min("event_date"), F.max("event_date")).first()
        for floor in floors:
            variant = replace(cfg, sampling=sampling_variant(cfg.sampling, floor))
            built = build_features(spark, variant, first, last, f"{run_id}-build-negatives-{floor:g}")
            if log:
                log.info("experiment %s: features rebuilt with every slot keeping >= %g of its negatives "
                         "(version %d)", run_id, floor, built.versions_written["features"])
            train_and_evaluate(sampling_entry(target, floor), target,
                               built.versions_written["features"], variant)
        # the latest features version is again the configured rates' (what later jobs read)
        restored = build_features(spark, cfg, first, last, f"{run_id}-build-restore").versions_written["features"]
        if log:
            log.info("experiment %s: features rebuilt with the configured rates (version %d)", run_id, restored)

    all_runs = [r for by_seed in seed_evaluations.values() for r in by_seed.values()]
    metrics = spark.table(cfg.table(tables.SLOT_METRICS)).where(F.col("run_id").isin(all_runs))
    optional = [c for c in ("oracle_auc_pr", "auc_pr_oracle_fraction", "ceiling_auc_pr", "auc_pr_ceiling_fraction",
                            "excess_log_loss", "true_calibration_ratio", "signal_fraction_of_ceiling")
                if c in metrics.columns]
    # the model column names the entry: a sampling variant is its model on another snapshot
    metrics = metrics.drop("model").join(F.broadcast(_run_seeds(spark, seed_evaluations)), "run_id")
    results = metrics.select(F.lit(run_id).alias("run_id"), F.col("run_id").alias("eval_run_id"), "model",
                             "seed", "model_run_id", "features_version", "level",
                             "slot", "calibrated", "rows", "auc_pr", "auc_pr_change_pct", "roc_auc", "log_loss",
                             "ece_equal_mass", "ece_equal_width", *optional)
    written = tables.replace_run_rows(results, cfg.table(tables.EXPERIMENT_RESULTS), run_id)
    frame = metrics.toPandas()
    first_seed = frame[frame["run_id"].isin(list(evaluations.values()))]
    slots = list(cfg.taxonomy.slot_names)

    # every (model, seed)'s calibrated test scores, aligned on the same impressions
    scored = _scored_rows(spark, cfg, seed_evaluations, version, target)
    power = power_analysis(scored, settings.baseline, slots, settings.bootstrap_resamples, target)

    out_dir = Path(cfg.storage.artifacts_dir) / "experiments" / run_id
    header = (f"# CAMoE ablations on {cfg.table(tables.FEATURES)}{' (--quick)' if quick else ''}\n\n"
              f"Experiment `{run_id}`" + (f" (the evaluations of `{reanalyse}`, analysed again)" if reanalyse else "")
              + ", features version "
              f"{version}, {scored.rows:,} test impressions ({int(scored.label.sum()):,} clicks), "
              f"models trained with backend={settings.backend} x{settings.num_proc}, seeds {list(seeds)}, "
              f"epochs={settings.epochs or cfg.training.epochs}, global batch {cfg.training.batch_size}, "
              f"model selection on corrected validation {cfg.training.selection_metric}. "
              f"Loss normalisation per model: "
              + ", ".join(f"{m}={_loss_name(cfg.models[m])}" for m in order)
              + ". Every model takes " + ", ".join(sorted({'+'.join(cfg.models[m].slot_features) or 'nothing'
                                                           for m in order})) + " as input. "
              "Test split, temperature-calibrated scores.")
    summary = model_slot_summary(frame)
    checks = target_checks(summary, target, slots)
    intervals = "\n\n".join(p for p in (targets_markdown(checks, target),
                                         power_markdown(power, settings.baseline, slots, scored.seeds)) if p)
    report = markdown_report(first_seed, settings.baseline, slots,
                             header + ("\n\n" + intervals if intervals else "")
                             + ("\n\nThe single-run tables below are the first seed's." if len(seeds) > 1 else ""))
    figure = None
    audio, video = "stream_audio", "stream_video"
    if {audio, video} <= set(slots) and power["comparisons"]:
        points = pareto_points(power, audio, video)
        figure = plots.pareto(points, out_dir / "pareto.png", f"{audio} AUC-PR change", f"{video} AUC-PR change")
        report += f"\n![Pareto: {audio} vs {video} AUC-PR change](pareto.png)\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report)
    document = {"run_id": run_id, "features_version": version, "baseline": settings.baseline,
                "seeds": {m: sorted(s) for m, s in seed_evaluations.items()},
                "evaluations": {m: {str(s): r for s, r in by_seed.items()} for m, by_seed in seed_evaluations.items()},
                "test_rows": scored.rows, "test_clicks": int(scored.label.sum()),
                "bootstrap_resamples": settings.bootstrap_resamples, "seconds_per_model": timings,
                "quick": quick, "models": summary, "targets": {target: checks}, **power}
    (out_dir / "experiments.json").write_text(json.dumps(document, indent=1, default=_json_default))
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(report)
        # beside the report, named after it: another log's report must not replace experiments.json
        Path(report_path).with_suffix(".json").write_text((out_dir / "experiments.json").read_text())
        if figure:
            import shutil
            shutil.copy(figure, Path(report_path).parent / "pareto.png")
    return {"features_version": version, "evaluations": evaluations, "seed_evaluations": seed_evaluations,
            "seconds": timings, "power": power, "json": str(out_dir / "experiments.json"),
            "experiment_results_version": written, "report": str(out_dir / "report.md"),
            "pareto": str(figure) if figure else None, "markdown": report}


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    return str(value)


def _recorded_evaluations(spark, cfg, run_id: str) -> dict:
    """What experiment ``run_id`` trained and evaluated, from ``experiment_results`` (and its
    experiments.json's timings when it is still there)."""
    from pathlib import Path

    from pyspark.sql import functions as F

    from core import tables

    name = cfg.table(tables.EXPERIMENT_RESULTS)
    if not tables.table_exists(spark, name):
        raise ValueError(f"{name} does not exist: there is no experiment {run_id!r} to reanalyse")
    rows = (spark.table(name).where(F.col("run_id") == run_id)
            .select("model", "seed", "eval_run_id", "features_version").distinct().collect())
    if not rows:
        raise ValueError(f"{name} has no rows of experiment {run_id!r}")
    versions = {r.features_version for r in rows if SAMPLING_ENTRY not in r.model}
    seed_evaluations: dict[str, dict[int, str]] = {}
    for r in rows:
        seed_evaluations.setdefault(r.model, {})[int(r.seed)] = r.eval_run_id
    previous = Path(cfg.storage.artifacts_dir) / "experiments" / run_id / "experiments.json"
    seconds = json.loads(previous.read_text()).get("seconds_per_model", {}) if previous.is_file() else {}
    return {"seed_evaluations": seed_evaluations, "features_version": min(versions), "seconds": seconds,
            "seeds": tuple(sorted({int(r.seed) for r in rows}))}


def _run_seeds(spark, seed_evaluations: dict[str, dict[int, str]]):
    """(run_id, seed, model) of every evaluation run of the experiment; model = the entry name."""
    return spark.createDataFrame([(r, s, entry) for entry, by_seed in seed_evaluations.items()
                                  for s, r in by_seed.items()], "run_id string, seed int, model string")


def _scored_rows(spark, cfg, seed_evaluations: dict[str, dict[int, str]], version: int, masked_model: str):
    """calibration.power.ScoredRows of the experiment's predictions (+ ceiling_ctr from the snapshot)."""
    from pyspark.sql import functions as F

    from calibration.power import scored_rows
    from core import tables

    runs = _run_seeds(spark, seed_evaluations)          # names each run's entry
    table = spark.table(cfg.table(tables.PREDICTIONS)).drop("model")
    # masked-expert scores of the model the masking claims are about only (memory)
    masked = [F.when(F.col("model") == masked_model, F.col("masked_pctr")).alias("masked_pctr")] \
        if "masked_pctr" in table.columns else []
    predictions = (table.join(F.broadcast(runs), "run_id")
                   .select("model", "seed", "impression_id", "slot", "label", "true_ctr", "pctr", *masked))
    snapshot = tables.read_table(spark, cfg.table(tables.FEATURES), version)
    if "ceiling_ctr" in snapshot.columns:
        ceiling = snapshot.where(F.col("split") == "test").select("impression_id", "ceiling_ctr")
        predictions = predictions.join(ceiling, "impression_id", "left")
    return scored_rows(predictions.toPandas())
