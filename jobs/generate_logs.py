"""Generate synthetic impression logs into the raw ``impressions`` Delta table.

The range written starts ``--burn-in-days`` (default: features.history_days) before
--start-date, so that a feature build of [start, end] sees a full history window on its
first day.

    spark-submit jobs/generate_logs.py --days 10 --rows-per-day 40000 --seed 7
"""
from __future__ import annotations

import datetime as dt
import sys

from jobs._cli import iso_date, log, main, non_negative_int, positive_int, table_arg


def add_arguments(parser) -> None:
    parser.add_argument("--start-date", type=iso_date, help="first day (default: generator.start_date)")
    parser.add_argument("--days", type=positive_int, help="number of days (default: generator.days)")
    parser.add_argument("--rows-per-day", type=positive_int, help="rows per day (default: generator.rows_per_day)")
    parser.add_argument("--seed", type=non_negative_int, help="random seed (default: generator.seed)")
    parser.add_argument("--burn-in-days", type=non_negative_int,
                        help="days generated before --start-date for history (default: features.history_days)")
    parser.add_argument("--table", type=table_arg, default="impressions", help="output table name in the database")


def check_args(args, cfg) -> None:
    cfg.require("generator", "generate_logs", "the synthetic log's days, size, slots and effects")


def run(spark, cfg, args, record) -> int:
    from core import tables
    from features.synthetic import generate_impressions

    burn_in = cfg.features.history_days if args.burn_in_days is None else args.burn_in_days
    generator = cfg.require("generator", "generate_logs", "the synthetic log's days, size, slots and effects")
    first = args.start_date or generator.start_date
    end = first + dt.timedelta(days=(args.days or generator.days) - 1)
    start = first - dt.timedelta(days=burn_in)
    df = generate_impressions(spark, generator, cfg.taxonomy, start_date=start,
                              days=(end - start).days + 1, rows_per_day=args.rows_per_day, seed=args.seed)
    name = cfg.table(args.table)
    version = tables.replace_log_range(df, cfg, start, end, args.table)
    rows = tables.read_date_range(spark, name, cfg.schema.date, start, end, version).count()
    record.outputs[args.table] = version
    record.metrics.update(rows=rows, start_date=start.isoformat(), end_date=end.isoformat(), burn_in_days=burn_in)
    log.info("wrote %d rows for %s..%s (%d burn-in days before %s) to %s (version %d)", rows, start, end,
             burn_in, first, name, version)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("generate_logs", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
