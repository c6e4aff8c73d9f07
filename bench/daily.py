"""Daily-store benchmark: the cost of building one new day, however many days the store holds.

    python bench/daily.py [--rows-per-day 40000] [--days 30] [--window-days 10] [--user-cap 16000:20000]

One seeded log of ``--days + 1`` days (plus features.history_days of burn-in, as
jobs/generate_logs.py writes) in a temporary warehouse, three stores built from it:

- ``full``: days 1..N built (one range, untimed), then day N+1 built alone: timed;
- ``empty``: a store holding day N+1's inputs only (shallow clones of ``full``'s vocabulary and
  entity aggregates as they were before day N+1) and no feature rows: day N+1 built alone, timed;
- ``window``: the ``--window-days`` days ending on N+1 featurised as one build into an empty
  store (their history days' aggregates included), timed: this code asked what the old daily
  run asked of it;
- ``before``: the daily run before the daily store itself, the same window rebuilt by that
  code (``--before-rev``, a git revision of this repository, run from ``git archive`` in its own
  process, warehouse and Spark session on the same seeded log, after its own warm-up build).

Every store caps the user vocabulary (``--user-cap CAPACITY:BUCKETS``, features.vocabulary_caps):
the report gives how many user values went to hash buckets and the measured collision rate (the
share of hashed values whose bucket holds another value too).

Each timed build runs in one Spark session after an untimed warm-up build of the same size (JIT,
jars, caches), and each is the ``features.pipeline.build_features`` call alone. One run, as the
issue asks; the machine's load average is recorded before and after each timing. Results:
bench/results/daily.json / .md. The ratios: full / empty (target <= 1.2: the table's size does not
matter) and window / full (expected >= 5: a day is featurised once, not window_days times).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=40_000)
    parser.add_argument("--days", type=int, default=30, help="days the store holds before the new one")
    parser.add_argument("--window-days", type=int, default=10, help="days the old daily run rebuilt")
    parser.add_argument("--user-cap", default="16000:20000", help="user_id vocabulary CAPACITY:BUCKETS")
    parser.add_argument("--before-rev", default="10ff935",
                        help="git revision of the build before the daily store ('' skips it)")
    args = parser.parse_args()
    capacity, buckets = (int(x) for x in args.user_cap.split(":"))

    from pyspark.sql import functions as F

    from core import tables
    from core.config import load_config
    from core.session import build_spark
    from features.pipeline import build_features
    from features.synthetic import generate_impressions

    tmp = Path(tempfile.mkdtemp(prefix="camoe-bench-daily-"))
    base = [f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore"]

    def config(database: str):
        return load_config(overrides=[*base, f"database={database}", "features.vocabulary_caps="
                                      f"{{user_id: {{capacity: {capacity}, hash_buckets: {buckets}}}}}"])

    full, empty, window, warm = (config(f"bench_daily_{name}") for name in ("full", "empty", "window", "warm"))
    spark = build_spark(full, app_name="bench-daily")
    burn_in = full.features.history_days
    start = full.generator.start_date
    new_day = start + dt.timedelta(days=args.days)
    first = start - dt.timedelta(days=burn_in)
    for cfg in (full, empty, window, warm):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")
    logs = generate_impressions(spark, full.generator, full.taxonomy, start_date=first,
                                days=args.days + 1 + burn_in, rows_per_day=args.rows_per_day)
    tables.replace_log_range(logs, full, first, new_day)
    for cfg in (empty, window, warm):
        spark.sql(f"CREATE TABLE {cfg.table(tables.IMPRESSIONS)} SHALLOW CLONE {full.table(tables.IMPRESSIONS)}")

    def timed(cfg, begin: dt.date, end: dt.date, run_id: str) -> dict:
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        result = build_features(spark, cfg, begin, end, run_id)
        seconds = time.perf_counter() - t
        return {"days": f"{begin}..{end}", "seconds": round(seconds, 2), "feature_rows": result.feature_rows,
                "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2)}

    print(f"building {args.days} days into the store (untimed) ...", flush=True)
    build_features(spark, full, start, new_day - dt.timedelta(days=1), "bench-store")
    for table in (tables.VOCABULARIES, tables.ENTITY_DAILY):
        spark.sql(f"CREATE TABLE {empty.table(table)} SHALLOW CLONE {full.table(table)}")
    window_start = new_day - dt.timedelta(days=args.window_days - 1)
    # warm-ups of both sizes: the first build of a session pays for JIT and caches
    build_features(spark, warm, new_day - dt.timedelta(days=1), new_day - dt.timedelta(days=1), "bench-warm-1")
    build_features(spark, warm, new_day, new_day, "bench-warm-2")
    results = {
        "full": timed(full, new_day, new_day, "bench-new-day"),
        "empty": timed(empty, new_day, new_day, "bench-new-day"),
        "window": timed(window, window_start, new_day, "bench-window")}
    held = spark.table(full.table(tables.FEATURES)).select("event_date").distinct().count()
    hashed = spark.table(full.table(tables.VOCABULARIES)).where("feature = 'user_id' AND hashed")
    per_bucket = hashed.groupBy("index").count()
    hashed_values = hashed.count()
    colliding = per_bucket.where("count > 1").agg(F.sum("count")).first()[0] or 0
    users = spark.table(full.table(tables.VOCABULARIES)).where("feature = 'user_id' AND index IS NOT NULL").count()
    vocabulary = {"user_id_capacity": capacity, "user_id_hash_buckets": buckets, "user_id_values_with_ids": users,
                  "user_id_values_hashed": hashed_values,
                  "collision_rate": round(colliding / hashed_values, 4) if hashed_values else 0.0}
    spark.stop()                      # the other process's driver gets the cores to itself
    if args.before_rev:
        results["before"] = before_daily_store(args.before_rev, tmp, args, window_start, new_day, burn_in)
    ratios = {"full_over_empty": round(results["full"]["seconds"] / results["empty"]["seconds"], 2),
              "window_over_full": round(results["window"]["seconds"] / results["full"]["seconds"], 2),
              **({"before_over_full": round(results["before"]["seconds"] / results["full"]["seconds"], 2)}
                 if "before" in results else {})}
    report = {"builds": results, "ratios": ratios, "vocabulary": vocabulary, "days_held_before": args.days,
              "days_held_after": held,
              "rows_per_day": args.rows_per_day, "window_days": args.window_days, "burn_in_days": burn_in,
              "targets": {"full_over_empty": "<= 1.2", "before_over_full": ">= 5"}, "before_rev": args.before_rev,
              "cores": os.cpu_count(), "master": full.spark.master, "shuffle_partitions": full.spark.shuffle_partitions,
              "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "daily.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| build | days | seconds | feature rows | load before/after |", "|---|---|---|---|---|"]
    names = {"full": f"day {args.days + 1} into a store of {args.days} days",
             "empty": f"day {args.days + 1} into an empty store (its history inputs only)",
             "window": f"the {args.window_days}-day window built into an empty store by this code",
             "before": f"the {args.window_days}-day window rebuilt by the build before the store (the old daily run)"}
    for key, r in results.items():
        lines.append(f"| {names[key]} | {r['days']} | {r['seconds']:.1f} | {r['feature_rows']:,} | "
                     f"{r['load_1min_before']:.1f} / {r['load_1min_after']:.1f} |")
    lines.append(f"\nfull / empty = {ratios['full_over_empty']} (target <= 1.2); old daily run / full = "
                 f"{ratios.get('before_over_full', '-')} (expected >= 5; the build of git {args.before_rev}); "
                 f"window / full = {ratios['window_over_full']}. {args.rows_per_day:,} log rows a day, "
                 f"{full.spark.master} on {os.cpu_count()} cores, one run; `python bench/daily.py`")
    lines.append(f"\nuser_id vocabulary capped at {capacity:,} own ids + {buckets:,} hash buckets: "
                 f"{hashed_values:,} of {users:,} admitted values hashed, collision rate "
                 f"{vocabulary['collision_rate']:.1%} (hashed values sharing their bucket)")
    (RESULTS / "daily.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


BEFORE_SCRIPT = """
import datetime as dt, json, os, sys, time
from core import tables
from core.config import load_config
from core.session import build_spark
from features.pipeline import build_features
from features.synthetic import generate_impressions
tmp, rows, burn_in = sys.argv[1], int(sys.argv[2]), int(sys.argv[6])
first, start, end = map(dt.date.fromisoformat, sys.argv[3:6])
cfg = load_config(overrides=[f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore",
                             "database=bench_daily_before"])
spark = build_spark(cfg, app_name="bench-daily-before")
spark.sql("CREATE DATABASE IF NOT EXISTS bench_daily_before")
log_start = first - dt.timedelta(days=burn_in)
logs = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=log_start,
                            days=(end - log_start).days + 1, rows_per_day=rows)
tables.replace_log_range(logs, cfg, log_start, end)
build_features(spark, cfg, end - dt.timedelta(days=3), end, "before-warm")
load = os.getloadavg()[0]
t = time.perf_counter()
result = build_features(spark, cfg, start, end, "before-window")
seconds = time.perf_counter() - t
print("RESULT " + json.dumps({"days": f"{start}..{end}", "seconds": round(seconds, 2),
                              "feature_rows": result.feature_rows, "load_1min_before": round(load, 2),
                              "load_1min_after": round(os.getloadavg()[0], 2)}))
"""


def before_daily_store(rev: str, tmp: Path, args, start: dt.date, end: dt.date, burn_in: int) -> dict:
    """The old daily run's build of [start, end], timed in its own process by the code of ``rev``
    (its log: the same generator, seed and dates, from the same first day, so the same rows)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    tree = tmp / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    from core.config import load_config
    first = load_config().generator.start_date
    done = subprocess.run([sys.executable, "-c", BEFORE_SCRIPT, str(tmp / "before-lake"), str(args.rows_per_day),
                           first.isoformat(), start.isoformat(), end.isoformat(), str(burn_in)],
                          cwd=tree, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the build of {rev} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


if __name__ == "__main__":
    main()
