"""The unit suite: no Spark, no JVM, no subprocess that starts one (`make test-unit`, under a
minute). The SparkSession fixtures live in tests/integration/conftest.py, out of this suite's
reach; this guard catches a library import that would start a JVM anyway."""
from __future__ import annotations

import sys

import pytest


def _spark_running() -> bool:
    context = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    return context is not None and context.SparkContext._active_spark_context is not None


@pytest.fixture(autouse=True)
def no_jvm():
    # per test, against the state before it: in `make test` the integration suite's session is
    # already up when the unit tests run, and it is not theirs
    before = _spark_running()
    yield
    assert before or not _spark_running(), "this unit test started a SparkContext: it belongs in tests/integration"
