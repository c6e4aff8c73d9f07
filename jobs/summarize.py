"""Print the per-slot summary of the feature table, read back through Spark SQL.

    spark-submit jobs/summarize.py
"""
from __future__ import annotations

import sys

from jobs._cli import main, run_id_arg


def add_arguments(parser) -> None:
    parser.add_argument("--build-run-id", type=run_id_arg, help="feature build to summarise (default: the latest)")
    parser.add_argument("--show-sql", action="store_true", help="print the query the table is read with")


def run(spark, cfg, args, record) -> int:
    from core import tables
    from features.reports import slot_summary_sql

    tables.require_table(spark, cfg.table(tables.FEATURES))  # else Spark's TABLE_OR_VIEW_NOT_FOUND dump

    sql = slot_summary_sql(cfg, args.build_run_id)
    print(sql if args.show_sql else f"per-slot summary of {cfg.table('features')}, build "
          f"{args.build_run_id or 'latest'} (--show-sql prints the query):")
    spark.sql(sql).show(50, truncate=False)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("summarize", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(cli())
