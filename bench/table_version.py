"""What asking a Delta table's version costs in a warm session (``core.delta_versions``: the
newest before every pinned read, a write's own after every write).

    python bench/table_version.py [--versions 6] [--calls 10] [--rounds 3]

One session with the test suite's settings (tests/jvm_options.py), one table of ``--versions``
commits (the last one tagged as the jobs' writes tag theirs); then ``--rounds`` rounds, each
timing ``--calls`` calls of each way to ask, in turn: Delta's ``DeltaLog`` through py4j (what
``latest_version`` uses), ``DeltaTable.history(1)`` (its fallback, a Spark job per call), and
``written_version`` (the version of the tagged commit: what a write returns). Prints
milliseconds per call per round, and the load.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))             # this checkout's packages and tests/jvm_options.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=6)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from core import delta_versions
    from core.config import load_config
    from core.session import build_spark
    from tests.jvm_options import SUITE_SESSION, TEST_JVM_OPTIONS

    os.environ["SPARK_SUBMIT_OPTS"] = TEST_JVM_OPTIONS
    tmp = Path(tempfile.mkdtemp(prefix="camoe-bench-table-version-"))
    try:
        cfg = load_config(overrides=[f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore",
                                     f"storage.artifacts_dir={tmp}/artifacts", "spark.master=local[2]",
                                     "spark.shuffle_partitions=4", "database=bench_versions"])
        spark = build_spark(cfg, app_name="bench-table-version", extra=SUITE_SESSION)
        name = cfg.table("versions")
        for i in range(args.versions):
            spark.range(1000 + i).write.format("delta").mode("append" if i else "overwrite").saveAsTable(name)
        writer, tag = delta_versions.tag_write(spark.range(5).write.format("delta").mode("append"))
        writer.saveAsTable(name)
        ways = {"DeltaLog": delta_versions._log_version, "history(1)": delta_versions._history_version,
                "a write's tagged commit": lambda spark, name: delta_versions.written_version(spark, name, tag)}
        answers = {label: way(spark, name) for label, way in ways.items()}      # warm-up, and the same answer
        assert len(set(answers.values())) == 1, answers
        print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; version {answers['DeltaLog']}")
        for round_ in range(1, args.rounds + 1):
            times = {}
            for label, way in ways.items():
                started = time.perf_counter()
                for _ in range(args.calls):
                    way(spark, name)
                times[label] = (time.perf_counter() - started) * 1000 / args.calls
            print(f"round {round_}: " + ", ".join(f"{label} {ms:.0f} ms/call" for label, ms in times.items()),
                  flush=True)
        print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        spark.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
