"""The unit suite: no Spark, no JVM, no subprocess that starts one (`make test-unit`, under a
minute). The SparkSession fixtures live in tests/integration/conftest.py, out of this suite's
reach; this guard catches a library import that would start a JVM anyway."""
from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True, scope="session")
def no_jvm():
    yield
    context = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    assert context is None or context.SparkContext._active_spark_context is None, \
        "a unit test started a SparkContext: it belongs in tests/integration"
