"""The paper's experiments as one job: train and evaluate the ablation set on one snapshot.

Models come from experiments.models (conf/evaluation.yaml): Wide&Deep, DCNv2 t=1, MMoE t=2,
CAMoE t=2 / t=7 / music-podcast / without ALM / without DCN, each trained once per seed of
experiments.seeds. Writes camoe.experiment_results, every run's evaluation tables, a markdown
report (changes vs the baseline with paired-bootstrap intervals, the paper's claims judged,
Tables 2-5 analogues, oracle column), experiments.json and a Pareto plot of stream_audio vs
stream_video AUC-PR change.

    spark-submit jobs/experiments.py [--models wide_deep camoe ...] [--set "experiments.seeds=[17, 18]"]
                                     [--report bench/results/experiments.md] [--quick]
                                     [--sampling-ablation] [--reanalyse EXPERIMENT_RUN_ID]
"""
from __future__ import annotations

import sys

from jobs._cli import UsageError, log, main, non_negative_int, run_id_arg


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", help="models to run (default: experiments.models)")
    parser.add_argument("--features-version", type=non_negative_int, help="Delta version of features (default: latest)")
    parser.add_argument("--report", help="also write the markdown report (and pareto.png beside it) here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of the whole suite: two seeds, at most two epochs, 50 bootstrap resamples")
    parser.add_argument("--reanalyse", metavar="EXPERIMENT_RUN_ID", type=run_id_arg,
                        help="train nothing: analyse that experiment's recorded evaluations again (new report, "
                             "intervals and claims)")
    parser.add_argument("--sampling-ablation", action="store_true",
                        help="also retrain experiments.target_model on snapshots rebuilt per "
                             "experiments.sampling_ablation_floors (1.0 = no down-sampling) and compare it with "
                             "itself on the configured rates")


def check_args(args, cfg) -> None:
    from calibration.experiments import ModelChoiceError, experiment_models

    settings = cfg.require("experiments", "experiments", "the models, seeds and baseline of the ablation set")
    try:
        experiment_models(settings, cfg.models, args.models, args.sampling_ablation)
    except ModelChoiceError as error:
        flag = "--sampling-ablation" if error.option == "sampling_ablation" else \
            f"--models {' '.join(args.models or settings.models)}"
        raise UsageError(f"{flag}: {error}") from None


def run(spark, cfg, args, record) -> int:
    from calibration.experiments import run_experiments

    result = run_experiments(spark, cfg, record.run_id, tuple(args.models or ()) or None, args.features_version,
                             args.report, log, quick=args.quick, sampling_ablation=args.sampling_ablation,
                             reanalyse=args.reanalyse)
    record.inputs["features"] = result.features_version
    record.outputs.update({"experiment_results": result.experiment_results_version, "report": result.report})
    record.metrics.update({"evaluations": result.evaluations, "seconds": result.seconds})
    print(result.markdown)
    log.info("report written to %s (and %s)", result.report, result.json)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("experiments", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
