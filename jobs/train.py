"""Train CAMoE (or a baseline) on a training set chosen now from a pinned version of the daily
features table: the window of train, validation and test days ending on --end-date (default: the
table's last day; day counts from conf splits or the flags), down-sampled per conf sampling.
The same window, rates and version reuse the training set already written.

Petastorm feeds each worker its shard; Horovod (horovod.spark.run) or TorchDistributor runs
the workers. Re-running with the same --run-id resumes from the last checkpointed epoch.

    spark-submit jobs/train.py --model camoe --grouping audio_video --num-proc 2 --backend horovod \
        [--end-date 2026-01-20] [--train-days 8] [--validation-days 1] [--test-days 1]
"""
from __future__ import annotations

import sys

from jobs._cli import check_choice, iso_date, log, main, non_negative_int, positive_int

WINDOW_FLAGS = ("train_days", "validation_days", "test_days")     # conf splits' keys, as flags


def add_arguments(parser) -> None:
    parser.add_argument("--model", help="an entry of conf/models.yaml (default: default_model)")
    parser.add_argument("--grouping", help="task grouping from conf/slots.yaml (default: the model's)")
    parser.add_argument("--features-version", type=non_negative_int,
                        help="Delta version of features (default: latest)")
    parser.add_argument("--num-proc", type=positive_int, help="training processes (default: training.num_proc)")
    parser.add_argument("--backend", choices=["horovod", "torch_distributor", "local"],
                        help="default: training.backend")
    parser.add_argument("--epochs", type=positive_int, help="default: training.epochs")
    parser.add_argument("--end-date", type=iso_date,
                        help="last test day of the training window (default: the features' last day)")
    for key in WINDOW_FLAGS:
        parser.add_argument(f"--{key.replace('_', '-')}", type=positive_int,
                            help=f"days of the window's {key.split('_')[0]} split (default: conf splits.{key})")


def check_args(args, cfg) -> None:
    # empty means the default: the DAG passes its params as given ("" = the conf's default_model)
    check_choice("--model", args.model, list(cfg.models), "a model of conf/models.yaml")
    check_choice("--grouping", args.grouping, list(cfg.taxonomy.groupings), "a grouping of conf/slots.yaml")


def run(spark, cfg, args, record) -> int:
    from training.runner import train
    from training.tracking import log_training

    window_days = {key: getattr(args, key) for key in WINDOW_FLAGS if getattr(args, key) is not None}
    result, artifact, folder = train(spark, cfg, record.run_id, model_name=args.model, grouping=args.grouping,
                                     features_version=args.features_version, num_proc=args.num_proc,
                                     backend=args.backend, epochs=args.epochs, end_date=args.end_date,
                                     window_days=window_days or None)
    record.inputs["features"] = artifact.features_version
    record.inputs["training_sets"] = artifact.training_sets_version
    record.params["training_set"] = artifact.training_set_id
    record.params["window"] = artifact.window.describe()
    record.outputs["model_artifact"] = str(folder)
    try:        # the model is saved: a tracking server that is down must not cost the training
        record.mlflow_run_id = log_training(cfg, record.run_id, folder, artifact)
    except Exception as exc:  # noqa: BLE001 - reported, and the runs row says the run is untracked
        log.warning("MLflow logging failed (%s: %s); the model is in %s, calibrate_evaluate will log it",
                    type(exc).__name__, exc, folder)
    best = result.best
    record.metrics.update({
        "model": artifact.model.name, "grouping": artifact.grouping, "backend": result.backend,
        "workers": result.workers, "best_epoch": result.best_epoch,
        "selection_metric": result.selection_metric, "selection_value": result.best_value,
        "global_batch_size": result.global_batch_size, "steps_per_epoch": result.steps_per_epoch,
        "validation": {k: v for k, v in best.items()
                       if k.startswith("auc_pr") or k in ("log_loss", "mean_slot_auc_pr")},
        "examples_per_second_per_worker": round(result.examples_per_second_rank0, 1),
        "examples_per_second_total": round(result.examples_per_second_rank0 * result.workers, 1),
        "train_wall_seconds": artifact.wall_seconds, "train_rows": artifact.train_rows})
    where = f" on the {result.launched_on}" if result.launched_on else ""
    print(f"model {artifact.model.name} ({result.backend}{where}, {result.workers} workers), "
          f"{result.worker_batch_size} rows per worker-step, best epoch {result.best_epoch} "
          f"by corrected validation "
          f"{result.selection_metric} {result.best_value:.5f}; validation AUC-PR "
          + ", ".join(f"{k.removeprefix('auc_pr_') if k != 'auc_pr' else 'all'}={v:.4f}"
                      for k, v in best.items() if k.startswith("auc_pr")))
    log.info("artifact written to %s", folder)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("train", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
