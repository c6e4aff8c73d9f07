"""JVM options for every JVM the tests start: the suite's own session, the jobs' spark-submits,
spark-sql, Airflow's tasks, and the standalone cluster's daemons and executors.

They run Spark on a few thousand rows, where C1 alone compiles what they need: C2's compiler
threads were about a fifth of a spark-submit job's CPU, and half of the suite's long-lived
session's (tests/integration/test_own_log.py alone: that JVM's 233 CPU-s, 112 of them in
compiler threads, against 176 with C1 alone, in the same wall time). C1 alone also shrinks the
default code cache to 48 MB, which a feature build outgrows ("Out of space in CodeCache"), hence
the size."""
SHORT_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m"
