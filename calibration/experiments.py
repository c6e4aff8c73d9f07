"""The paper's ablation tables from slot_metrics rows of several evaluation runs.

Input is a pandas frame of slot_metrics rows (one experiment: every model evaluated on the same
features snapshot); output is markdown: the analogues of the paper's Table 2 (per-slot % change
in AUC-PR vs the baseline), Table 3 (task groupings), Table 4 (ECE with and without ALM),
Table 5 (DCN / MMoE) and the oracle ceiling. Everything here is pure pandas.
"""
from __future__ import annotations

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


def pareto_points(metrics: pd.DataFrame, baseline: str, x_slot: str, y_slot: str) -> pd.DataFrame:
    """Fig. 7: per model, % AUC-PR change on two slots."""
    change = change_table(metrics, baseline, [x_slot, y_slot])
    change = change.drop(index=[baseline, "oracle"], errors="ignore")
    return pd.DataFrame({"model": change.index, f"{x_slot} AUC-PR change": change[x_slot].values,
                         f"{y_slot} AUC-PR change": change[y_slot].values})


def markdown_report(metrics: pd.DataFrame, baseline: str, slots: list[str], header: str = "") -> str:
    models = set(metrics["model"])
    fraction = metrics[metrics["calibrated"] & (metrics["level"] == "slot")].pivot_table(
        index="model", columns="slot", values="auc_pr_oracle_fraction", aggfunc="first")
    parts = [header,
             f"## AUC-PR, % change vs {baseline} per slot (paper Table 2); `oracle` = true click probability",
             _fmt(change_table(metrics, baseline, slots), "{:+.1f}"),
             "## AUC-PR as a fraction of the oracle's",
             _fmt(fraction[[s for s in slots if s in fraction.columns]], "{:.3f}")]
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


# ----------------------------------------------------------------------------- one experiment
def run_experiments(spark, cfg, run_id: str, models: tuple[str, ...] | None = None,
                    features_version: int | None = None, report_path=None, log=None) -> dict:
    """Train and evaluate every model on one features snapshot; write experiment_results + report.

    Each training and evaluation is recorded in ``runs`` under ``<run_id>-train-<model>`` /
    ``<run_id>-eval-<model>``, so every number in the report traces back to a model artifact.
    """
    import time
    from pathlib import Path

    from pyspark.sql import functions as F

    from calibration import plots
    from calibration.evaluate import evaluate_run
    from features import tables
    from training.runner import train

    settings = cfg.experiments
    models = tuple(models or settings.models)
    unknown = [m for m in models if m not in cfg.models]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; conf/models.yaml defines {list(cfg.models)}")
    if settings.baseline not in models:
        raise ValueError(f"the baseline {settings.baseline!r} must be among the models {list(models)}")
    version = features_version if features_version is not None else \
        tables.latest_version(spark, cfg.table(tables.FEATURES))
    order = [settings.baseline, *[m for m in models if m != settings.baseline]]
    evaluations, timings = {}, {}
    for model in order:
        started = time.time()
        train_run = tables.RunRecord(run_id=f"{run_id}-train-{model}", job="train",
                                     params={"experiment": run_id, "model": model})
        result, meta, artifact = train(spark, cfg, train_run.run_id, model_name=model, features_version=version,
                                       num_proc=settings.num_proc, backend=settings.backend,
                                       epochs=settings.epochs)
        train_run.inputs["features"] = version
        train_run.outputs["model_artifact"] = str(artifact)
        train_run.metrics.update({"model": model, "best_epoch": result["best_epoch"],
                                  "examples_per_second_per_worker": result["examples_per_second_rank0"]})
        tables.record_run(spark, cfg, train_run)
        eval_run = tables.RunRecord(run_id=f"{run_id}-eval-{model}", job="calibrate_evaluate",
                                    params={"experiment": run_id, "model": model})
        baseline_run = evaluations.get(settings.baseline)
        summary = evaluate_run(spark, cfg, eval_run.run_id, train_run.run_id, baseline_run)
        eval_run.outputs.update(summary.pop("outputs"))
        eval_run.metrics.update(summary)
        tables.record_run(spark, cfg, eval_run)
        evaluations[model] = eval_run.run_id
        timings[model] = round(time.time() - started, 1)
        if log:
            log.info("experiment %s: %s trained and evaluated in %.0fs (test AUC-PR %.4f)", run_id, model,
                     timings[model], summary["auc_pr"] or float("nan"))

    metrics = (spark.table(cfg.table(tables.SLOT_METRICS))
               .where(F.col("run_id").isin(list(evaluations.values()))))
    results = metrics.select(F.lit(run_id).alias("run_id"), F.col("run_id").alias("eval_run_id"), "model",
                             "model_run_id", "features_version", "level", "slot", "calibrated", "rows",
                             "auc_pr", "auc_pr_change_pct", "roc_auc", "log_loss", "ece_equal_mass",
                             "ece_equal_width", "oracle_auc_pr", "auc_pr_oracle_fraction")
    written = tables.replace_run_rows(results, cfg.table(tables.EXPERIMENT_RESULTS), run_id)
    frame = metrics.toPandas()
    slots = list(cfg.taxonomy.slot_names)
    out_dir = Path(cfg.storage.artifacts_dir) / "experiments" / run_id
    header = (f"# CAMoE ablations on the synthetic benchmark\n\nExperiment `{run_id}`, features version "
              f"{version}, models trained with backend={settings.backend} x{settings.num_proc}, "
              f"epochs={settings.epochs or cfg.training.epochs}, global batch {cfg.training.batch_size}, "
              f"model selection on corrected validation {cfg.training.selection_metric}. "
              f"Loss normalisation per model: "
              + ", ".join(f"{m}={_loss_name(cfg.models[m])}" for m in order)
              + ". Every model takes " + ", ".join(sorted({'+'.join(cfg.models[m].slot_features) or 'nothing'
                                                           for m in order})) + " as input. "
              "Test split, temperature-calibrated scores.")
    report = markdown_report(frame, settings.baseline, slots, header)
    figure = None
    audio, video = "stream_audio", "stream_video"
    if {audio, video} <= set(slots):
        points = pareto_points(frame, settings.baseline, audio, video)
        figure = plots.pareto(points, out_dir / "pareto.png", f"{audio} AUC-PR change", f"{video} AUC-PR change")
        report += f"\n![Pareto: {audio} vs {video} AUC-PR change](pareto.png)\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report)
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(report)
        if figure:
            import shutil
            shutil.copy(figure, Path(report_path).parent / "pareto.png")
    return {"features_version": version, "evaluations": evaluations, "seconds": timings,
            "experiment_results_version": written, "report": str(out_dir / "report.md"),
            "pareto": str(figure) if figure else None, "markdown": report}
