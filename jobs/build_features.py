"""Build days of the slot-labeled ``features`` Delta table (a daily store) from raw impressions.

Each day is built once: its partition of ``features`` (every accepted row, ids from the
persistent vocabularies, raw dense values), its per-entity aggregates (``entity_daily``, the
next days' history) and its bad rows (``quarantine``). Re-running a day replaces it with its ids
unchanged. Splits and down-sampling are chosen at training time.

    spark-submit jobs/build_features.py --start-date 2026-01-10 --end-date 2026-01-10
"""
from __future__ import annotations

import sys

from jobs._cli import check_date_order, date_range_arguments, log, main, resolve_date_range


def add_arguments(parser) -> None:
    date_range_arguments(parser)
    parser.add_argument("--short-history", action="store_true",
                        help="build even though days of the history window are in neither the log nor the "
                             "store (their events are left out of the history features)")
    parser.add_argument("--missing-days", action="store_true",
                        help="build only the days of the range the store does not hold yet, and the last "
                             "day always (a daily run whose first run catches up on its window)")


def check_args(args, cfg) -> None:
    check_date_order(args.start_date, args.end_date)


def run(spark, cfg, args, record) -> int:
    from features.pipeline import build_features, days_to_build

    start, end = resolve_date_range(args, cfg, spark)
    ranges = days_to_build(spark, cfg, start, end) if args.missing_days else [(start, end)]
    for first, last in ranges:
        result = build_features(spark, cfg, first, last, record.run_id, short_history=args.short_history)
        record.inputs.update(result.versions_read)
        record.outputs.update(result.versions_written)
        for key, value in result.metrics().items():
            record.metrics[key] = _merged(record.metrics.get(key), value)
        log.info("features %s..%s: %d input rows, %d accepted, %d quarantined, %d feature rows (version %s)",
                 first, last, result.input_rows, result.accepted_rows, result.quarantined_rows,
                 result.feature_rows, result.versions_written.get("features", "-"))
    record.metrics["built_days"] = [f"{a}..{b}" for a, b in ranges]
    return 0


def _merged(before, value):
    """One build's metric added to the run's (counts summed, lists and per-feature counts merged)."""
    if before is None:
        return value
    if isinstance(value, dict):
        return {k: before.get(k, 0) + value.get(k, 0) for k in {*before, *value}}
    return before + value


def cli(argv: list[str] | None = None) -> int:
    return main("build_features", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
