"""Synthetic-log generator benchmark: rows/s of features.synthetic.generate_impressions.

    python bench/generator.py [--rows 400000 4000000] [--baseline-rev REV] [--days 4]

In one process, after Spark is up, for each size: (a) compute only (Spark's noop sink) and
(b) compute + Delta write through core.tables.replace_date_range, as jobs/generate_logs.py
does. With --baseline-rev, the generator as of that git revision is timed in the same run and
its rows are checked equal to the current one's (a hash over every column of every row).
Each timing is preceded by a warm-up on a small size (JIT, codegen cache). Results:
bench/results/generator.json, with os.getloadavg() at each timing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def time_generate(spark, cfg, rows: int, generate: Callable | None = None, days: int = 4,
                  table: str = "impressions", sink: str = "delta") -> dict:
    """Seconds and rows/s to generate ``rows`` rows over ``days`` days into ``sink``: "delta" (a
    replace_date_range of the table, as the generate job writes it) or "noop" (compute only)."""
    from core import tables
    from features.synthetic import generate_impressions

    generate = generate or generate_impressions
    start = dt.date(2026, 1, 1)
    end = start + dt.timedelta(days=days - 1)
    df = generate(spark, cfg.generator, cfg.taxonomy, start_date=start, days=days, rows_per_day=rows // days)
    t0 = time.perf_counter()
    if sink == "noop":
        df.write.format("noop").mode("overwrite").save()
    else:
        tables.replace_log_range(df, cfg, start, end, table)
    seconds = time.perf_counter() - t0
    return dict(rows=rows, sink=sink, seconds=round(seconds, 3), rows_per_s=round(rows / seconds),
                loadavg_1m=round(os.getloadavg()[0], 2))


def content_hash(df) -> tuple[int, int]:
    """(row count, sum of xxhash64 over every column): equal for equal row multisets."""
    from pyspark.sql import functions as F
    return tuple(df.select(F.xxhash64(*df.columns).alias("h")).agg(
        F.count(F.lit(1)), F.sum(F.col("h").cast("decimal(38,0)"))).first())


def load_generator_at(rev: str) -> Callable:
    """generate_impressions as features/synthetic.py was at git revision ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:features/synthetic.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="synthetic-")) / f"synthetic_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_impressions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[400_000, 4_000_000])
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--baseline-rev", help="also time the generator at this git revision")
    parser.add_argument("--baseline-max-rows", type=int, default=1_000_000,
                        help="time the baseline only up to this size (it is slow)")
    parser.add_argument("--sinks", nargs="+", default=["noop", "delta"])
    parser.add_argument("--out", default=str(RESULTS / "generator.json"))
    args = parser.parse_args()

    from core.config import load_config
    from core.session import build_spark
    from features.synthetic import generate_impressions

    tmp = Path(tempfile.mkdtemp(prefix="camoe-bench-gen-"))
    cfg = load_config(overrides=[f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore",
                                 "database=bench_gen", "spark.shuffle_partitions=4"])
    spark = build_spark(cfg, app_name="bench-generator")
    variants = {"current": generate_impressions}
    if args.baseline_rev:
        variants[f"baseline@{args.baseline_rev}"] = load_generator_at(args.baseline_rev)
        start = dt.date(2026, 1, 1)
        n = min(args.rows)
        hashes = {name: content_hash(gen(spark, cfg.generator, cfg.taxonomy, start_date=start, days=args.days,
                                         rows_per_day=n // args.days)) for name, gen in variants.items()}
        print("content hashes:", hashes, flush=True)
        if len(set(hashes.values())) != 1:
            raise SystemExit(f"the generators disagree: {hashes}")
    results = []
    for gen in variants.values():
        for sink in args.sinks:
            time_generate(spark, cfg, 40_000, gen, args.days, f"warmup_{sink}", sink)   # JIT + codegen
    for rows in sorted(args.rows):
        for name, gen in variants.items():
            if name != "current" and rows > args.baseline_max_rows:
                continue
            for sink in args.sinks:
                r = dict(generator=name, **time_generate(spark, cfg, rows, gen, args.days,
                                                         f"gen_{name.split('@')[0]}", sink))
                print(json.dumps(r), flush=True)
                results.append(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(cores=os.cpu_count(), master=spark.sparkContext.master,
                                   results=results), indent=1) + "\n")
    spark.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
