"""Feature-pipeline benchmark: generate and build at two log sizes in one Spark session.

    python bench/feature_pipeline.py [--sizes 400000 4000000] [--days 10]

Each size is a fresh database in a temporary warehouse: the generator writes ``--days`` days
plus features.history_days of burn-in into the raw impressions table (as jobs/generate_logs.py
does), then the feature build featurises the ``--days`` days (as jobs/build_features.py does).
"Rows" are the log's rows, burn-in included (the build reads them all). The marginal rate
between the two sizes, (rows_2 - rows_1) / (seconds_2 - seconds_1), is the cost that grows
with the data (start-up and per-action overheads cancel); linear cost keeps it near the
overall rate at the larger size. Results: bench/results/features.json / .md.
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
    parser.add_argument("--sizes", type=int, nargs=2, default=[400_000, 4_000_000], metavar="ROWS")
    parser.add_argument("--days", type=int, default=10, help="featurised days (burn-in comes on top)")
    args = parser.parse_args()

    from core import tables
    from core.config import load_config
    from core.session import build_spark
    from features.pipeline import build_features
    from features.synthetic import generate_impressions

    tmp = Path(tempfile.mkdtemp(prefix="camoe-bench-features-"))
    base = [f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore"]
    cfg0 = load_config(overrides=[*base, "database=bench_features_warmup"])
    spark = build_spark(cfg0, app_name="bench-features")
    burn_in = cfg0.features.history_days
    start = cfg0.generator.start_date
    first, end = start - dt.timedelta(days=burn_in), start + dt.timedelta(days=args.days - 1)
    log_days = args.days + burn_in

    def run_size(rows: int, database: str) -> dict:
        cfg = load_config(overrides=[*base, f"database={database}"])
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
        rows_per_day = rows // log_days
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        logs = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=first, days=log_days,
                                    rows_per_day=rows_per_day)
        tables.replace_log_range(logs, cfg, first, end)
        generate_s = time.perf_counter() - t
        t = time.perf_counter()
        result = build_features(spark, cfg, start, end, f"bench-{rows}")
        build_s = time.perf_counter() - t
        log_rows = rows_per_day * log_days
        return {"log_rows": log_rows, "featurised_rows": result.input_rows, "feature_rows": result.feature_rows,
                "generate_seconds": round(generate_s, 2), "build_seconds": round(build_s, 2),
                "generate_rows_per_s": round(log_rows / generate_s), "build_rows_per_s": round(log_rows / build_s),
                "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2)}

    run_size(20_000, "bench_features_warmup")          # JIT, jars and caches warm for both sizes
    small, large = (run_size(n, f"bench_features_{i}") for i, n in enumerate(args.sizes))
    d_rows = large["log_rows"] - small["log_rows"]
    marginal = {"generate_rows_per_s": round(d_rows / (large["generate_seconds"] - small["generate_seconds"])),
                "build_rows_per_s": round(d_rows / (large["build_seconds"] - small["build_seconds"]))}
    report = {"sizes": [small, large], "marginal": marginal, "days": args.days, "burn_in_days": burn_in,
              "cores": os.cpu_count(), "master": cfg0.spark.master,
              "shuffle_partitions": cfg0.spark.shuffle_partitions,
              "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| log rows | generate s | generate rows/s | build s | build rows/s | load before/after |",
             "|---|---|---|---|---|---|"]
    for r in (small, large):
        lines.append(f"| {r['log_rows']:,} | {r['generate_seconds']:.1f} | {r['generate_rows_per_s']:,} | "
                     f"{r['build_seconds']:.1f} | {r['build_rows_per_s']:,} | "
                     f"{r['load_1min_before']:.1f} / {r['load_1min_after']:.1f} |")
    lines.append(f"| marginal | | {marginal['generate_rows_per_s']:,} | | {marginal['build_rows_per_s']:,} | |")
    lines.append(f"\n{args.days} featurised days + {burn_in} burn-in days, {cfg0.spark.master} on "
                 f"{os.cpu_count()} cores; `python bench/feature_pipeline.py`")
    (RESULTS / "features.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    spark.stop()


if __name__ == "__main__":
    main()
