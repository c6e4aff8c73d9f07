"""Print the per-slot summary of the feature table's days (rows, clicks, CTR), read back through
Spark SQL.

    spark-submit jobs/summarize.py [--start-date D] [--end-date D]
"""
from __future__ import annotations

import sys

from jobs._cli import check_date_order, date_range_arguments, main


def add_arguments(parser) -> None:
    date_range_arguments(parser, "the table's first day", "the table's last day")
    parser.add_argument("--show-sql", action="store_true", help="print the query the table is read with")


def check_args(args, cfg) -> None:
    check_date_order(args.start_date, args.end_date)


def run(spark, cfg, args, record) -> int:
    from core import tables
    from features.reports import slot_summary_sql

    tables.require_table(spark, cfg.table(tables.FEATURES))  # else Spark's TABLE_OR_VIEW_NOT_FOUND dump

    sql = slot_summary_sql(cfg, args.start_date, args.end_date)
    days = f"{args.start_date or 'first day'}..{args.end_date or 'last day'}"
    print(sql if args.show_sql else f"per-slot summary of {cfg.table('features')}, days {days} "
          "(--show-sql prints the query):")
    spark.sql(sql).show(50, truncate=False)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("summarize", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
