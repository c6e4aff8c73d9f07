"""Fit per-task temperatures and write the slot-level evaluation tables for a trained model.

Scores the validation split (temperatures: NLL over log T per task, on logits corrected for
the train-time down-sampling) and the test split before/after temperature, then writes
camoe.temperatures, slot_metrics, calibration_bins, expert_mask_metrics and predictions, plus
PNG plots under artifacts/evaluation/<run_id>/, and prints the per-slot table read back with SQL.
With MLflow on (conf mlflow:), the metrics and plots go to the training run's MLflow run and the
calibrated model is registered (mlflow.registered_model), its alias (mlflow.alias) moved to it.

    spark-submit jobs/calibrate_evaluate.py [--train-run-id RUN] [--baseline-run-id EVAL_RUN]
"""
from __future__ import annotations

import os
import sys

from jobs._cli import log, main, run_id_arg


def add_arguments(parser) -> None:
    parser.add_argument("--train-run-id", type=run_id_arg,
                        help="training run to evaluate (default: the latest succeeded one)")
    parser.add_argument("--baseline-run-id", type=run_id_arg,
                        help="evaluation run the %% changes are against (default: the latest run of "
                             "evaluation.baseline_model on the same features version)")
    parser.add_argument("--show-sql", action="store_true", help="print the query the per-slot table is read with")


def run(spark, cfg, args, record) -> int:
    from calibration.evaluate import evaluate_run, track_evaluation
    from core import tables
    from features.reports import slot_metrics_sql

    summary = evaluate_run(spark, cfg, record.run_id, args.train_run_id, args.baseline_run_id)
    record.inputs.update({"model_run_id": summary.model_run_id, "features": summary.features_version})
    record.outputs.update(summary.outputs)
    record.metrics.update(summary.metrics())
    tracked = track_evaluation(spark, cfg, record.run_id, summary)
    if tracked:
        record.mlflow_run_id, registered = tracked
        record.outputs["registered_model"] = registered.uri
        record.metrics["registered_model_version"] = registered.version
    if summary.plots:
        log.info("plots in %s: %s", os.path.dirname(summary.plots[0]),
                 ", ".join(os.path.basename(p) for p in summary.plots))
    sql = slot_metrics_sql(cfg, record.run_id, spark.table(cfg.table(tables.SLOT_METRICS)).columns)
    print(f"model {summary.model} (training run {summary.model_run_id}), temperatures "
          + ", ".join(f"{t}={v:.3f}" for t, v in summary.temperatures.items())
          + (f"; registered as {registered.name} version {registered.version}, {registered.uri}" if tracked else ""))
    print(sql if args.show_sql else f"per-slot metrics of {record.run_id} from {cfg.table(tables.SLOT_METRICS)} "
          "(--show-sql prints the query):")
    spark.sql(sql).show(50, truncate=False)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("calibrate_evaluate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(cli())
