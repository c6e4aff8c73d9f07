"""Shared fixtures: one real local SparkSession (Delta + Hive metastore) per test run."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from features.config import load_config
from tests.helpers import built_lake, recreate_database


@pytest.fixture(scope="session")
def lake(tmp_path_factory):
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def base_overrides(lake):
    return [f"storage.warehouse_dir={lake}/warehouse", f"storage.metastore_dir={lake}/metastore",
            f"storage.artifacts_dir={lake}/artifacts", "spark.master=local[2]",
            "spark.shuffle_partitions=4"]


@pytest.fixture(scope="session")
def make_config(base_overrides):
    """Config with the test lake's paths; ``database`` isolates each test's tables."""
    def make(*overrides: str, database: str = "camoe_test", extra_files=(), conf_dir=None):
        return load_config(conf_dir, extra_files=extra_files,
                           overrides=[*base_overrides, f"database={database}", *overrides])
    return make


@pytest.fixture(scope="session")
def spark(make_config):
    from features.session import build_spark
    session = build_spark(make_config(), app_name="camoe-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def experiment(spark, make_config):
    """wide_deep and camoe trained (--quick: 2 epochs, 2 seeds) and evaluated on one small snapshot, shared
    by the evaluation and inference tests (building and training it is most of their time)."""
    from calibration.experiments import run_experiments

    cfg = make_config("training.batch_size=256", "training.shuffle_buffer=0", database="eval_suite")
    built_lake(spark, cfg, dt.date(2026, 1, 1), 6, 8000, "eval-build")
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


def days(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]
