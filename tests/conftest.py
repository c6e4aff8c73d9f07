"""Fixtures for both suites: a test lake's paths and configs pointing at it (no Spark here:
tests/integration/conftest.py holds the SparkSession)."""
from __future__ import annotations

import pytest

from core.config import load_config


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
