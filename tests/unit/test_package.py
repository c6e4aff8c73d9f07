"""What a cluster gets: the job entry points' command lines, and `make package`'s dist/ used alone.

The --help tests are parametrised over jobs/*.py at collection time, so a new job is covered
as soon as it exists; they check the flags every job shares and that no Spark is started.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOBS = sorted(p for p in (ROOT / "jobs").glob("*.py") if not p.name.startswith("_"))
SHARED_FLAGS = ("--conf-dir", "--conf", "--set", "--run-id")

# Runs a job script as __main__ with the given arguments, then reports whether a SparkContext
# (or any JVM gateway) was started: --help and bad flags must answer before Spark starts.
_PROBE = """
import runpy, sys
script, *argv = sys.argv[1:]
sys.argv = [script, *argv]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    started = "pyspark.java_gateway" in sys.modules or "pyspark.sql.session" in sys.modules
    print("SPARK-STARTED" if started else "NO-SPARK", file=sys.stderr)
"""


def _probe(script: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE, str(script), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_every_job_is_found():
    names = {p.stem for p in JOBS}
    assert {"generate_logs", "build_features", "validate", "summarize", "train"} <= names


@pytest.mark.parametrize("script", JOBS, ids=lambda p: p.stem)
def test_job_help_lists_the_shared_flags_without_starting_spark(script):
    done = _probe(script, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {script.stem}.py"), done.stdout[:300]
    for flag in SHARED_FLAGS:
        assert f"{flag} " in done.stdout, f"{script.name} --help does not list {flag}"
    assert "NO-SPARK" in done.stderr, f"{script.name} --help started Spark"


@pytest.mark.parametrize("script", JOBS, ids=lambda p: p.stem)
def test_job_rejects_an_unknown_flag_readably(script):
    done = _probe(script, "--no-such-flag")
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in done.stderr
    assert "Traceback" not in done.stderr and "NO-SPARK" in done.stderr


def test_missing_conf_dir_is_a_readable_error(tmp_path):
    done = _probe(ROOT / "jobs" / "generate_logs.py", "--conf-dir", str(tmp_path / "nowhere"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"generate_logs: configuration error: config folder {tmp_path / 'nowhere'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr and "NO-SPARK" in done.stderr


# ----------------------------------------------------------------------------- make package




def test_a_bad_flag_value_is_a_readable_error_before_spark_starts():
    done = _probe(ROOT / "jobs" / "build_features.py", "--start-date", "yesterday")
    assert done.returncode == 2 and "'yesterday' is not a date" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "NO-SPARK" in done.stderr
