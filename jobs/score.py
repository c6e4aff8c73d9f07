"""Batch pCTR for candidate impressions with a trained, calibrated model.

Rows (features-table format, any day: ids are the persistent vocabulary's, and a value the
model has no id for scores as out-of-vocabulary) are scored in Spark through mapInArrow (the
model broadcast once, batched inference); the down-sampling correction and the per-task
temperatures of the model's latest calibration are applied; rows go to camoe.predictions
(impression_id, slot, task, pctr, model_run_id, ...). --split picks that split's days of the
model's own training window; --split '' with --start-date/--end-date scores any days.

    spark-submit jobs/score.py [--train-run-id RUN | --model-uri models:/camoe@champion]
        [--candidates TABLE] [--split test | --split '' --start-date D --end-date D]
"""
from __future__ import annotations

import sys

from core.feature_table import SPLITS
from jobs._cli import UsageError, check_date_order, iso_date, main, qualified_table_arg, run_id_arg


def add_arguments(parser) -> None:
    parser.add_argument("--train-run-id", type=run_id_arg,
                        help="model to use (default: the latest succeeded training run)")
    parser.add_argument("--model-uri", help="an MLflow model instead, e.g. models:/camoe@champion (the "
                                            "correction and temperatures it was registered with)")
    parser.add_argument("--candidates", type=qualified_table_arg,
                        help="table of rows to score, DATABASE.TABLE or in the conf's database (default: the model's "
                             "features table)")
    parser.add_argument("--split", default="test", choices=[*SPLITS, ""],
                        help="only the days of this split of the model's training window (default: test; "
                             "'' for no bound beyond --start-date/--end-date)")
    parser.add_argument("--start-date", type=iso_date, help="first event_date to score (default: no bound)")
    parser.add_argument("--end-date", type=iso_date, help="last event_date to score (default: no bound)")


def check_args(args, cfg) -> None:
    from serving.scoring import check_model_source

    try:
        check_model_source(args.train_run_id, args.model_uri)
    except ValueError as error:
        raise UsageError(f"--model-uri / --train-run-id: {error}") from None
    check_date_order(args.start_date, args.end_date)


def run(spark, cfg, args, record) -> int:
    from core.tables import TableNotFound
    from serving.scoring import score_run

    candidates = args.candidates and (args.candidates if "." in args.candidates else cfg.table(args.candidates))
    try:
        summary = score_run(spark, cfg, record.run_id, args.train_run_id, candidates, args.split or None,
                            args.start_date, args.end_date, model_uri=args.model_uri)
    except TableNotFound as exc:
        if args.candidates:               # the table the flag names: a bad flag, not a failure
            raise UsageError(f"--candidates {args.candidates}: {exc}") from None
        raise
    record.inputs.update({"model_run_id": summary.model_run_id, "candidates": summary.candidates,
                          "candidates_version": summary.candidates_version,
                          "calibration_run_id": summary.calibration_run_id,
                          **({"model_uri": summary.model_uri} if summary.model_uri else {})})
    record.outputs["predictions"] = summary.predictions_version
    record.metrics.update({"rows": summary.rows, "model": summary.model})
    print(f"scored {summary.rows} rows of {summary.candidates} with model {summary.model} "
          f"({summary.model_run_id}); predictions in {cfg.table('predictions')} under run {record.run_id}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("score", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
