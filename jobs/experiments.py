"""The paper's experiments as one job: train and evaluate the ablation set on one snapshot and
one training window (every model on the same training set; --end-date and the day flags choose it).

Models come from experiments.models (conf/evaluation.yaml): Wide&Deep, DCNv2 t=1, MMoE t=2,
CAMoE t=2 / t=7 / music-podcast / without ALM / without DCN, each trained once per seed of
experiments.seeds. Writes camoe.experiment_results, every run's evaluation tables, a markdown
report (changes vs the baseline with paired-bootstrap intervals, the paper's claims judged,
Tables 2-5 analogues, oracle column), experiments.json and a Pareto plot of stream_audio vs
stream_video AUC-PR change.

    spark-submit jobs/experiments.py [--models wide_deep camoe ...] [--set "experiments.seeds=[17, 18]"]
                                     [--report bench/results/experiments.md] [--quick]
                                     [--end-date D] [--train-days N] [--validation-days N] [--test-days N]
                                     [--sampling-ablation] [--reanalyse EXPERIMENT_RUN_ID]
"""
from __future__ import annotations

import sys

from jobs._cli import UsageError, iso_date, log, main, non_negative_int, positive_int, run_id_arg

WINDOW_FLAGS = ("train_days", "validation_days", "test_days")     # conf splits' keys, as flags


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", help="models to run (default: experiments.models)")
    parser.add_argument("--features-version", type=non_negative_int, help="Delta version of features (default: latest)")
    parser.add_argument("--report", help="also write the markdown report (and pareto.png beside it) here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of the whole suite: two seeds, at most two epochs, 50 bootstrap resamples")
    parser.add_argument("--reanalyse", metavar="EXPERIMENT_RUN_ID", type=run_id_arg,
                        help="train nothing: analyse that experiment's recorded evaluations again (new report, "
                             "intervals and claims)")
    parser.add_argument("--end-date", type=iso_date,
                        help="last test day of the models' training window (default: the snapshot's last day)")
    for key in WINDOW_FLAGS:
        parser.add_argument(f"--{key.replace('_', '-')}", type=positive_int,
                            help=f"days of the window's {key.split('_')[0]} split (default: conf splits.{key})")
    parser.add_argument("--sampling-ablation", action="store_true",
                        help="also retrain experiments.target_model on training sets down-sampled per "
                             "experiments.sampling_ablation_floors (1.0 = no down-sampling; no feature rebuild) "
                             "and compare it with itself on the configured rates")


def check_args(args, cfg) -> None:
    from calibration.experiments import ModelChoiceError, experiment_models

    settings = cfg.require("experiments", "experiments", "the models, seeds and baseline of the ablation set")
    try:
        experiment_models(settings, cfg.models, args.models, args.sampling_ablation)
    except ModelChoiceError as error:
        flag = "--sampling-ablation" if error.option == "sampling_ablation" else \
            f"--models {' '.join(args.models or settings.models)}"
        raise UsageError(f"{flag}: {error}") from None
    chosen = [f"--{k.replace('_', '-')}" for k in ("end_date", *WINDOW_FLAGS) if getattr(args, k) is not None]
    if args.reanalyse and chosen:
        raise UsageError(f"{chosen[0]}: --reanalyse trains nothing; its window is the one experiment "
                         f"{args.reanalyse} trained on")


def run(spark, cfg, args, record) -> int:
    from calibration.experiments import run_experiments

    window_days = {key: getattr(args, key) for key in WINDOW_FLAGS if getattr(args, key) is not None}
    result = run_experiments(spark, cfg, record.run_id, tuple(args.models or ()) or None, args.features_version,
                             args.report, log, quick=args.quick, sampling_ablation=args.sampling_ablation,
                             reanalyse=args.reanalyse, end_date=args.end_date, window_days=window_days or None)
    record.inputs["features"] = result.features_version
    record.params["window"] = result.window
    record.outputs.update({"experiment_results": result.experiment_results_version, "report": result.report})
    record.metrics.update({"evaluations": result.evaluations, "seconds": result.seconds})
    print(result.markdown)
    log.info("report written to %s (and %s)", result.report, result.json)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("experiments", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
