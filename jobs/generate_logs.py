"""Generate synthetic impression logs into the raw ``impressions`` Delta table.

    spark-submit jobs/generate_logs.py --days 10 --rows-per-day 40000 --seed 7
"""
from __future__ import annotations

import datetime as dt
import sys

from jobs._cli import iso_date, log, main


def add_arguments(parser) -> None:
    parser.add_argument("--start-date", type=iso_date, help="first day (default: generator.start_date)")
    parser.add_argument("--days", type=int, help="number of days (default: generator.days)")
    parser.add_argument("--rows-per-day", type=int, help="rows per day (default: generator.rows_per_day)")
    parser.add_argument("--seed", type=int, help="random seed (default: generator.seed)")
    parser.add_argument("--table", default="impressions", help="output table name in the database")


def run(spark, cfg, args, record) -> int:
    from features import tables
    from features.synthetic import generate_impressions

    for flag in ("days", "rows_per_day"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    df = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=args.start_date,
                              days=args.days, rows_per_day=args.rows_per_day, seed=args.seed)
    start = args.start_date or cfg.generator.start_date
    end = start + dt.timedelta(days=(args.days or cfg.generator.days) - 1)
    name = cfg.table(args.table)
    version = tables.replace_date_range(df, name, cfg.schema.date, start, end, [cfg.schema.date])
    rows = tables.read_date_range(spark, name, cfg.schema.date, start, end, version).count()
    record.outputs[args.table] = version
    record.metrics.update(rows=rows, start_date=start.isoformat(), end_date=end.isoformat())
    log.info("wrote %d rows for %s..%s to %s (version %d)", rows, start, end, name, version)
    return 0


if __name__ == "__main__":
    sys.exit(main("generate_logs", __doc__, add_arguments, run))
