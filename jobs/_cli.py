"""What every job shares: flags, config, the SparkSession, logging, run recording, exit codes.

A job defines ``add_arguments(parser)`` and ``run(spark, cfg, args, record) -> int`` and calls
``main(...)``; failures become one readable line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
import time
from collections.abc import Callable

from core.config import ConfigError, load_config

log = logging.getLogger("camoe")
# the project's own loggers print INFO (build steps, counts); every other library WARNING and up
PROJECT_LOGGERS = ("camoe", "jobs", "features", "training", "calibration")


class _JobFormatter(logging.Formatter):
    """``HH:MM:SS build_features: message`` for the project's loggers (the job's name), the
    logger's name for other libraries' warnings; the level for warnings and errors."""

    def __init__(self, job: str):
        super().__init__(datefmt="%H:%M:%S")
        self.job = job

    def format(self, record: logging.LogRecord) -> str:
        ours = record.name.split(".")[0] in PROJECT_LOGGERS
        name = self.job if ours else record.name
        level = "" if record.levelno <= logging.INFO else f"{record.levelname} "
        text = f"{self.formatTime(record, self.datefmt)} {level}{name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


# The exit codes the README and the DAG's retry rule promise
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUALITY_GATE = 0, 1, 2, 3


class UsageError(ValueError):
    """A flag the job needs is missing or malformed (exit 2, as argparse's own errors)."""


class _JobArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (the flag, the value, what is allowed), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog.removesuffix('.py')}: usage error: {message} (--help lists the flags)\n")


def setup_logging(job: str) -> None:
    """One concise stream on stderr: the project's INFO lines, other libraries' warnings.

    The root logger stays at WARNING: Horovod logs its rendezvous chatter there at INFO, and py4j
    logs a send it retries after a reset connection (the traceback ending in
    ``ConnectionResetError``/``Py4JNetworkError: Error while sending`` seen after Horovod
    training) there at INFO too, not on its own logger. A send that fails again is logged at
    ERROR and still shows."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JobFormatter(job))
    # also for libraries that set their own loggers to INFO when imported (Great Expectations)
    handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.split(".")[0] in PROJECT_LOGGERS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def iso_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _integer(value: str, minimum: int, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"{value!r} is not {what}")
    return number


def positive_int(value: str) -> int:
    return _integer(value, 1, "a positive integer")


def non_negative_int(value: str) -> int:
    return _integer(value, 0, "an integer >= 0")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")


def table_arg(value: str) -> str:
    """A table's short name in the conf's database (letters, digits, _)."""
    if not _NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a table name (letters, digits and _)")
    return value


def qualified_table_arg(value: str) -> str:
    """A table name, ``database.table`` or a short name in the conf's database."""
    if not all(_NAME.fullmatch(part) for part in value.split(".")) or value.count(".") > 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a table name (TABLE or DATABASE.TABLE)")
    return value


def run_id_arg(value: str) -> str:
    """A run id as the runs table keys them (Airflow's ``camoe_daily-20260105-train`` included);
    it is matched in SQL, so no quotes or spaces."""
    if not _RUN_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a run id (letters, digits and . _ : + -)")
    return value


def check_date_order(start: dt.date | None, end: dt.date | None) -> None:
    if start is not None and end is not None and end < start:
        raise UsageError(f"--end-date {end} is before --start-date {start}")


def check_choice(flag: str, value: str | None, allowed, what: str) -> None:
    """A flag naming an entry of the conf (a model, a grouping, a table): one of ``allowed``."""
    if value and value not in allowed:
        raise UsageError(f"{flag} {value!r} is not {what}; choose from {', '.join(allowed)}")


def date_range_arguments(parser: argparse.ArgumentParser,
                         first_default: str = "generator.start_date; without a generator: section, the "
                                              "impressions table's first day",
                         last_default: str = "start + generator.days - 1; without a generator: section, the "
                                             "impressions table's last day") -> None:
    parser.add_argument("--start-date", type=iso_date, help=f"first event_date (default: {first_default})")
    parser.add_argument("--end-date", type=iso_date, help=f"last event_date, inclusive (default: {last_default})")


def resolve_date_range(args: argparse.Namespace, cfg, spark=None) -> tuple[dt.date, dt.date]:
    """--start-date/--end-date; a missing end comes from the generator's days for synthetic logs,
    else (a team's own log) from the days the impressions table holds."""
    start, end = args.start_date, args.end_date
    if cfg.generator is not None:
        start = start or cfg.generator.start_date
        end = end or (start + dt.timedelta(days=cfg.generator.days - 1))
    elif start is None or end is None:
        from core import tables
        first, last = tables.log_date_range(spark, cfg)
        start, end = start or first, end or last
    check_date_order(start, end)
    return start, end


def job_parser(job: str, description: str,
               add_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """The flags every job takes (config folder, extra YAML files, overrides, run id) plus its own."""
    parser = _JobArgumentParser(prog=f"{job}.py", description=description)
    parser.add_argument("--conf-dir", help="config folder (default: the project's conf/)")
    parser.add_argument("--conf", action="append", default=[], metavar="FILE",
                        help="extra YAML file; each section it names replaces the default one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set spark.shuffle_partitions=64")
    parser.add_argument("--run-id", type=run_id_arg,
                        help="run id to record (default: generated; Airflow passes its own)")
    add_arguments(parser)
    return parser


ArgsCheck = Callable[[argparse.Namespace, object], None]


def main(job: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
         run: Callable, argv: list[str] | None = None, check: ArgsCheck | None = None) -> int:
    """Parse, load the conf, ``check(args, cfg)`` the flags' values against it (UsageError /
    ConfigError: exit 2), all before Spark starts; then run and record the job."""
    args = job_parser(job, description, add_arguments).parse_args(argv)
    setup_logging(job)
    started = time.time()
    cfg = load_job_config(job, args, check)
    if cfg is None:
        return EXIT_USAGE
    spark, code = start_spark(job, cfg)
    if spark is None:
        return code
    return run_recorded(spark, cfg, job, run, args, started)


def load_job_config(job: str, args: argparse.Namespace, check: ArgsCheck | None = None):
    """The config the job's --conf-dir/--conf/--set name, with the job's flags checked against
    it; None, after one readable line on stderr naming the key and file or the flag, when either
    is invalid (the caller exits 2)."""
    try:
        cfg = load_config(args.conf_dir, extra_files=args.conf, overrides=args.set)
        if check is not None:
            check(args, cfg)
        return cfg
    except ConfigError as exc:
        print(f"{job}: configuration error: {exc}", file=sys.stderr)
    except UsageError as exc:
        print(f"{job}: usage error: {exc}", file=sys.stderr)
    return None


def start_spark(job: str, cfg):
    """The platform's SparkSession for ``job`` and EXIT_OK; (None, code) after one readable line
    on stderr when it cannot start: EXIT_USAGE when the conf is the cause (a driver launched with
    another conf's metastore), EXIT_FAILED otherwise."""
    from core import faults
    from core.session import build_spark

    try:
        faults.claim_job()                   # the reliability tests' kill points (off unless armed)
        return build_spark(cfg, app_name=f"camoe-{job}"), EXIT_OK
    except ConfigError as exc:
        print(f"{job}: configuration error: {exc}", file=sys.stderr)
        return None, EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - report any start-up failure readably
        print(f"{job}: could not start Spark: {exc}", file=sys.stderr)
        return None, EXIT_FAILED


def run_recorded(spark, cfg, job: str, run: Callable, args: argparse.Namespace,
                 started: float | None = None) -> int:
    """Run one job's ``run`` on a started session and record it in the runs table (succeeded,
    or failed with the error); a failure is one readable line on stderr and exit code 1."""
    from core import faults
    from core.lineage import RunRecord, new_run_id, record_run
    from core.tables import CONSTRAINTS, ensure_constraints

    faults.enter_job(job)
    started = started or time.time()
    record = RunRecord(run_id=args.run_id or new_run_id(job), job=job,
                       params={k: v for k, v in vars(args).items() if k not in ("conf_dir",)})
    try:
        code = run(spark, cfg, args, record)
    except (ConfigError, UsageError) as exc:   # fix the conf or the flags; retrying cannot help
        record.metrics["error"] = f"{type(exc).__name__}: {exc}"
        _try_record(spark, cfg, record, "failed")
        kind = "configuration error" if isinstance(exc, ConfigError) else "usage error"
        print(f"{job}: {kind}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one readable line, the trace in the log
        log.debug("failure", exc_info=True)
        record.metrics["error"] = f"{type(exc).__name__}: {exc}"
        _try_record(spark, cfg, record, "failed")
        print(f"{job}: FAILED ({type(exc).__name__}): {exc}", file=sys.stderr)
        return EXIT_FAILED
    if code == 0:                       # a table an older version created gets its constraints now
        for table in set(record.outputs) & set(CONSTRAINTS):
            ensure_constraints(spark, cfg.table(table))
    record.metrics["wall_seconds"] = round(time.time() - started, 2)
    record_run(spark, cfg, record, "succeeded" if code == 0 else "failed")
    log.info("run %s finished in %.1fs", record.run_id, time.time() - started)
    return code


def _try_record(spark, cfg, record, status: str) -> None:
    from core.lineage import record_run
    try:
        record_run(spark, cfg, record, status)
    except Exception:  # noqa: BLE001 - recording must not hide the original error
        log.warning("could not record the failed run", exc_info=True)
