"""Build the slot-labeled ``features`` Delta table from raw impressions for a date range.

Bad rows go to ``quarantine``; vocabularies and dense statistics are fitted on the train
days; the train split is down-sampled per (slot, label). Re-running a range replaces it.

    spark-submit jobs/build_features.py --start-date 2026-01-01 --end-date 2026-01-10
"""
from __future__ import annotations

import sys

from jobs._cli import check_date_order, date_range_arguments, log, main, resolve_date_range

add_arguments = date_range_arguments   # --start-date/--end-date only


def check_args(args, cfg) -> None:
    check_date_order(args.start_date, args.end_date)


def run(spark, cfg, args, record) -> int:
    from features.pipeline import build_features

    start, end = resolve_date_range(args, cfg, spark)
    result = build_features(spark, cfg, start, end, record.run_id)
    record.inputs.update(result.versions_read)
    record.outputs.update(result.versions_written)
    record.metrics.update(result.metrics())
    log.info("features %s..%s: %d input rows, %d accepted, %d quarantined, %d feature rows (version %d)",
             start, end, result.input_rows, result.accepted_rows, result.quarantined_rows,
             result.feature_rows, result.versions_written["features"])
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("build_features", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
