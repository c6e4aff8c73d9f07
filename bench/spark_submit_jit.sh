#!/usr/bin/env bash
# The tests' short-lived spark-submit JVMs under the options tests/jvm_options.py gives them:
# Spark's defaults, C1-only compilation (SHORT_JVM_OPTIONS), and C1 with Spark SQL evaluated
# interpreted (TEST_JVM_OPTIONS: no generated code). STEPS (default generate_logs,build_features;
# 5 days x 3000 rows) run in one spark-submit of jobs/pipeline.py into a fresh lake, the three
# settings alternating, RUNS times each; prints wall, user and system seconds per run and the
# machine's load before it. VARIANTS picks and orders them; "conf-dir" is the tests' options with
# the conf folder ALT_CONF_DIR instead of conf/ (an A/B of a conf setting in the tests' JVMs).
#   bash bench/spark_submit_jit.sh [RUNS]
#   VARIANTS="c1-interpreted conf-dir" ALT_CONF_DIR=/tmp/conf-copy bash bench/spark_submit_jit.sh 3
#   STEPS=generate_logs,build_features,validate,train,calibrate_evaluate,score bash bench/spark_submit_jit.sh 2
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-2}
STEPS=${STEPS:-generate_logs,build_features}
PY=$PWD/.venv/bin/python
export PYSPARK_PYTHON=$PY PYSPARK_DRIVER_PYTHON=$PY OMP_NUM_THREADS=1
SHORT=$($PY -c "from tests.jvm_options import SHORT_JVM_OPTIONS; print(SHORT_JVM_OPTIONS)")
TESTS=$($PY -c "from tests.jvm_options import TEST_JVM_OPTIONS; print(TEST_JVM_OPTIONS)")
train_args=()
[[ ",$STEPS," == *,train,* ]] && train_args=(--step-args "train=--backend local --num-proc 1")
SCRATCH=$(mktemp -d /tmp/camoe-bench-jit.XXXX)
trap 'rm -rf "$SCRATCH"' EXIT
for i in $(seq "$RUNS"); do
  for variant in ${VARIANTS:-default c1 c1-interpreted}; do
    confdir=$PWD/conf
    case $variant in
      default) opts="" ;;
      c1) opts="$SHORT" ;;
      c1-interpreted) opts="$TESTS" ;;
      conf-dir) opts="$TESTS"; confdir=${ALT_CONF_DIR:?conf-dir needs ALT_CONF_DIR} ;;
      *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    lake="$SCRATCH/lake-$i-$variant"
    sets="--set=storage.warehouse_dir=$lake/warehouse --set=storage.metastore_dir=$lake/metastore
          --set=storage.artifacts_dir=$lake/artifacts --set=spark.master=local[2] --set=spark.shuffle_partitions=4
          --set=mlflow.enabled=false --set=generator.days=5 --set=generator.rows_per_day=3000
          --set=training.epochs=1 --set=training.batch_size=512"
    # shellcheck disable=SC2086
    flags=$($PY -m core.session --local-jars --conf-dir "$confdir" $sets)
    mkdir -p "$lake"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    SPARK_SUBMIT_OPTS="$opts" /usr/bin/time -f "[$variant] wall %e s, user %U s, sys %S s" \
      .venv/bin/spark-submit $flags jobs/pipeline.py --conf-dir "$confdir" $sets --steps "$STEPS" "${train_args[@]}" 2>&1 | tail -1
  done
done
