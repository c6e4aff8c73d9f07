"""A small feature build's fixed cost in a warm Spark session: what each test build pays.

    python bench/warm_build.py [--rows-per-day 3000] [--days 4] [--builds 3] [--shift-days 0] [--as-tests]
                               [--conf KEY=VALUE ...] [--alternate KEY=VALUE] [--stages]

One session (the jobs' settings, local[2], 4 shuffle partitions, plus ``--conf`` Spark settings,
e.g. ``--conf spark.sql.codegen.cache.maxEntries=100``; ``--as-tests``: the test suite's own
session's, tests/jvm_options.py's JVM options and SUITE_SESSION settings: Spark's code
generation, its larger code cache, one-partition Delta states)
runs ``--builds``
builds, each into a fresh database of a temporary warehouse, identical unless ``--shift-days``
starts each build that many days after the one before (as the suite's builds differ in dates,
which generated code holds as literals): generated raw logs
(``--days`` plus features.history_days of burn-in, as tests/helpers.py's built_lake writes),
then features.pipeline.build_features. Per build: wall seconds, the driver JVM's CPU seconds
(local mode: driver and executors are that one process), the Python driver's CPU seconds, and
the Janino compilations Spark's code generator ran (CodegenMetrics; a cache hit compiles
nothing). The first build pays the JIT and the first compilations; the later ones are what a
long-lived session (the test suite's) pays per build. ``--alternate KEY=VALUE`` sets a runtime
SQL setting for every second build (2, 4, ...) and gives the others the session's own value
(conf/base.yaml's, or Spark's default): an A/B in one session, on one machine state. Prints one
line per build; with ``--stages`` (the session's web UI on, read through its REST API) also the
build's Spark stages and tasks, and how much of the tasks' time went to deserialising them (a task
carries its stage's plan and, with whole-stage code generation, the generated Java source),
grouped by what ran them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))             # this checkout's packages and tests/helpers.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=3000)
    parser.add_argument("--days", type=int, default=4, help="featurised days (burn-in comes on top)")
    parser.add_argument("--builds", type=int, default=3)
    parser.add_argument("--shift-days", type=int, default=0, help="each build starts this many days later")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting")
    parser.add_argument("--as-tests", action="store_true", help="the test suite's session's JVM options")
    parser.add_argument("--alternate", metavar="KEY=VALUE", help="a runtime SQL setting for every second build")
    parser.add_argument("--stages", action="store_true", help="each build's stages, tasks and their deserialisation")
    args = parser.parse_args()

    import psutil

    from core import tables
    from core.config import load_config
    from core.session import build_spark
    from features.pipeline import build_features
    from tests.helpers import generated, recreate_database, write_raw

    tmp = Path(tempfile.mkdtemp(prefix="camoe-bench-warm-build-"))
    base = [f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore",
            f"storage.artifacts_dir={tmp}/artifacts", "spark.master=local[2]", "spark.shuffle_partitions=4"]
    extra = dict(item.split("=", 1) for item in args.conf)
    if args.as_tests:
        from tests.jvm_options import SUITE_SESSION, TEST_JVM_OPTIONS

        os.environ["SPARK_SUBMIT_OPTS"] = TEST_JVM_OPTIONS
        extra = {**SUITE_SESSION, **extra}
    if args.stages:                        # after TEST_JVM_OPTIONS' -Dspark.ui.enabled=false: the builder wins
        extra = {**extra, "spark.ui.enabled": "true", "spark.ui.retainedStages": "100000",
                 "spark.ui.retainedJobs": "100000"}
    try:
        spark = build_spark(load_config(overrides=[*base, "database=warm_build_0"]), app_name="bench-warm-build",
                            extra=extra)
        jvm = next(p for p in psutil.Process().children(recursive=True) if p.name() == "java")
        codegen = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
        print(f"load before: {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}", flush=True)
        if args.alternate:
            key, value = args.alternate.split("=", 1)
            session_value = spark.conf.get(key, None)
        for i in range(args.builds):
            cfg = load_config(overrides=[*base, f"database=warm_build_{i}"])
            setting = f" [{args.alternate}]" if args.alternate and i % 2 else ""
            if args.alternate:
                if setting:
                    spark.conf.set(key, value)
                elif session_value is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, session_value)
            recreate_database(spark, cfg)
            start = dt.date(2026, 1, 1) + dt.timedelta(days=i * args.shift_days)
            first, end = start - dt.timedelta(days=cfg.features.history_days), start + dt.timedelta(days=args.days - 1)
            write_raw(generated(spark, cfg, first, (end - first).days + 1, args.rows_per_day), cfg, first, end)
            run_id = f"warm-build-{i}"
            tables.note_minted_run_id(run_id)
            stages_before = {st["stageId"] for st in _stages(spark)} if args.stages else set()
            jvm_cpu, py_cpu, compiled = sum(jvm.cpu_times()[:2]), time.process_time(), codegen.getCount()
            began = time.perf_counter()
            result = build_features(spark, cfg, start, end, run_id)
            wall = time.perf_counter() - began
            print(f"build {i + 1}{setting}: {result.input_rows:,} rows, {wall:.1f} s wall, driver JVM "
                  f"{sum(jvm.cpu_times()[:2]) - jvm_cpu:.1f} CPU-s, Python {time.process_time() - py_cpu:.1f} CPU-s, "
                  f"{codegen.getCount() - compiled} code-generation compilations", flush=True)
            if args.stages:
                _print_stages([st for st in _stages(spark) if st["stageId"] not in stages_before])
        spark.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stages(spark) -> list[dict]:
    """The session's completed stages, from its web UI's REST API."""
    import json
    import urllib.request

    context = spark.sparkContext
    url = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/stages?status=complete"
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def _print_stages(stages: list[dict], top: int = 6) -> None:
    """Stages, tasks, executor run time and the time spent deserialising the tasks: in total,
    then for the ``top`` groups by the job's description (Delta names its own jobs) or call site."""
    groups: dict[str, list[float]] = {}
    for st in stages:
        group = groups.setdefault((st.get("description") or st["name"]).split(" at ")[0][:60], [0, 0, 0.0, 0.0])
        for i, value in enumerate((1, st["numTasks"], st["executorDeserializeTime"] / 1000,
                                   st["executorRunTime"] / 1000)):
            group[i] += value
    total = [sum(g[i] for g in groups.values()) for i in range(4)]
    # Spark's run time excludes the deserialisation (Executor.TaskRunner subtracts it)
    print(f"  {total[0]} stages, {total[1]} tasks: executors ran them {total[3]:.1f} s and deserialised them "
          f"{total[2]:.1f} s ({total[2] / max(total[2] + total[3], 1e-9):.0%} of the tasks' time)")
    for name, (n, tasks, deser, run) in sorted(groups.items(), key=lambda kv: -kv[1][3])[:top]:
        print(f"    {n:4d} stages {tasks:5d} tasks  run {run:6.1f} s  deserialising {deser:5.1f} s  {name}")


if __name__ == "__main__":
    main()
