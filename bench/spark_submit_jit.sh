#!/usr/bin/env bash
# The tests' short-lived spark-submit JVMs with and without C1-only compilation
# (tests/conftest.py SHORT_JVM_OPTIONS): generate_logs + build_features (5 days x 3000 rows) in
# one spark-submit into a fresh lake, alternating the two settings RUNS times each; prints wall,
# user and system seconds per run and the machine's load before it.
#   bash bench/spark_submit_jit.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-2}
PY=$PWD/.venv/bin/python
export PYSPARK_PYTHON=$PY PYSPARK_DRIVER_PYTHON=$PY
SCRATCH=$(mktemp -d /tmp/camoe-bench-jit.XXXX)
trap 'rm -rf "$SCRATCH"' EXIT
for i in $(seq "$RUNS"); do
  for opts in "" "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m"; do
    lake="$SCRATCH/lake-$i-${#opts}"
    sets="--set=storage.warehouse_dir=$lake/warehouse --set=storage.metastore_dir=$lake/metastore
          --set=storage.artifacts_dir=$lake/artifacts --set=spark.master=local[2] --set=spark.shuffle_partitions=4
          --set=mlflow.enabled=false --set=generator.days=5 --set=generator.rows_per_day=3000"
    # shellcheck disable=SC2086
    flags=$($PY -m core.session --local-jars $sets)
    mkdir -p "$lake"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    SPARK_SUBMIT_OPTS="$opts" /usr/bin/time -f "[${opts:-default JIT}] wall %e s, user %U s, sys %S s" \
      .venv/bin/spark-submit $flags jobs/pipeline.py $sets --steps generate_logs,build_features 2>&1 | tail -1
  done
done
