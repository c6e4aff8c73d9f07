"""One experiment (`make experiments`, jobs/experiments.py): every model of the ablation set
trained per seed on one training window of one features snapshot (so one training set, reused)
and evaluated on its days, the paired-bootstrap power analysis over test impressions and seeds,
the per-slot targets, the sampling ablation (other rates: another training set, no feature
rebuild), and the report (calibration/experiment_report.py renders it) with the experiment_results rows.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from calibration.experiment_report import (
    ablations,
    loss_name,
    markdown_report,
    pareto_points,
    power_markdown,
    target_checks,
    targets_markdown,
)

# ----------------------------------------------------------------------------- seeds and intervals
POWER_METRICS = ("auc_pr", "excess_log_loss", "true_calibration_ratio")
HALF_WIDTH_SLOTS = ("stream_audio", "stream_video")      # the power target: CI half-width <= 3 points


def power_analysis(rows, baseline: str, slots: list[str], resamples: int, claim_settings=None, taxonomy=None,
                   models=None) -> dict:
    """Every model vs ``baseline`` per slot and overall (paired bootstrap over test impressions and
    seeds), the paper's claims judged from the same rows by the roles of ``claim_settings``
    (core ClaimSettings; with ``taxonomy`` and ``models``, conf model name -> ModelSettings), the
    claims that could not be judged with the reason, and the achieved AUC-PR half-widths.

    rows: ``calibration.power.ScoredRows``. Returns plain dicts (the JSON's shape)."""
    from calibration.paper_claims import label_free, resolve_claims
    from calibration.power import ALL, compare, is_masked_variant, judge_claims

    segments = [s for s in [*slots, ALL] if s == ALL or (rows.slot == s).any()]
    models_run = [m for m in rows.scores if not is_masked_variant(m) and SAMPLING_ENTRY not in m]
    comparisons = [c for model in models_run if model != baseline
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
    claims, not_judged = ([], []) if claim_settings is None else resolve_claims(rows, claim_settings, taxonomy, models)
    twins = [x for c in claims for x in (c, *label_free([c]))]
    if rows.true_ctr is None:
        not_judged += [{"claim": c.claim, "source": c.source, "reason": "on excess log loss: the log has no true_ctr"}
                       for c in label_free(claims)]
    return {"comparisons": [c.as_dict() for c in comparisons], "sampling": [c.as_dict() for c in sampling],
            "claims": [v.as_dict() for v in judge_claims(rows, twins, resamples)],
            "claims_not_judged": [n if isinstance(n, dict) else n.as_dict() for n in not_judged],
            "auc_pr_change_half_width": half_widths}


def model_slot_summary(metrics: pd.DataFrame) -> dict:
    """Per model and segment, the calibrated slot_metrics averaged over seeds (JSON shape)."""
    wanted = ["auc_pr", "auc_pr_oracle_fraction", "auc_pr_ceiling_fraction", "signal_fraction_of_ceiling",
              "signal_fraction_of_oracle", "excess_log_loss", "true_calibration_ratio", "calibration_ratio",
              "ece_equal_mass", "rms_ce_debiased", "rows", "positives"]
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


def _train_clicks(spark, cfg, version: int, window) -> dict[str, float]:
    """Clicks per slot (and "all") on the train days of ``window`` (core.training_sets.TrainingWindow)
    in the snapshot: the features table is never down-sampled, so these are the window's clicks."""
    from pyspark.sql import functions as F

    from core import feature_table, tables

    first, last = window.bounds(feature_table.TRAIN)
    train = tables.read_table(spark, cfg.table(tables.FEATURES), version).where(
        F.col("event_date").between(F.lit(first), F.lit(last)))
    clicks = {r["slot"]: float(r["clicks"] or 0)
              for r in train.groupBy("slot").agg(F.sum("label").alias("clicks")).collect()}
    return {**clicks, "all": float(sum(clicks.values()))}


# ----------------------------------------------------------------------------- one experiment
@dataclass(frozen=True)
class ExperimentSummary:
    """What one experiment wrote: ``run_experiments``' result, read by the job and the tests.

    ``evaluations``: entry (a model, or a sampling variant ``<model>@negatives>=<floor>``) ->
    its first seed's evaluation run; ``seed_evaluations``: entry -> seed -> evaluation run;
    ``power``: the power analysis as experiments.json holds it."""

    features_version: int
    window: str                         # every model's training window (TrainingWindow.describe)
    evaluations: dict[str, str]
    seed_evaluations: dict[str, dict[int, str]]
    seconds: dict[str, float]           # entry -> seconds its trainings and evaluations took
    power: dict
    report: str                         # artifacts/experiments/<run_id>/report.md
    json: str                           # experiments.json beside it
    pareto: str | None                  # pareto.png, when the slots hold stream_audio and stream_video
    experiment_results_version: int
    markdown: str


class ModelChoiceError(ValueError):
    """An experiment's models that cannot run; ``option`` is the choice at fault: "models" or
    "sampling_ablation" (a job names its flag)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def experiment_models(settings, known_models, models=None, sampling_ablation: bool = False) -> tuple[str, ...]:
    """The models an experiment trains: ``models`` or ``settings.models`` (core ExperimentSettings),
    each one of ``known_models`` (conf/models.yaml), the baseline among them and, for the sampling
    ablation, the target model it retrains. Raises ModelChoiceError before anything is trained."""
    chosen = tuple(models or settings.models)
    for model in chosen:
        if model not in known_models:
            raise ModelChoiceError("models", f"{model!r} is not a model of conf/models.yaml; choose from "
                                             f"{', '.join(known_models)}")
    if settings.baseline not in chosen:
        raise ModelChoiceError("models", f"the baseline {settings.baseline} (experiments.baseline) must be "
                                         "among them")
    if sampling_ablation and settings.target_model not in chosen:
        raise ModelChoiceError("sampling_ablation", f"the sampling ablation retrains experiments.target_model "
                                                    f"{settings.target_model}: add it to the models")
    return chosen


def run_experiments(spark, cfg, run_id: str, models: tuple[str, ...] | None = None,
                    features_version: int | None = None, report_path=None, log=None, quick: bool = False,
                    sampling_ablation: bool = False, reanalyse: str | None = None, end_date=None,
                    window_days: dict | None = None) -> ExperimentSummary:
    """Train and evaluate every model on one features snapshot and one training window (ending
    ``end_date``, default the snapshot's last day; ``window_days``: training.runner.prepare's
    overrides of conf splits); write experiment_results + report.
    ``quick``: ``ExperimentSettings.quick`` (two seeds, at most two epochs, 50 resamples).
    ``sampling_ablation``: also camoe on the training sets of ``sampling_ablation_floors``' rates.
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
    models = experiment_models(settings, cfg.models, models, sampling_ablation)
    seeds = settings.seeds or (cfg.training.seed,)
    version = features_version if features_version is not None else \
        tables.latest_version(spark, cfg.table(tables.FEATURES))
    order = [settings.baseline, *[m for m in models if m != settings.baseline]]
    if end_date is None and not reanalyse:      # one end for every model: one window, one training set
        end_date = tables.read_table(spark, cfg.table(tables.FEATURES), version).agg(F.max("event_date")).first()[0]
    windows = []                                # every trained model's, all the same
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
            result, trained, artifact = train(spark, run_cfg, train_run.run_id, model_name=model,
                                              features_version=features_version, num_proc=settings.num_proc,
                                              backend=settings.backend, epochs=settings.epochs,
                                              training_overrides={"seed": seed}, end_date=end_date,
                                              window_days=window_days)
            if windows[:1] not in ([], [trained.window]):
                raise RuntimeError(f"{entry} trained on {trained.window.describe()}, not {windows[0].describe()}")
            windows.append(trained.window)
            train_run.inputs.update({"features": features_version, "training_sets": trained.training_sets_version})
            train_run.params.update({"training_set": trained.training_set_id, "window": trained.window.describe()})
            train_run.outputs["model_artifact"] = str(artifact)
            train_run.metrics.update({"model": model, "seed": seed, "best_epoch": result.best_epoch,
                                      "examples_per_second_per_worker": result.examples_per_second_rank0})
            lineage.record_run(spark, cfg, train_run)
            eval_run = lineage.RunRecord(run_id=f"{run_id}-eval-{slug}{suffix}", job="calibrate_evaluate",
                                        params={"experiment": run_id, "model": model, "seed": seed})
            # % changes in slot_metrics are vs the baseline trained with the same seed
            baseline_run = seed_evaluations.get(settings.baseline, {}).get(seed)
            # masked experts (one more forward pass and metric set per expert) are scored for the
            # model the masking claims are about only; diagrams are drawn for the first seed's
            # evaluation, the one the report names (~2 s each)
            summary = evaluate_run(spark, cfg, eval_run.run_id, train_run.run_id, baseline_run,
                                   expert_masking=entry == target, plots=seed == seeds[0])
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
        windows.append(recorded["window"])
    for model in order if not reanalyse else ():
        train_and_evaluate(model, model, version)
    # the sampling ablation: the same window and snapshot, down-sampled at other rates into
    # another training set (features are never rebuilt: rates belong to the training set)
    for floor in settings.sampling_ablation_floors if sampling_ablation and not reanalyse else ():
        variant = replace(cfg, sampling=sampling_variant(cfg.sampling, floor))
        if log:
            log.info("experiment %s: %s on a training set keeping >= %g of every slot's negatives", run_id,
                     target, floor)
        train_and_evaluate(sampling_entry(target, floor), target, version, variant)
    window = windows[0]

    all_runs = [r for by_seed in seed_evaluations.values() for r in by_seed.values()]
    metrics = spark.table(cfg.table(tables.SLOT_METRICS)).where(F.col("run_id").isin(all_runs))
    optional = [c for c in ("oracle_auc_pr", "auc_pr_oracle_fraction", "ceiling_auc_pr", "auc_pr_ceiling_fraction",
                            "excess_log_loss", "true_calibration_ratio", "signal_fraction_of_ceiling",
                            "rms_ce_debiased") if c in metrics.columns]
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
    power = power_analysis(scored, settings.baseline, slots, settings.bootstrap_resamples, settings.claims,
                           cfg.taxonomy, cfg.models)

    out_dir = Path(cfg.storage.artifacts_dir) / "experiments" / run_id
    header = (f"# CAMoE ablations on {cfg.table(tables.FEATURES)}{' (--quick)' if quick else ''}\n\n"
              f"Experiment `{run_id}`" + (f" (the evaluations of `{reanalyse}`, analysed again)" if reanalyse else "")
              + f", features version {version}, window {window.describe()}, {scored.rows:,} test impressions "
              f"({int(scored.label.sum()):,} clicks), "
              f"models trained with backend={settings.backend} x{settings.num_proc}, seeds {list(seeds)}, "
              f"epochs={settings.epochs or cfg.training.epochs}, global batch {cfg.training.batch_size}, "
              f"model selection on corrected validation {cfg.training.selection_metric}. "
              f"Loss normalisation per model: "
              + ", ".join(f"{m}={loss_name(cfg.models[m])}" for m in order)
              + ". Every model takes " + ", ".join(sorted({'+'.join(cfg.models[m].slot_features) or 'nothing'
                                                           for m in order})) + " as input. "
              "Test days, temperature-calibrated scores.")
    summary = model_slot_summary(frame)
    # the targets exist only where the log has a ceiling: no training-click count otherwise
    train_clicks = _train_clicks(spark, cfg, version, window) if "signal_fraction_of_ceiling" in optional else None
    checks = target_checks(summary, target, slots, train_clicks)
    intervals = "\n\n".join(p for p in (targets_markdown(checks, target),
                                         power_markdown(power, settings.baseline, slots, scored.seeds)) if p)
    tables_of_roles = ablations(settings.claims.roles, cfg.models, cfg.taxonomy) if settings.claims else ()
    report = markdown_report(first_seed, settings.baseline, slots,
                             header + ("\n\n" + intervals if intervals else "")
                             + ("\n\nThe single-run tables below are the first seed's." if len(seeds) > 1 else ""),
                             tables_of_roles)
    figure = None
    audio, video = "stream_audio", "stream_video"
    if {audio, video} <= set(slots) and power["comparisons"]:
        points = pareto_points(power, audio, video)
        figure = plots.pareto(points, out_dir / "pareto.png", f"{audio} AUC-PR change", f"{video} AUC-PR change")
        report += f"\n![Pareto: {audio} vs {video} AUC-PR change](pareto.png)\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report)
    document = {"run_id": run_id, "features_version": version, "window": window.describe(),
                "baseline": settings.baseline,
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
    return ExperimentSummary(features_version=version, window=window.describe(), evaluations=evaluations,
                             seed_evaluations=seed_evaluations,
                             seconds=timings, power=power, report=str(out_dir / "report.md"),
                             json=str(out_dir / "experiments.json"), pareto=str(figure) if figure else None,
                             experiment_results_version=written, markdown=report)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    return str(value)


def _recorded_evaluations(spark, cfg, run_id: str) -> dict:
    """What experiment ``run_id`` trained and evaluated, from ``experiment_results`` (and its
    experiments.json's timings when it is still there); the window from a model's artifact."""
    from pathlib import Path

    from pyspark.sql import functions as F

    from core import lineage, tables
    from training.artifact import read_artifact

    name = cfg.table(tables.EXPERIMENT_RESULTS)
    if not tables.table_exists(spark, name):
        raise ValueError(f"{name} does not exist: there is no experiment {run_id!r} to reanalyse")
    rows = (spark.table(name).where(F.col("run_id") == run_id)
            .select("model", "seed", "eval_run_id", "model_run_id", "features_version").distinct().collect())
    if not rows:
        raise ValueError(f"{name} has no rows of experiment {run_id!r}")
    versions = {r.features_version for r in rows if SAMPLING_ENTRY not in r.model}
    seed_evaluations: dict[str, dict[int, str]] = {}
    for r in rows:
        seed_evaluations.setdefault(r.model, {})[int(r.seed)] = r.eval_run_id
    previous = Path(cfg.storage.artifacts_dir) / "experiments" / run_id / "experiments.json"
    seconds = json.loads(previous.read_text()).get("seconds_per_model", {}) if previous.is_file() else {}
    window = read_artifact(lineage.find_train_run(spark, cfg, rows[0].model_run_id)["artifact"]).window
    return {"seed_evaluations": seed_evaluations, "features_version": min(versions), "seconds": seconds,
            "seeds": tuple(sorted({int(r.seed) for r in rows})), "window": window}


def _run_seeds(spark, seed_evaluations: dict[str, dict[int, str]]):
    """(run_id, seed, model) of every evaluation run of the experiment; model = the entry name."""
    return spark.createDataFrame([(r, s, entry) for entry, by_seed in seed_evaluations.items()
                                  for s, r in by_seed.items()], "run_id string, seed int, model string")


def _scored_rows(spark, cfg, seed_evaluations: dict[str, dict[int, str]], version: int, masked_model: str):
    """calibration.power.ScoredRows of the experiment's predictions (+ ceiling_ctr from the snapshot):
    the impressions once, then each (model, seed)'s scores, one run at a time."""
    from pyspark.sql import functions as F

    from calibration.power import align_scores
    from core import tables

    table = spark.table(cfg.table(tables.PREDICTIONS))
    entries = sorted((entry, seed, run) for entry, by_seed in seed_evaluations.items() for seed, run in by_seed.items())
    first_run = entries[0][2]
    reference = table.where(F.col("run_id") == first_run).select("impression_id", "slot", "label", "true_ctr")
    snapshot = tables.read_table(spark, cfg.table(tables.FEATURES), version)
    if "ceiling_ctr" in snapshot.columns:           # of the days scored only (partitions pruned)
        first, last = table.where(F.col("run_id") == first_run).agg(F.min("event_date"), F.max("event_date")).first()
        ceiling = snapshot.where(F.col("event_date").between(F.lit(first), F.lit(last)))
        reference = reference.join(ceiling.select("impression_id", "ceiling_ctr"), "impression_id", "left")

    def runs():
        for entry, seed, run in entries:
            # masked-expert scores of the model the masking claims are about only (memory)
            masked = ["masked_pctr"] if "masked_pctr" in table.columns and entry == masked_model else []
            yield (entry, seed), table.where(F.col("run_id") == run).select("impression_id", "pctr", *masked).toPandas()

    return align_scores(reference.toPandas(), runs())
