"""The one SparkSession builder every job uses.

Delta extensions and catalog, the warehouse folder, an embedded Derby metastore (so
``spark-sql`` and ``spark.sql`` see the same tables) and the Delta jars through
``spark.jars.packages``. A master given by ``spark-submit --master`` wins over conf
(``local[*]``, spark-submit's own default, does not: then conf's ``spark.master`` applies).
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

from features.config import Config


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
    if cfg.spark.packages:
        settings["spark.jars.packages"] = ",".join(cfg.spark.packages)
    settings.update(cfg.spark.conf)
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
    spark.sparkContext.setLogLevel("WARN")
    _quiet_metastore_loggers(spark)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")
    return spark


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


# Loggers that print stack traces at WARN for normal Delta-on-Hive-metastore operations
# (Delta tables are stored in Spark's own format, so Hive "cannot alter" them its way).
_NOISY_LOGGERS = ("org.apache.spark.sql.hive.HiveExternalCatalog",
                  "org.apache.hadoop.hive.metastore.ObjectStore",
                  "org.apache.hadoop.hive.conf.HiveConf")
# ...and one that says ERROR for the same benign case (the Delta log, not Hive, holds the schema)
_FALSE_ERROR_LOGGERS = ("org.apache.hadoop.hive.metastore.HiveAlterHandler",)


def _quiet_metastore_loggers(spark) -> None:
    jvm = spark.sparkContext._jvm
    level = jvm.org.apache.logging.log4j.Level.ERROR
    for name in _NOISY_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)
    for name in _FALSE_ERROR_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, jvm.org.apache.logging.log4j.Level.FATAL)


def main(argv: list[str] | None = None) -> int:
    """``python -m features.session`` prints the spark-submit flags for the given conf."""
    import argparse
    import shlex

    from features.config import load_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--conf-dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.conf_dir, overrides=args.set)
    print(" ".join(shlex.quote(a) for a in spark_submit_args(cfg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
