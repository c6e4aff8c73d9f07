"""Run once per test session by tests/conftest.py, under spark-submit with
``-XX:ArchiveClassesAtExit``: a Spark + Delta + Hive session that writes, reads and aggregates a
small Delta table, so the JVM's class-data-sharing archive holds the classes every test job
loads at start. The tests' spark-submit JVMs then map them instead of loading, parsing and
verifying them one by one.

    spark-submit $(python -m core.session --local-jars --set ...) tests/spark_class_archive.py --set ...
"""
from __future__ import annotations

import sys

from core.config import load_config
from core.session import build_spark


def main(argv: list[str]) -> None:
    overrides = [a.removeprefix("--set=") for a in argv]
    cfg = load_config(overrides=overrides)
    spark = build_spark(cfg, app_name="camoe-jvm-archive")
    table = f"{cfg.database}.warm"
    rows = spark.range(3000).selectExpr("id", "CAST(id % 7 AS INT) AS k", "CAST(id AS DOUBLE) / 3 AS v",
                                        "CAST(id AS STRING) AS s")
    rows.write.format("delta").mode("overwrite").partitionBy("k").saveAsTable(table)
    rows.where("k = 1").write.format("delta").mode("overwrite").option("replaceWhere", "k = 1").saveAsTable(table)
    spark.sql(f"DESCRIBE HISTORY {table}").collect()
    spark.table(table).groupBy("k").agg({"v": "avg", "s": "count"}).join(spark.table(table), "k").count()
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
