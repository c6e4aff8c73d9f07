"""The one SparkSession builder every job uses.

Delta extensions and catalog, the warehouse folder, an embedded Derby metastore (so
``spark-sql`` and ``spark.sql`` see the same tables) and the Delta jars through
``spark.jars.packages``. A master given by ``spark-submit --master`` wins over conf
(``local[*]``, spark-submit's own default, does not: then conf's ``spark.master`` applies).
"""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from core.config import Config, ConfigError


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
    if _submitted_master() in (None, "local[*]"):
        builder = builder.master(cfg.spark.master)
    for key, value in {**spark_conf(cfg), **(extra or {})}.items():
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


def _submitted_master() -> str | None:
    """The master spark-submit gave this driver (``--master``, spark-defaults or its own default
    ``local[*]``); None outside spark-submit.

    A plain ``SparkConf()`` reads the JVM's system properties only once a gateway exists, and
    the gateway is connected lazily, so it never saw ``--master`` (every job ran on conf's
    master). Under spark-submit the JVM is already up (PYSPARK_GATEWAY_PORT): connect first.
    Outside it, launching a JVM here would lose the settings the builder passes at launch."""
    from pyspark import SparkConf, SparkContext

    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        return None
    SparkContext._ensure_initialized()
    return SparkConf().get("spark.master", None)


# ----------------------------------------------------------------------------- package jars
# spark-submit resolves --packages through Ivy on every launch and prints Ivy's report (~22 lines)
# to stderr; Spark 4.0 has no setting to quiet it (MavenUtils logs quietly in its tests only and
# Ivy's default logger is fixed at INFO). ``--local-jars`` resolves once, quietly, and then
# gives the jars of that resolution as --jars: the same classpath without the report.
_PRINT_JARS = ("from pyspark import SparkConf, SparkContext\n"
               "SparkContext._ensure_initialized()\n"
               "print('CAMOE_JARS=' + SparkConf().get('spark.jars', ''))\n")


def package_jars(cfg: Config, cache_dir: Path | None = None) -> list[str] | None:
    """Local jar files of spark.jars.packages (with their dependencies), from a cached earlier
    resolution or a new one whose output is shown only when it fails; None when there are no
    packages or the resolution failed (then --packages resolves, and reports, as usual)."""
    import hashlib
    import json

    import pyspark

    conf = spark_conf(cfg)
    if not conf.get("spark.jars.packages"):
        return None
    ivy = {k: v for k, v in conf.items() if k.startswith("spark.jars.")}
    key = hashlib.sha1(json.dumps([pyspark.__version__, ivy], sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "camoe"
    cached = cache_dir / f"spark-jars-{key}.txt"
    if cached.is_file():
        jars = cached.read_text().split()
        if jars and all(Path(j).is_file() for j in jars):
            return jars
    print(f"resolving {ivy['spark.jars.packages']} once (jar list cached in {cache_dir})", file=sys.stderr)
    jars = _resolve_packages(ivy)
    if jars:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(jars) + "\n")
        os.replace(tmp, cached)
    return jars


def _resolve_packages(ivy: Mapping[str, str]) -> list[str] | None:
    """Run spark-submit once with these spark.jars.* settings and read back the jars it put on
    spark.jars (file: URIs into Ivy's jars folder)."""
    import subprocess
    import tempfile
    from urllib.parse import unquote, urlparse

    from pyspark.find_spark_home import _find_spark_home

    submit = Path(_find_spark_home()) / "bin" / "spark-submit"
    with tempfile.TemporaryDirectory(prefix="camoe-jars-") as tmp:
        script = Path(tmp) / "print_jars.py"
        script.write_text(_PRINT_JARS)
        flags = [arg for k, v in ivy.items() for arg in ("--conf", f"{k}={v}")]
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        try:
            done = subprocess.run([str(submit), *flags, str(script)], capture_output=True, text=True,
                                  env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"core.session: could not resolve {ivy['spark.jars.packages']}: {exc}", file=sys.stderr)
            return None
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("CAMOE_JARS=")), None)
    uris = [u for u in (line or "").removeprefix("CAMOE_JARS=").split(",") if u]
    jars = [unquote(urlparse(u).path) if u.startswith("file:") else u for u in uris]
    if done.returncode != 0 or not jars or not all(Path(j).is_file() for j in jars):
        print(f"core.session: resolving {ivy['spark.jars.packages']} failed (exit {done.returncode}); "
              f"spark-submit will resolve them itself:\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return jars


def main(argv: list[str] | None = None) -> int:
    """``python -m core.session`` prints the spark-submit flags for the given conf."""
    import argparse
    import shlex

    from core.config import load_config

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
