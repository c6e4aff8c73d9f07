"""Replay the test days as GSP auctions on the paper's Final Bid (eq. 1) for two models.

Reads each model's predictions (the latest run per model by scored_at unless
--prediction-runs names them) and the raw impressions of those days plus the trailing-CTR
window before them, runs calibration/auction.py and writes per (model, modality) breaks,
served, expected clicks, CTR, spend, eCPC and the % change vs the first model to
camoe.auction_replay; prints the paper's Table 6 analogue.

    spark-submit jobs/replay_auction.py [--models wide_deep camoe] [--prediction-runs RUN_A RUN_B]
"""
from __future__ import annotations

import sys

from jobs._cli import UsageError, check_choice, main, run_id_arg


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs=2, metavar=("BASELINE", "CANDIDATE"),
                        help="the two models (conf/models.yaml names) to replay; the first is the "
                             "baseline (default: auction.models)")
    parser.add_argument("--prediction-runs", nargs=2, metavar=("RUN_A", "RUN_B"), type=run_id_arg,
                        help="predictions.run_id of each model (default: each model's latest run by scored_at)")


def check_args(args, cfg) -> None:
    cfg.require("auction", "replay_auction", "the replayed auctions' bids, pacing, pods and the raw "
                "log's focus and campaign columns")
    for model in args.models or ():
        check_choice("--models", model, list(cfg.models), "a model of conf/models.yaml")
    if args.models and args.models[0] == args.models[1]:
        raise UsageError(f"--models {args.models[0]} {args.models[1]}: name two different models")


def run(spark, cfg, args, record) -> int:
    from calibration import auction
    from calibration.auction_replay import replay_run
    from core import tables

    replay = replay_run(spark, cfg, record.run_id, args.models, args.prediction_runs)
    baseline, candidate = replay.models
    record.inputs.update({**replay.inputs, "prediction_runs": replay.prediction_runs,
                          "model_runs": replay.model_runs})
    record.outputs[tables.AUCTION_REPLAY] = replay.version
    record.metrics.update({
        "models": list(replay.models), "dates": [str(replay.first), str(replay.last)], "outcome": replay.outcome,
        "replay": {f"{r['model']}/{r['modality']}": {k: r[k] for k in ("breaks", "served", "clicks", "ctr", "ecpc")}
                   for r in replay.rows},
        "ctr_change_pct": {r["modality"]: r["ctr_change_pct"] for r in replay.rows if r["model"] == candidate},
        "ecpc_change_pct": {r["modality"]: r["ecpc_change_pct"] for r in replay.rows if r["model"] == candidate}})
    print(f"Auction replay {replay.first}..{replay.last}: {candidate} vs {baseline} (prediction runs "
          + ", ".join(f"{m}={run}" for m, run in replay.prediction_runs.items())
          + f"); clicks = sum of {replay.outcome} of served ads")
    print(auction.markdown_table(replay.rows))
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("replay_auction", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
