"""Fixtures for both suites: a test lake's paths and configs pointing at it (no Spark here:
tests/integration/conftest.py holds the SparkSession), and how `make test` spreads the suite over
two pytest-xdist workers."""
from __future__ import annotations

import os

import pytest

from core.config import load_config

# The spark-submit JVMs the tests start (jobs, spark-sql, Airflow's tasks) live one or two
# minutes: C1 alone compiles what they need, and C2's compiler threads were about a third of such
# a job's CPU (bench-free measurement in the README's test section). The suite's own long-lived
# JVM is launched without it (tests/integration/conftest.py): there C2 pays for itself.
SHORT_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
os.environ.setdefault("SPARK_SUBMIT_OPTS", SHORT_JVM_OPTIONS)

# `make test` runs two workers (-n 2 --dist loadgroup): every test file is one group, so a
# module-scoped fixture is built once, and the tests that read the shared evaluation lake are one
# group across their files. Groups start longest first (durations of the last clean-clone run) so
# the two workers finish together; the rest follow in collection order.
SHARED_LAKE_GROUP = "eval_lake"
LONGEST_FIRST = ("test_kill", "test_cluster", "test_dag", SHARED_LAKE_GROUP, "test_package", "test_own_log",
                 "test_movielens", "test_auction", "test_features", "test_quality", "test_data", "test_synthetic")


def _group(item: pytest.Item) -> str:
    if SHARED_LAKE_GROUP in getattr(item, "fixturenames", ()):
        return SHARED_LAKE_GROUP
    return item.path.stem


@pytest.hookimpl(tryfirst=True)          # before xdist reads the marks
def pytest_collection_modifyitems(config, items):
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))      # stable: file order kept


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
