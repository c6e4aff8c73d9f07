# Two commands on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The environment is rebuilt only when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat setup.cfg | cksum | cut -d' ' -f1)
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
SPARK_SUBMIT = $(VENV)/bin/spark-submit $$($(PY) -m core.session --local-jars $(CONF_FLAGS))
CONF_FLAGS ?=
MOVIELENS := data/movielens
RECBOLE := 1.2.1
MOVIELENS_SUBMIT = $(VENV)/bin/spark-submit $$($(PY) -m core.session --local-jars --conf-dir conf/examples/movielens)
PYTEST_ARGS ?=
# Jobs are announced by name; `make V=1 ...` echoes the full spark-submit command lines instead.
# Spark's own INFO lines: CAMOE_SPARK_LOG=info make ... (conf/log4j2.properties)
AT := $(if $(V),,@)
ANNOUNCE = $(if $(V),@true,@echo "==> $(1)")

.PHONY: env demo pipeline movielens movielens-data data train evaluate score experiments test test-unit test-fast sql clean-data bench bench-features bench-calibration airflow-env airflow-demo mlflow-ui

env: $(STAMP)

$(STAMP): setup.cfg pyproject.toml training/scripts/build_horovod.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet -e '.[train,dev]'
	# petastorm declares setuptools<70, which torch contradicts: its real deps are in [train]
	$(PY) -m pip install --quiet --no-deps petastorm==0.13.1
	# Horovod 0.28.1: built from source once per machine (cached wheel), installed --no-deps
	bash training/scripts/build_horovod.sh $(PY)
	rm -f $(VENV)/.installed-*
	touch $@

## demo: set up (if needed) and run the pipeline end to end on the embedded default, in one
## Spark driver (jobs/pipeline.py: the same jobs as `make data train evaluate score`, which run
## each in its own spark-submit as Airflow does)
demo: env pipeline

pipeline: env
	$(AT)$(SPARK_SUBMIT) jobs/pipeline.py $(CONF_FLAGS) \
	    --step-args "train=--model camoe --grouping audio_video --num-proc 2 --backend horovod"

data: env
	$(call ANNOUNCE,generate_logs)
	$(AT)$(SPARK_SUBMIT) jobs/generate_logs.py $(CONF_FLAGS)
	$(call ANNOUNCE,build_features)
	$(AT)$(SPARK_SUBMIT) jobs/build_features.py $(CONF_FLAGS)
	$(call ANNOUNCE,validate)
	$(AT)$(SPARK_SUBMIT) jobs/validate.py $(CONF_FLAGS)
	$(call ANNOUNCE,summarize)
	$(AT)$(SPARK_SUBMIT) jobs/summarize.py $(CONF_FLAGS)

train: env
	$(call ANNOUNCE,train --model camoe --grouping audio_video --num-proc 2 --backend horovod)
	$(AT)$(SPARK_SUBMIT) jobs/train.py --model camoe --grouping audio_video --num-proc 2 --backend horovod $(CONF_FLAGS)

## evaluate: temperatures + slot tables for the latest trained model; prints the per-slot table from SQL
evaluate: env
	$(call ANNOUNCE,calibrate_evaluate)
	$(AT)$(SPARK_SUBMIT) jobs/calibrate_evaluate.py $(CONF_FLAGS)

score: env
	$(call ANNOUNCE,score)
	$(AT)$(SPARK_SUBMIT) jobs/score.py $(CONF_FLAGS)

## experiments: the paper's ablation set (conf/evaluation.yaml experiments:) on the benchmark
## snapshot, built in its own lake (benchmark-lake/, the demo's stays as it is): 20 days of 300k
## impressions (the scale at which the AUC-PR change intervals reach ~3 points: README), a 3-day
## validation window (Thu-Sat) and a 3-day test window (Sun-Tue), so both hold weekdays and a
## weekend day; report: bench/results/experiments.{md,json} + pareto.png.
## EXPERIMENT_FLAGS=--quick: two seeds, at most two epochs, 50 resamples (a smoke run of the whole suite);
## EXPERIMENT_FLAGS=--sampling-ablation: also camoe on training sets with milder / no down-sampling
BENCHMARK_FLAGS ?= --set storage.warehouse_dir=benchmark-lake/warehouse \
    --set storage.metastore_dir=benchmark-lake/metastore --set storage.artifacts_dir=benchmark-lake/artifacts \
    --set generator.days=20 --set generator.rows_per_day=300000 \
    --set splits.train_days=14 --set splits.validation_days=3 --set splits.test_days=3
EXPERIMENT_FLAGS ?=
BENCHMARK_SUBMIT = $(VENV)/bin/spark-submit $$($(PY) -m core.session --local-jars $(BENCHMARK_FLAGS) $(CONF_FLAGS))
experiments: env
	$(call ANNOUNCE,generate_logs + build_features + validate (benchmark-lake/))
	$(AT)$(BENCHMARK_SUBMIT) jobs/generate_logs.py $(BENCHMARK_FLAGS) $(CONF_FLAGS)
	$(AT)$(BENCHMARK_SUBMIT) jobs/build_features.py $(BENCHMARK_FLAGS) $(CONF_FLAGS)
	$(AT)$(BENCHMARK_SUBMIT) jobs/validate.py $(BENCHMARK_FLAGS) $(CONF_FLAGS)
	$(call ANNOUNCE,experiments --report bench/results/experiments.md $(EXPERIMENT_FLAGS))
	$(AT)$(BENCHMARK_SUBMIT) jobs/experiments.py --report bench/results/experiments.md $(EXPERIMENT_FLAGS) \
	    $(BENCHMARK_FLAGS) $(CONF_FLAGS)
	$(call ANNOUNCE,replay_auction)
	$(AT)$(BENCHMARK_SUBMIT) jobs/replay_auction.py $(BENCHMARK_FLAGS) $(CONF_FLAGS)

## bench: loader and training throughput (results in bench/results/, numbers in README)
bench: env
	# the peer library is installed for the benchmark only (--no-deps: it would move torch/numpy pins)
	$(PY) -m pip install --quiet --no-deps deepctr-torch==0.3.0
	$(PY) bench/loader.py
	$(PY) bench/train.py
	$(PY) bench/score.py

## bench-features: generator and feature build at 0.4M and 4M log rows (bench/results/features.*)
bench-features: env
	$(PY) bench/feature_pipeline.py

## bench-calibration: per-slot calibration ratio before/after T of camoe and wide_deep on the
## latest features (the demo's); trains+evaluates whichever has no evaluation there yet
bench-calibration: env
	$(SPARK_SUBMIT) bench/slot_calibration.py $(CONF_FLAGS)

## test: the whole suite, slow end-to-end tests included (what CI runs)
## movielens: the worked real-data example (conf/examples/movielens): MovieLens-100k ingested from
## its own files, built, gated, then every model of its conf trained per seed with paired intervals
movielens: env movielens-data
	$(call ANNOUNCE,pipeline ingest build_features validate --conf-dir conf/examples/movielens)
	$(AT)$(MOVIELENS_SUBMIT) jobs/pipeline.py --conf-dir conf/examples/movielens \
	    --steps ingest,build_features,validate --step-args "ingest=--source $(MOVIELENS)/ml-100k.inter --format csv --option 'sep=\t'"
	$(call ANNOUNCE,experiments --conf-dir conf/examples/movielens)
	$(AT)$(MOVIELENS_SUBMIT) jobs/experiments.py --conf-dir conf/examples/movielens --report bench/results/movielens.md

# MovieLens-100k (GroupLens; research use, see conf/examples/movielens/schema.yaml) as RecBole's
# PyPI wheel ships it: the wheel is downloaded, not installed, and only the data files are kept.
movielens-data: $(MOVIELENS)/ml-100k.inter

$(MOVIELENS)/ml-100k.inter: | $(STAMP)
	$(PY) -m pip download --quiet --no-deps --dest $(VENV)/downloads recbole==$(RECBOLE)
	$(PY) -c 'import pathlib, sys, zipfile; out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True); z = zipfile.ZipFile(sys.argv[1]); [out.joinpath(pathlib.PurePath(n).name).write_bytes(z.read(n)) for n in z.namelist() if pathlib.PurePath(n).parent.name == "ml-100k" and pathlib.PurePath(n).suffix in (".inter", ".item", ".user")]' \
	    $(VENV)/downloads/recbole-$(RECBOLE)-py3-none-any.whl $(MOVIELENS)

# Two workers, one test file per worker at a time (tests/conftest.py's scheduler; the longest
# first). TEST_WORKERS=1 runs the files one after another.
TEST_WORKERS ?= 2
test: env airflow-env movielens-data
	$(PY) -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

## test-unit: the inner loop, tests/unit only (no Spark, no JVM; under a minute; the slow
## coverage simulations are left to make test)
test-unit: env
	$(PY) -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

test-fast: env airflow-env movielens-data
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# ---- Airflow (dags/camoe_daily.py) --------------------------------------------------------
# Airflow lives in its own environment: its Spark provider installs pyspark-client, whose files
# overwrite pyspark's. The DAG's tasks call this project's .venv/bin/spark-submit. Rebuilt only
# when the requirements or constraints change.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_REQS := dags/requirements-airflow.txt dags/constraints-airflow.txt
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-$(shell cat $(AIRFLOW_REQS) | cksum | cut -d' ' -f1)
AIRFLOW_DATE ?= 2026-01-10
AIRFLOW_RUN = AIRFLOW_HOME=$(abspath .airflow) AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW_VAR_CAMOE_PROJECT_DIR=$(abspath .) \
	AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[*]"}' $(AIRFLOW_VENV)/bin/airflow

airflow-env: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): $(AIRFLOW_REQS)
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip wheel
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r dags/requirements-airflow.txt -c dags/constraints-airflow.txt
	rm -f $(AIRFLOW_VENV)/.installed-*
	touch $@

## airflow-demo: one run of the camoe_daily DAG (window of 10 days ending AIRFLOW_DATE) on the default warehouse
airflow-demo: env airflow-env
	$(AIRFLOW_RUN) db migrate
	$(AIRFLOW_RUN) dags test camoe_daily $(AIRFLOW_DATE)
# ---- end Airflow ----------------------------------------------------------------------------

## sql: make sql Q="SELECT slot, COUNT(*) FROM camoe.features GROUP BY slot"
sql: env
	$(VENV)/bin/spark-sql $$($(PY) -m core.session --local-jars $(CONF_FLAGS)) -e "$(Q)"

## mlflow-ui: the MLflow UI on the jobs' tracking store (the embedded SQLite one by default);
## MLFLOW_UI_PORT=5000
MLFLOW_UI_PORT ?= 5000
mlflow-ui: env
	$(VENV)/bin/mlflow ui --backend-store-uri "$$($(PY) -m training.tracking $(CONF_FLAGS))" \
	    --host 127.0.0.1 --port $(MLFLOW_UI_PORT)

clean-data:
	rm -rf warehouse metastore artifacts derby.log benchmark-lake

# --- cluster packaging (spark-submit) -------------------------------------------------------
.PHONY: package cluster-test
DIST ?= dist
JOB_SCRIPTS = $(filter-out jobs/_cli.py jobs/__init__.py,$(wildcard jobs/*.py))

## package: what a cluster needs, in $(DIST)/: the wheel, camoe-jobs.zip (--py-files: the wheel's
## packages + metadata), conf/ (--conf-dir) and the job entry scripts jobs/*.py
package: env
	rm -rf build $(DIST)/camoe-*.whl $(DIST)/camoe-jobs.zip $(DIST)/conf $(DIST)/jobs $(DIST)/.zip
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(DIST) .
	rm -rf build
	$(PY) -m zipfile -e $(DIST)/camoe-*.whl $(DIST)/.zip
	cd $(DIST)/.zip && $(abspath $(PY)) -m zipfile -c ../camoe-jobs.zip core features training calibration serving jobs camoe-*.dist-info
	rm -rf $(DIST)/.zip
	mkdir -p $(DIST)/conf $(DIST)/jobs
	cp conf/*.yaml conf/log4j2.properties $(DIST)/conf/
	cp $(JOB_SCRIPTS) $(DIST)/jobs/
	@ls -l $(DIST) $(DIST)/jobs

## cluster-test: standalone Spark cluster on loopback (master + 2 workers); build_features and
## Horovod training there must equal local[2]
cluster-test: env
	$(PY) -m pytest tests/integration/test_cluster.py $(PYTEST_ARGS)
