"""Delta upkeep for every platform table: constraints, retention, OPTIMIZE (ZORDER BY slot), VACUUM.

VACUUM keeps storage.retain_days of versions, and longer for any version a training run whose
model still exists was trained on (features.upkeep); the tables' log retention is set to the
same span. First the training sets created more than --training-set-retention-days ago are
deleted (training_sets and their sampling_rates rows), except those a succeeded training run of
that span names. --drop-old-layout drops the tables the layout before the daily store wrote
(features with a split column, ...), so a rebuild starts clean. Weekly in Airflow
(dags/camoe_maintenance.py).

    spark-submit jobs/maintain.py [--tables features,predictions] [--training-set-retention-days 14]
                                  [--drop-old-layout]
"""
from __future__ import annotations

import sys

from jobs._cli import UsageError, log, main, non_negative_int

TRAINING_SET_RETENTION_DAYS = 14        # days a training set is kept after its creation (features.upkeep)


def add_arguments(parser) -> None:
    parser.add_argument("--tables", help="comma-separated table names (default: every platform table that exists)")
    parser.add_argument("--training-set-retention-days", type=non_negative_int, default=TRAINING_SET_RETENTION_DAYS,
                        help="delete training sets created longer ago, unless a succeeded training run of that "
                             f"span names them (default: {TRAINING_SET_RETENTION_DAYS})")
    parser.add_argument("--drop-old-layout", action="store_true",
                        help="first drop the tables written by the feature layout before the daily store "
                             "(features with a split column, vocabularies, feature_stats, sampling_rates)")


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
    if args.drop_old_layout:
        dropped = upkeep.drop_old_layout(spark, cfg)
        record.outputs["dropped_old_layout"] = list(dropped)
        print(f"dropped the old layout's {', '.join(dropped)}: rebuild every day with jobs/build_features.py"
              if dropped else "no table of the old layout")
    if tables.TRAINING_SETS in names:
        cleaned = upkeep.clean_training_sets(spark, cfg, args.training_set_retention_days)
        record.outputs["training_sets_deleted"] = list(cleaned.deleted)
        print(f"training sets: {len(cleaned.deleted)} deleted, {len(cleaned.kept_in_use)} past the retention kept "
              f"(named by a recent training run){': ' + ', '.join(cleaned.deleted) if cleaned.deleted else ''}")
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
