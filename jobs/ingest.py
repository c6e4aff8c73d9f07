"""Ingest a raw impression log (Parquet, CSV, JSON or Delta) into ``impressions``, typed by
conf/schema.yaml; rows that break the row rules go to ``quarantine`` with their reason.

Re-ingesting a day replaces it (rows and this source's rejects); days outside the range are
left alone. Without --start-date/--end-date every day the source holds is ingested.

    spark-submit jobs/ingest.py --source /data/ad_logs/2026-03-*.parquet --format parquet
    spark-submit jobs/ingest.py --source logs.csv --format csv --option sep=';' --start-date 2026-03-01
    spark-submit jobs/ingest.py --source analytics.ad_impressions --format delta --conf-dir conf/examples/starter
"""
from __future__ import annotations

import sys

from core.config_data import RAW_SOURCE_FORMATS
from jobs._cli import UsageError, check_date_order, date_range_arguments, log, main


def add_arguments(parser) -> None:
    # required, but checked in check_args: argparse would name a missing --source before an unknown flag
    parser.add_argument("--source", help="(required) path, folder or glob of the raw log files, or for "
                                         "--format delta a path or table name")
    parser.add_argument("--format", choices=RAW_SOURCE_FORMATS, help="(required) the raw log's format")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark reader option, e.g. sep=';' for CSV or multiLine=true for JSON (repeatable)")
    date_range_arguments(parser, "the first day the source holds", "the last day the source holds")


def reader_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {item!r} must look like KEY=VALUE")
        options[key] = value
    return options


def check_args(args, cfg) -> None:
    if not args.source or not args.format:
        raise UsageError("--source and --format are required (e.g. --source /data/ad_logs --format parquet)")
    reader_options(args.option)
    check_date_order(args.start_date, args.end_date)


def run(spark, cfg, args, record) -> int:
    from features.ingest import RawSource, ingest

    source = RawSource(args.source, args.format, reader_options(args.option))
    result = ingest(spark, cfg, source, record.run_id, args.start_date, args.end_date)
    record.inputs["source"] = f"{args.format}:{args.source}"
    record.outputs["impressions"] = result.impressions_version
    if result.quarantine_version is not None:
        record.outputs["quarantine"] = result.quarantine_version
    record.metrics.update(start_date=result.start.isoformat(), end_date=result.end.isoformat(),
                          read_rows=result.read_rows, accepted_rows=result.accepted_rows,
                          quarantined_rows=result.quarantined_rows)
    if result.derived_date:
        log.info("%s has no column %s: each row's day is the date of its %s", args.source, cfg.schema.date,
                 cfg.schema.timestamp)
    log.info("ingested %s..%s from %s: %s rows read, %s accepted into %s (version %d), %s quarantined%s",
             result.start, result.end, args.source, f"{result.read_rows:,}", f"{result.accepted_rows:,}",
             cfg.table("impressions"), result.impressions_version, f"{result.quarantined_rows:,}",
             f" (see {cfg.table('quarantine')})" if result.quarantined_rows else "")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("ingest", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
