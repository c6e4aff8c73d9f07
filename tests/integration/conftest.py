"""The integration suite's shared JVM: one real local SparkSession (Delta + Hive metastore) per
test run, the evaluation suite's trained models, and a fresh database per test."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from tests.helpers import built_lake, recreate_database


@pytest.fixture(scope="session")
def spark(make_config):
    from core.session import build_spark
    from tests.jvm_options import SUITE_SESSION

    # with the jobs' JVM options (SPARK_SUBMIT_OPTS: tests/jvm_options.py) but Spark's own code
    # generation, which this long-lived session reuses across tests, and one-partition Delta states
    session = build_spark(make_config(), app_name="camoe-tests", extra=SUITE_SESSION)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def eval_lake(spark, make_config):
    """One small built snapshot (6 days x 8000 impressions from 2026-01-01, burn-in included),
    read by the training, evaluation and inference tests; none of them rewrites its features."""
    cfg = make_config(database="eval_suite")
    built_lake(spark, cfg, dt.date(2026, 1, 1), 6, 8000, "eval-build")
    return cfg


@pytest.fixture(scope="session")
def experiment(spark, eval_lake, make_config):
    """wide_deep and camoe trained (--quick: 2 seeds; 2 epochs, since one pass over this small lake
    leaves camoe below the base rate) and evaluated on eval_lake, shared by the evaluation and
    inference tests (training it is most of their time)."""
    from calibration.experiments import run_experiments
    from core.tables import note_minted_run_id

    cfg = make_config("training.batch_size=256", "training.shuffle_buffer=0", "experiments.epochs=2",
                      database=eval_lake.database)
    note_minted_run_id("exp1")            # new to eval_lake's database, as an id jobs/experiments.py mints
    result = run_experiments(spark, cfg, "exp1", models=("wide_deep", "camoe"), quick=True)
    return cfg, result


@pytest.fixture
def fresh_db(spark, make_config, request):
    """A config whose database is new and unique to this test."""
    def make(*overrides: str, extra_files=(), conf_dir=None):
        name = "t_" + re.sub(r"\W+", "_", request.node.name).lower()[:60]
        cfg = make_config(*overrides, database=name, extra_files=extra_files, conf_dir=conf_dir)
        recreate_database(spark, cfg)
        return cfg
    return make
