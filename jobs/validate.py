"""Run the Great Expectations suites on the raw and feature tables; gate the pipeline.

Writes one ``dq_results`` row per expectation and exits non-zero (3) with a readable
summary when any table-level expectation fails, so schedulers stop downstream tasks.

    spark-submit jobs/validate.py --start-date 2026-01-01 --end-date 2026-01-10
"""
from __future__ import annotations

import sys

from jobs._cli import EXIT_QUALITY_GATE, check_date_order, date_range_arguments, log, main, resolve_date_range

add_arguments = date_range_arguments   # --start-date/--end-date only


def check_args(args, cfg) -> None:
    check_date_order(args.start_date, args.end_date)


def run(spark, cfg, args, record) -> int:
    from features.expectations import data_docs_index, gx_project
    from features.pipeline import validate_tables

    start, end = resolve_date_range(args, cfg, spark)
    results, versions = validate_tables(spark, cfg, start, end, record.run_id)
    record.inputs.update(versions)
    record.metrics["suites"] = {r.table: r.success for r in results}
    docs = data_docs_index(gx_project(cfg)).as_uri()
    record.outputs["data_docs"] = docs
    for r in results:
        log.info("%s", r.summary())
    failed = [r for r in results if not r.success]
    if failed:
        print("QUALITY GATE FAILED\n" + "\n".join(r.summary() for r in failed) + f"\nGX Data Docs: {docs}",
              file=sys.stderr)
        return EXIT_QUALITY_GATE
    print(f"quality gate passed: {sum(len(r.outcomes) for r in results)} expectations on "
          f"{', '.join(r.table for r in results)} (GX Data Docs: {docs})")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("validate", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
