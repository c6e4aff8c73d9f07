"""How the tests launch the project's jobs the way the README does: ``python -m core.session``'s
flags, then spark-submit. Standard library only, so tests/conftest.py can import it for unit
test runs too."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def python_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with Spark's Python workers and driver
    set to this interpreter, as a spark-submit of the project's jobs needs."""
    return {**(os.environ if base is None else base), "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable}


def spark_submit_flags(sets: Sequence[str], env: Mapping[str, str] | None = None,
                       local_jars: bool = True) -> list[str]:
    """The spark-submit flags ``python -m core.session`` prints for the ``--set=KEY=VALUE``
    words ``sets``, as the README's spark-submit lines take them (``local_jars``: the resolved
    Delta jars as --jars, without Ivy's report)."""
    done = subprocess.run([sys.executable, "-m", "core.session", *(["--local-jars"] if local_jars else []), *sets],
                          cwd=ROOT, env=python_env() if env is None else env, capture_output=True, text=True,
                          timeout=600, check=True)
    return done.stdout.split()
