"""The Delta jars as local files: ``python -m core.session --local-jars`` gives spark-submit
``--jars`` from one cached, quiet Ivy resolution instead of ``--packages``."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from core.config import Config
from core.session import spark_conf

# spark-submit resolves --packages through Ivy on every launch and prints Ivy's report (~22 lines)
# to stderr; Spark 4.0 has no setting to quiet it (MavenUtils logs quietly in its tests only and
# Ivy's default logger is fixed at INFO). ``--local-jars`` resolves once, quietly, and then
# gives the jars of that resolution as --jars: the same classpath without the report.
_PRINT_JARS = ("from pyspark import SparkConf, SparkContext\n"
               "SparkContext._ensure_initialized()\n"
               "print('CAMOE_JARS=' + SparkConf().get('spark.jars', ''))\n")


def package_jars(cfg: Config, cache_dir: Path | None = None) -> list[str] | None:
    """Local jar files of spark.jars.packages (with their dependencies), from a cached earlier
    resolution or a new one whose output is shown only when it fails; None when there are no
    packages or the resolution failed (then --packages resolves, and reports, as usual)."""
    import hashlib
    import json

    import pyspark

    conf = spark_conf(cfg)
    if not conf.get("spark.jars.packages"):
        return None
    ivy = {k: v for k, v in conf.items() if k.startswith("spark.jars.")}
    key = hashlib.sha1(json.dumps([pyspark.__version__, ivy], sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "camoe"
    cached = cache_dir / f"spark-jars-{key}.txt"
    if cached.is_file():
        jars = cached.read_text().split()
        if jars and all(Path(j).is_file() for j in jars):
            return jars
    print(f"resolving {ivy['spark.jars.packages']} once (jar list cached in {cache_dir})", file=sys.stderr)
    jars = _resolve_packages(ivy)
    if jars:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(jars) + "\n")
        os.replace(tmp, cached)
    return jars


def _resolve_packages(ivy: Mapping[str, str]) -> list[str] | None:
    """Run spark-submit once with these spark.jars.* settings and read back the jars it put on
    spark.jars (file: URIs into Ivy's jars folder)."""
    import subprocess
    import tempfile
    from urllib.parse import unquote, urlparse

    from pyspark.find_spark_home import _find_spark_home

    submit = Path(_find_spark_home()) / "bin" / "spark-submit"
    with tempfile.TemporaryDirectory(prefix="camoe-jars-") as tmp:
        script = Path(tmp) / "print_jars.py"
        script.write_text(_PRINT_JARS)
        flags = [arg for k, v in ivy.items() for arg in ("--conf", f"{k}={v}")]
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        try:
            done = subprocess.run([str(submit), *flags, str(script)], capture_output=True, text=True,
                                  env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"core.session: could not resolve {ivy['spark.jars.packages']}: {exc}", file=sys.stderr)
            return None
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("CAMOE_JARS=")), None)
    uris = [u for u in (line or "").removeprefix("CAMOE_JARS=").split(",") if u]
    jars = [unquote(urlparse(u).path) if u.startswith("file:") else u for u in uris]
    if done.returncode != 0 or not jars or not all(Path(j).is_file() for j in jars):
        print(f"core.session: resolving {ivy['spark.jars.packages']} failed (exit {done.returncode}); "
              f"spark-submit will resolve them itself:\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return jars
