"""The one SparkSession builder every job uses.

Delta extensions and catalog, the warehouse folder, an embedded Derby metastore (so
``spark-sql`` and ``spark.sql`` see the same tables) and the Delta jars through
``spark.jars.packages``. A master given by ``spark-submit --master`` wins over conf
(``local[*]``, spark-submit's own default, does not: then conf's ``spark.master`` applies), and
so does every other setting spark-submit gave (``--conf``, ``--driver-memory``,
spark-defaults.conf) except the few the tables depend on (``PLATFORM_SETTINGS``).
"""
from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.config import Config, ConfigError

log = logging.getLogger("camoe.session")


def spark_conf(cfg: Config) -> dict[str, str]:
    """Every Spark setting the platform needs, as plain key -> value strings."""
    settings = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.warehouse.dir": str(cfg.storage.warehouse_dir),
        "spark.sql.catalogImplementation": "hive",
        # Hive's default Derby URL (databaseName=metastore_db) resolves against derby.system.home:
        # the metastore lands in metastore_dir without a ';'-laden URL that shells mangle
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={cfg.storage.metastore_dir}",
        # Hive's session makes <java.io.tmpdir>/<session uuid>_resources and Spark never closes the
        # session: one empty folder left per driver. One folder beside the metastore instead.
        "spark.hadoop.hive.downloaded.resources.dir": str(cfg.storage.metastore_dir / "hive-resources"),
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    settings.update(_logging_conf(cfg))
    if cfg.spark.packages:
        settings["spark.jars.packages"] = ",".join(cfg.spark.packages)
    settings.update(cfg.spark.conf)
    return settings


# Spark's log level for a run: CAMOE_SPARK_LOG=info brings Spark's INFO lines back
SPARK_LOG_ENV = "CAMOE_SPARK_LOG"
LOG4J_LEVELS = ("off", "fatal", "error", "warn", "info", "debug", "trace", "all")
LOG4J_FILE = "log4j2.properties"


def log4j_config_file(cfg: Config) -> Path | None:
    """conf/log4j2.properties beside the conf in use (a packaged conf/ carries it), else the
    source tree's; None when neither exists (then Spark's own defaults apply)."""
    for folder in (cfg.project_root / "conf", Path(__file__).resolve().parent.parent / "conf"):
        if (folder / LOG4J_FILE).is_file():
            return (folder / LOG4J_FILE).resolve()
    return None


def spark_log_level() -> str | None:
    """The level CAMOE_SPARK_LOG asks for (None: the file's default, warn)."""
    value = os.environ.get(SPARK_LOG_ENV, "").strip().lower()
    if not value:
        return None
    if value not in LOG4J_LEVELS:
        raise ValueError(f"{SPARK_LOG_ENV}={value!r} is not a log4j level ({', '.join(LOG4J_LEVELS)})")
    return value


def _logging_conf(cfg: Config) -> dict[str, str]:
    """Point driver and executor JVMs at conf/log4j2.properties (read at JVM launch).

    Every value is one shell word: the Makefile, the DAG and the tests split
    ``python -m core.session``'s output on spaces, and the driver's extraJavaOptions already
    holds derby.system.home, so the driver's option goes into ``spark.driver.defaultJavaOptions``
    (Spark prepends it to extraJavaOptions). The file reads CAMOE_SPARK_LOG from the
    environment; executors on a cluster get it through spark.executorEnv."""
    path = log4j_config_file(cfg)
    if path is None:
        return {}
    option = f"-Dlog4j2.configurationFile={path.as_uri()}"
    settings = {"spark.driver.defaultJavaOptions": option, "spark.executor.extraJavaOptions": option}
    level = spark_log_level()
    if level:
        settings[f"spark.executorEnv.{SPARK_LOG_ENV}"] = level
    return settings


# Where the tables live and how dates read: the conf decides these even under spark-submit (a
# cluster's spark-defaults.conf often names a warehouse of its own), so every job of one conf
# reads and writes the same tables. A submitted value that differs is named, not obeyed.
PLATFORM_SETTINGS = ("spark.sql.extensions", "spark.sql.catalog.spark_catalog", "spark.sql.warehouse.dir",
                     "spark.sql.catalogImplementation", "spark.sql.session.timeZone")


@dataclass(frozen=True)
class SubmittedSetting:
    """A setting spark-submit gave that differs from the conf's, and which of the two applies."""
    key: str
    submitted: str
    conf: str

    @property
    def applies(self) -> bool:
        return self.key not in PLATFORM_SETTINGS

    def describe(self) -> str:
        if self.applies:
            return f"spark-submit's {self.key}={self.submitted} applies (the conf says {self.conf})"
        return (f"spark-submit's {self.key}={self.submitted} is not used: the tables need the conf's "
                f"{self.conf} (change it in the conf, and give python -m core.session the same conf)")


def merge_submitted(settings: Mapping[str, str],
                    submitted: Mapping[str, str]) -> tuple[dict[str, str], list[SubmittedSetting]]:
    """The session settings for a driver spark-submit started: ``settings`` (the conf's) with
    spark-submit's value wherever it gave one that differs, except for ``PLATFORM_SETTINGS``;
    and each such difference. Keys only spark-submit gave are left to it (already set).

    >>> merged, diffs = merge_submitted({"spark.sql.shuffle.partitions": "8", "spark.sql.warehouse.dir": "/a"},
    ...                                 {"spark.sql.shuffle.partitions": "400", "spark.sql.warehouse.dir": "/b"})
    >>> merged
    {'spark.sql.shuffle.partitions': '400', 'spark.sql.warehouse.dir': '/a'}
    >>> [d.applies for d in diffs]
    [True, False]
    """
    merged, differences = dict(settings), []
    for key, value in settings.items():
        given = submitted.get(key)
        if given is None or given == value:
            continue
        difference = SubmittedSetting(key, given, value)
        differences.append(difference)
        if difference.applies:
            merged[key] = given
    return merged, differences


def spark_submit_args(cfg: Config) -> list[str]:
    """The same settings as ``--conf`` flags, for spark-submit / spark-sql command lines."""
    args: list[str] = []
    for key, value in spark_conf(cfg).items():
        if key == "spark.jars.packages":
            args += ["--packages", value]
        else:
            args += ["--conf", f"{key}={value}"]
    return args


def build_spark(cfg: Config, app_name: str | None = None, extra: Mapping[str, str] | None = None):
    """Create (or return the running) SparkSession configured for the platform."""
    from pyspark.sql import SparkSession

    # Workers must run this interpreter, or they import a Python without the project's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    cfg.storage.metastore_dir.mkdir(parents=True, exist_ok=True)
    cfg.storage.warehouse_dir.mkdir(parents=True, exist_ok=True)

    builder = SparkSession.builder.appName(app_name or cfg.spark.app_name)
    submitted = _submitted_conf()
    if submitted.get("spark.master") in (None, "local[*]"):
        builder = builder.master(cfg.spark.master)
    settings, differences = merge_submitted(spark_conf(cfg), submitted)
    for difference in differences:
        log.log(logging.INFO if difference.applies else logging.WARNING, difference.describe())
    for key, value in {**settings, **(extra or {})}.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    check_metastore(spark, cfg)
    if log4j_config_file(cfg) is None:       # the file sets levels at JVM launch; else say less here
        spark.sparkContext.setLogLevel((spark_log_level() or "warn").upper())
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")   # the driver's first metastore call
    except Exception as exc:
        if _DERBY_IN_USE in _causes(exc) or _derby_locked_elsewhere(cfg.storage.metastore_dir):
            raise MetastoreBusyError(
                f"the embedded metastore {cfg.storage.metastore_dir} is open in another Spark driver (Derby "
                "lets one driver at a time open it): this job wrote nothing. Run jobs on one warehouse one "
                "after another, or give the conf a shared metastore (spark.conf: "
                "spark.hadoop.hive.metastore.uris) to run them at once") from None
        raise
    return spark


def open_databases(spark, session_cfg: Config, cfgs: Iterable[Config]) -> None:
    """On a session build_spark started with ``session_cfg``, check that each of ``cfgs`` (a
    pipeline's steps, each with its own --set) names the session's metastore, and make the
    databases they name that the session has not (build_spark made ``session_cfg.database``)."""
    cfgs = list(cfgs)
    for cfg in cfgs:
        check_metastore(spark, cfg)
    for database in sorted({cfg.database for cfg in cfgs} - {session_cfg.database}):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")


class MetastoreBusyError(RuntimeError):
    """Another driver holds the embedded Derby metastore."""


_DERBY_IN_USE = "Another instance of Derby may have already booted the database"


def _derby_locked_elsewhere(metastore_dir: Path) -> bool:
    """Whether another process holds the embedded Derby database's lock (Derby keeps a POSIX
    lock on ``dbex.lck`` while it has the database open). Asked only after this driver failed to
    open it, so the lock cannot be this driver's own."""
    import fcntl

    lock = Path(metastore_dir) / "metastore_db" / "dbex.lck"
    try:
        with open(lock, "r+b") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(handle, fcntl.LOCK_UN)
    except OSError as exc:           # held elsewhere: EAGAIN or EACCES; no file: nobody opened it
        return exc.errno in (errno.EACCES, errno.EAGAIN)
    return False


def _causes(exc: BaseException) -> str:
    """The text of ``exc`` and of the exceptions it wraps (Spark nests the JVM's as strings)."""
    texts = []
    while exc is not None and len(texts) < 20:
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


def check_metastore(spark, cfg: Config) -> None:
    """Refuse a driver whose embedded metastore is not this configuration's.

    Derby's home is a JVM option, fixed when spark-submit starts the driver: a job launched with
    another conf folder's flags (``core.session --local-jars`` without the job's
    ``--conf-dir``) would write its Delta files under this conf's warehouse but register the
    tables in the other conf's metastore, where the next job would not find them."""
    if any(key in cfg.spark.conf for key in _EXTERNAL_METASTORE_KEYS):
        return
    home = spark.sparkContext._jvm.java.lang.System.getProperty("derby.system.home")
    expected = cfg.storage.metastore_dir.resolve()
    if home and Path(home).resolve() != expected:
        raise ConfigError(
            f"this Spark driver's metastore is {Path(home).resolve()}, but the configuration read "
            f"says storage.metastore_dir {expected}: launch the job with the same conf flags, e.g. "
            "spark-submit $(python -m core.session --local-jars --conf-dir DIR) jobs/JOB.py --conf-dir DIR")


_EXTERNAL_METASTORE_KEYS = ("spark.hadoop.hive.metastore.uris", "spark.hadoop.javax.jdo.option.ConnectionURL")


def _submitted_conf() -> dict[str, str]:
    """The settings spark-submit gave this driver (its flags, spark-defaults.conf, its own
    default master ``local[*]``); empty outside spark-submit.

    A plain ``SparkConf()`` reads the JVM's system properties only once a gateway exists, and
    the gateway is connected lazily, so it never saw ``--master`` (every job ran on conf's
    master). Under spark-submit the JVM is already up (PYSPARK_GATEWAY_PORT): connect first.
    Outside it, launching a JVM here would lose the settings the builder passes at launch."""
    from pyspark import SparkConf, SparkContext

    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        return {}
    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def main(argv: list[str] | None = None) -> int:
    """``python -m core.session`` prints the spark-submit flags for the given conf."""
    import argparse
    import shlex

    from core.config import load_config
    from core.spark_jars import package_jars

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--conf-dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--local-jars", action="store_true",
                        help="give spark.jars.packages as --jars from a cached, quiet Ivy resolution "
                             "(the Makefile's jobs): spark-submit then prints no Ivy report")
    args = parser.parse_args(argv)
    cfg = load_config(args.conf_dir, overrides=args.set)
    flags = spark_submit_args(cfg)
    jars = package_jars(cfg) if args.local_jars and "--packages" in flags else None
    if jars:
        at = flags.index("--packages")
        flags[at:at + 2] = ["--jars", ",".join(jars)]
    print(" ".join(shlex.quote(a) for a in flags))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
