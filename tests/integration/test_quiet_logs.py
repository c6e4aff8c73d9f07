"""A real spark-submit of a job is quiet by default: no Spark INFO lines, no Ivy report, no
traceback, only the job's own ``HH:MM:SS job: message`` lines (the settings behind it:
tests/unit/test_quiet_logs.py)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from core.session import SPARK_LOG_ENV
from tests.submit import SPARK_SUBMIT, python_env, spark_submit_flags

ROOT = Path(__file__).resolve().parents[2]



@pytest.mark.slow
def test_generate_logs_through_spark_submit_prints_no_spark_info_ivy_report_or_traceback(tmp_path):
    overrides = [f"--set=storage.warehouse_dir={tmp_path}/warehouse",
                 f"--set=storage.metastore_dir={tmp_path}/metastore",
                 f"--set=storage.artifacts_dir={tmp_path}/artifacts", "--set=spark.master=local[1]",
                 "--set=generator.days=1", "--set=generator.rows_per_day=200"]
    env = python_env({k: v for k, v in os.environ.items() if k != SPARK_LOG_ENV})
    flags = spark_submit_flags(overrides, env)
    done = subprocess.run([str(SPARK_SUBMIT), *flags, str(ROOT / "jobs" / "generate_logs.py"),
                           "--burn-in-days=0", *overrides], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not re.search(r" INFO [\w$.]+: ", output), output[-3000:]           # log4j INFO lines
    assert ":: resolution report ::" not in output and "Traceback" not in output, output[-3000:]
    assert re.search(r"^\d\d:\d\d:\d\d generate_logs: wrote 200 rows ", output, re.M), output[-3000:]
    assert len(output.splitlines()) <= 8, output


