"""Delta upkeep for every platform table: constraints, retention, OPTIMIZE (ZORDER BY slot), VACUUM.

VACUUM keeps storage.retain_days of versions, and longer for any version a training run whose
model still exists was trained on (features.upkeep); the tables' log retention is set to the
same span. Weekly in Airflow (dags/camoe_maintenance.py).

    spark-submit jobs/maintain.py [--tables features,predictions]
"""
from __future__ import annotations

import sys

from jobs._cli import UsageError, log, main


def add_arguments(parser) -> None:
    parser.add_argument("--tables", help="comma-separated table names (default: every platform table that exists)")


def table_names(args) -> list[str]:
    from core import tables

    names = [n.strip() for n in args.tables.split(",")] if args.tables else list(tables.WRITTEN_BY)
    unknown = sorted(set(names) - set(tables.WRITTEN_BY))
    if unknown or not names:
        raise UsageError(f"--tables: unknown table(s) {', '.join(unknown) or '(none given)'}; "
                         f"platform tables: {', '.join(tables.WRITTEN_BY)}")
    return names


def check_args(args, cfg) -> None:
    table_names(args)


def run(spark, cfg, args, record) -> int:
    from core import tables
    from features import upkeep

    names = table_names(args)
    protected = upkeep.protected_versions(spark, cfg)
    print(f"{'table':<22}{'retain_h':>9}{'removed':>9}  protected versions")
    for short in names:
        name = cfg.table(short)
        if not tables.table_exists(spark, name):
            continue
        added = tables.ensure_constraints(spark, name)
        if added:
            log.info("%s: added constraints %s", name, ", ".join(added))
        done = upkeep.maintain_table(spark, name, cfg.storage.retain_days, protected.get(short, set()),
                                     cfg.storage.zorder_by)
        record.outputs[short] = {"retain_hours": done.retain_hours, "files_removed": done.files_removed,
                                 "protected_versions": list(done.protected_versions)}
        print(f"{short:<22}{done.retain_hours:>9}{done.files_removed:>9}  "
              f"{', '.join(map(str, done.protected_versions)) or '-'}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return main("maintain", __doc__, add_arguments, run, argv, check=check_args)


if __name__ == "__main__":
    sys.exit(cli())
