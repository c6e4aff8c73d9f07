"""JVM options for every JVM the tests start: the suite's own session, the jobs' spark-submits,
spark-sql, Airflow's tasks, and the standalone cluster's daemons and executors.

They run Spark on a few thousand rows, where C1 alone compiles what they need: C2's compiler
threads were about a fifth of a spark-submit job's CPU, and half of the suite's long-lived
session's (tests/integration/test_own_log.py alone: that JVM's 233 CPU-s, 112 of them in
compiler threads, against 176 with C1 alone, in the same wall time). C1 alone also shrinks the
default code cache to 48 MB, which a feature build outgrows ("Out of space in CodeCache"), hence
the size.

For the same reason the jobs' JVMs evaluate Spark SQL interpreted, without generating Java code
(``INTERPRETED_SQL``, as system properties, which every SparkConf reads as ``spark.*`` settings):
a flight recording of one spark-submit pipeline (generate_logs..score, 15,000 rows) had a quarter
of the driver's samples in code generation and Janino's class lookups; with both settings the run
took 76-79 user CPU-s instead of 83-86 and 66-68 s instead of 73-75 (bench/spark_submit_jit.sh). The
suite's own session keeps Spark's code generation (``GENERATED_CODE``, set on its builder): it
lives through the whole run and reuses what it compiled, and its tests read more rows (a clean-
clone run with it interpreted too: the feature tests 193 s instead of 131, the generator's 93
instead of 46), and it is where `spark.catalog.listTables` runs, whose interpreted decoder fails
in Spark 4.0 (EXPRESSION_DECODING_FAILED). It reuses them only if Spark's code-generation cache
holds them: at its default 100 classes a small feature build (~260 compilations) evicts its own,
and the next build compiles the same classes again. With 4,000, `python bench/warm_build.py
--as-tests --builds 4 --shift-days 9` (builds of different dates, as the suite's; before
SMALL_DELTA_LOGS below) compiled 24 classes per warm build instead of 259 and used 47, 45 and 44
driver CPU-s instead of 55, 53 and 46. The jobs' own configuration keeps Spark's defaults: on real
logs generated code is the fast path. The suite's session also keeps each Delta table's state in
one partition (``SMALL_DELTA_LOGS``; conf/base.yaml's jobs keep 4): every read or write of a Delta
table first runs Delta's "Filtering files for query" job over that state, one task per partition,
and each task deserialises the job's plan. A warm build ran 28 such jobs, 106 tasks, deserialising
2.6-2.9 s and running 2.6-2.7 s (`python bench/warm_build.py --as-tests --builds 3 --shift-days 9
--stages --conf spark.databricks.delta.snapshotPartitions=4`); with one partition 28 tasks, 0.6 and
1.1-1.2 s. The same command with `--builds 7 --alternate
spark.databricks.delta.snapshotPartitions=1` instead of `--stages` used 46, 41 and 42 driver-JVM
CPU-s for the builds with one partition against 53, 45 and 44 for those between them (2.5-12 CPU-s
less than each neighbour).
(The standalone cluster's daemons and executors
take SHORT_JVM_OPTIONS and the class archive only: Spark refuses ``spark.*`` settings in executor
Java options, and the executors follow their driver's SQL settings.) No test reads a driver's
web UI (``NO_WEB_UI``): starting it was ~0.45 CPU-s of every test JVM (a spark-submit that starts
a session and runs one query: 8.15 CPU-s with it, 7.7 without, two runs each way)."""
SHORT_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m"
INTERPRETED_SQL = "-Dspark.sql.codegen.wholeStage=false -Dspark.sql.codegen.factoryMode=NO_CODEGEN"
NO_WEB_UI = "-Dspark.ui.enabled=false"
TEST_JVM_OPTIONS = f"{SHORT_JVM_OPTIONS} {INTERPRETED_SQL} {NO_WEB_UI}"
GENERATED_CODE = {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK",
                  "spark.sql.codegen.cache.maxEntries": "4000"}
SMALL_DELTA_LOGS = {"spark.databricks.delta.snapshotPartitions": "1"}
SUITE_SESSION = {**GENERATED_CODE, **SMALL_DELTA_LOGS}       # the settings of the suite's own session


def class_archive_options(jvm_options: str) -> str:
    """The class-data-sharing options in ``jvm_options`` (tests/conftest.py adds them to
    SPARK_SUBMIT_OPTS), for JVMs that do not read SPARK_SUBMIT_OPTS: the standalone cluster's
    daemons and executors, whose classpath (the pyspark distribution's conf/ and jars/) is the
    archive's."""
    return " ".join(o for o in jvm_options.split() if o.startswith(("-XX:SharedArchiveFile=", "-Xlog:cds")))
