"""Per-slot calibration of CAMoE and Wide&Deep on one features snapshot (the demo's, by default).

    make bench-calibration        # after `make demo`; = spark-submit bench/slot_calibration.py

For each model it uses the latest succeeded training run on the snapshot and that run's latest
evaluation (jobs/calibrate_evaluate.py); a model with none is trained (``--backend``,
``--num-proc``: the demo's Horovod x2 by default) and evaluated first. From the test-split
``predictions`` of the evaluation it reports per slot: rows, test positives, the calibration
ratio sum(pCTR) / sum(clicks) before (down-sampling correction only) and after temperature,
the same against sum(true_ctr) (label-free: no click noise), the oracle's own ratio
sum(true_ctr) / sum(clicks) (how far a perfectly calibrated model lands from 1 by label
noise alone) and AUC-PR. Results: bench/results/calibration.json and .md.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs._cli import log, main  # noqa: E402 - the bench runs from a checkout, like the jobs

MODELS = ("camoe", "wide_deep")


def add_arguments(parser) -> None:
    parser.add_argument("--features-version", type=int, help="features snapshot (default: latest)")
    parser.add_argument("--backend", default="horovod", choices=["horovod", "torch_distributor", "local"])
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--retrain", action="store_true", help="train and evaluate even if runs exist")
    parser.add_argument("--output", default=str(RESULTS / "calibration.json"))


def _latest_evaluation(spark, cfg, model: str, version: int) -> tuple[str, str] | None:
    """(training run id, evaluation run id) of the model's latest evaluation on ``version``."""
    from pyspark.sql import functions as F

    from core import tables

    name = cfg.table(tables.SLOT_METRICS)
    if not tables.table_exists(spark, name):
        return None
    rows = (spark.table(name).where((F.col("model") == model) & (F.col("features_version") == version))
            .orderBy(F.col("evaluated_at").desc()).select("model_run_id", "run_id").limit(1).collect())
    return (rows[0].model_run_id, rows[0].run_id) if rows else None


def _train_and_evaluate(spark, cfg, model: str, version: int, args, run_id: str) -> tuple[str, str]:
    from calibration.evaluate import evaluate_run
    from core import lineage
    from training.runner import train

    model_settings = cfg.model(model)
    train_run = lineage.RunRecord(run_id=f"{run_id}-train-{model}", job="train", params={"model": model})
    result, _, artifact = train(spark, cfg, train_run.run_id, model_name=model, features_version=version,
                                   num_proc=args.num_proc, backend=args.backend)
    train_run.inputs["features"] = version
    train_run.outputs["model_artifact"] = str(artifact)
    train_run.metrics.update({"model": model, "grouping": model_settings.grouping,
                              "best_epoch": result.best_epoch})
    lineage.record_run(spark, cfg, train_run)
    eval_run = lineage.RunRecord(run_id=f"{run_id}-eval-{model}", job="calibrate_evaluate", params={"model": model})
    summary = evaluate_run(spark, cfg, eval_run.run_id, train_run.run_id)
    eval_run.outputs.update(summary.outputs)
    eval_run.metrics.update(summary.metrics())
    lineage.record_run(spark, cfg, eval_run)
    return train_run.run_id, eval_run.run_id


def slot_calibration(spark, cfg, eval_run_id: str):
    """Per slot (and all): counts, calibration ratios before/after T vs clicks and vs true_ctr."""
    from pyspark.sql import functions as F

    from core import tables

    predictions = spark.table(cfg.table(tables.PREDICTIONS)).where(F.col("run_id") == eval_run_id)
    aggregates = [F.count(F.lit(1)).alias("rows"), F.sum("label").alias("positives"),
                  F.sum("pctr_raw").alias("sum_pctr_raw"), F.sum("pctr").alias("sum_pctr"),
                  F.sum("true_ctr").alias("sum_true_ctr")]
    per_slot = predictions.groupBy("slot").agg(*aggregates).toPandas()
    overall = predictions.agg(*aggregates).toPandas().assign(slot="all")
    frame = __import__("pandas").concat([per_slot, overall], ignore_index=True)
    metrics = (spark.table(cfg.table(tables.SLOT_METRICS))
               .where((F.col("run_id") == eval_run_id) & F.col("calibrated") & F.col("level").isin("slot", "all"))
               .select("slot", "auc_pr", "ece_equal_mass").toPandas().set_index("slot"))
    out = {}
    for r in frame.sort_values("rows", ascending=False).itertuples():
        positives = int(r.positives or 0)
        truth = float(r.sum_true_ctr) if r.sum_true_ctr is not None else None

        def ratio(num, den):
            return round(float(num) / den, 4) if den else None

        out[r.slot] = {
            "rows": int(r.rows), "test_positives": positives,
            "calibration_ratio_before_t": ratio(r.sum_pctr_raw, positives),
            "calibration_ratio_after_t": ratio(r.sum_pctr, positives),
            "ratio_to_true_ctr_before_t": ratio(r.sum_pctr_raw, truth),
            "ratio_to_true_ctr_after_t": ratio(r.sum_pctr, truth),
            "oracle_calibration_ratio": ratio(truth, positives) if truth is not None else None,
            "auc_pr": round(float(metrics.loc[r.slot, "auc_pr"]), 5)
            if r.slot in metrics.index and metrics.loc[r.slot, "auc_pr"] == metrics.loc[r.slot, "auc_pr"] else None,
        }
    return out


def markdown(results: dict) -> str:
    lines = [f"# Per-slot calibration, features version {results['features_version']}",
             "", "Test split. ratio = sum(pCTR) / sum(clicks); `/true` = sum(pCTR) / sum(true_ctr) (no label "
             "noise); oracle = sum(true_ctr) / sum(clicks), where a perfectly calibrated model lands by label "
             "noise alone. Command: `make bench-calibration`.", ""]
    for model, entry in results["models"].items():
        lines += [f"## {model} (train run `{entry['train_run_id']}`, evaluation `{entry['eval_run_id']}`)", "",
                  "| slot | rows | positives | ratio before T | ratio after T | /true before T | /true after T "
                  "| oracle ratio | AUC-PR |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for slot, v in entry["slots"].items():
            cells = [v["rows"], v["test_positives"], v["calibration_ratio_before_t"], v["calibration_ratio_after_t"],
                     v["ratio_to_true_ctr_before_t"], v["ratio_to_true_ctr_after_t"], v["oracle_calibration_ratio"],
                     v["auc_pr"]]
            lines.append(f"| {slot} | " + " | ".join("" if c is None else str(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def run(spark, cfg, args, record) -> int:
    import os

    from core import tables

    version = args.features_version if args.features_version is not None else \
        tables.latest_version(spark, cfg.table(tables.FEATURES))
    results = {"features_version": version, "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0],
                                                        "python": platform.python_version()},
               "models": {}}
    for model in MODELS:
        found = None if args.retrain else _latest_evaluation(spark, cfg, model, version)
        if found is None:
            log.info("%s: no evaluation on features version %d; training and evaluating it", model, version)
            found = _train_and_evaluate(spark, cfg, model, version, args, record.run_id)
        train_run, eval_run = found
        results["models"][model] = {"train_run_id": train_run, "eval_run_id": eval_run,
                                    "slots": slot_calibration(spark, cfg, eval_run)}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    output.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    record.outputs["results"] = str(output)
    return 0


if __name__ == "__main__":
    sys.exit(main("bench_calibration", __doc__, add_arguments, run))
