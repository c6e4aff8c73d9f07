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


# Modules that take minutes (spark-submit chains, clusters, Airflow runs, the shared trained
# models): scheduled first, so the two workers of `make test` do not end on one long module.
LONG_MODULES = ("test_kill", "test_dag", "test_evaluate", "test_inference", "test_mlflow", "test_cluster",
                "test_pipeline_e2e", "test_package", "test_movielens", "test_own_log")


def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's ``--dist loadgroup`` (make test runs ``-n 2``): a module's tests run on
    one worker, so its module-scoped fixtures (a built lake, a DAG run) are built once; the
    modules that use the session's ``experiment`` (trained and evaluated models) form one group,
    so it is built once too. Without xdist the marks do nothing; the order is the same either way."""
    def module(item) -> str:
        return getattr(getattr(item, "module", None), "__name__", item.nodeid.split("::")[0])

    shares = {module(item) for item in items if "experiment" in getattr(item, "fixturenames", ())}
    for item in items:
        item.add_marker(pytest.mark.xdist_group("experiment" if module(item) in shares else module(item)))

    def rank(item) -> int:
        name = module(item).rsplit(".", 1)[-1]
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)
    items.sort(key=rank)
