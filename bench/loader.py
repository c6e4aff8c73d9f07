"""Loader benchmark: Petastorm (the training data path) vs a plain pyarrow scan of the same
Delta snapshot files, rows/s as a ratio measured in one run. Target: ratio >= 0.9.

    python bench/loader.py [--rows-per-day 100000] [--days 6] [--repeats 3]

Builds its own synthetic feature table in a temporary warehouse, pins its Delta version,
then reads the files of its first ``--days - 2`` days (a training window's train days; the
benchmark keeps every row, so a training set would hold the same rows) (a) with Petastorm
(make_batch_reader -> torch batches via training.data.iterate_batches, as training does) and (b)
with ``pyarrow.parquet``
reading the same columns into numpy then torch. Results: bench/results/loader.json / .md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def pyarrow_scan(files, layout, slot_to_task, batch_size: int) -> int:
    """The same tensors and batches as the training path, from a plain pyarrow scan."""
    from training.data import _batch, _chunk_tensors

    rows = 0
    for f in files:
        table = pq.read_table(f.url.removeprefix("file:"), columns=layout.columns)
        chunk = SimpleNamespace(**{c: table.column(c).to_numpy() for c in layout.columns})
        columns = _chunk_tensors(chunk, layout)
        for start in range(0, table.num_rows, batch_size):
            rows += len(_batch([c[start:start + batch_size] for c in columns], slot_to_task))
    return rows


def petastorm_scan(files, layout, slot_to_task, batch_size: int, workers: int) -> int:
    from training.data import iterate_batches
    return sum(len(b) for b in iterate_batches(files, layout, slot_to_task, batch_size, seed=0,
                                               workers=workers, shuffle_buffer=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lake", help="reuse this folder's warehouse when it already holds the table")
    args = parser.parse_args()

    from core import tables
    from core.config import load_config
    from core.session import build_spark
    from features.pipeline import build_features
    from features.synthetic import generate_impressions
    from training.data import feature_layout, load_snapshot

    tmp = Path(args.lake) if args.lake else Path(tempfile.mkdtemp(prefix="camoe-bench-loader-"))
    cfg = load_config(overrides=[f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore",
                                 "database=bench_loader", "sampling.slots={}", "spark.shuffle_partitions=4"])
    spark = build_spark(cfg, app_name="bench-loader")
    start = dt.date(2026, 1, 1)
    end = start + dt.timedelta(days=args.days - 1)
    if not tables.table_exists(spark, cfg.table(tables.FEATURES)):
        logs = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=start, days=args.days,
                                    rows_per_day=args.rows_per_day)
        tables.replace_log_range(logs, cfg, start, end)
        build_features(spark, cfg, start, end, "bench")
    version = tables.latest_version(spark, cfg.table(tables.FEATURES))
    train_end = end - dt.timedelta(days=2)
    snap = load_snapshot(spark, cfg.table(tables.FEATURES), version, start, train_end)
    layout = feature_layout(spark, cfg, tables.read_date_range(spark, cfg.table(tables.FEATURES), "event_date",
                                                               start, train_end, version), snap.describe())
    slot_to_task = torch.tensor([cfg.taxonomy.grouping().task_index(s) for s in layout.slots])

    timings = {"petastorm": [], "pyarrow": []}
    for _ in range(args.repeats):          # interleaved so machine noise hits both alike
        t = time.perf_counter()
        n_pa = pyarrow_scan(snap.files, layout, slot_to_task, args.batch_size)
        timings["pyarrow"].append(n_pa / (time.perf_counter() - t))
        t = time.perf_counter()
        n_ps = petastorm_scan(snap.files, layout, slot_to_task, args.batch_size, args.workers)
        timings["petastorm"].append(n_ps / (time.perf_counter() - t))
        assert n_pa == n_ps == snap.rows, (n_pa, n_ps, snap.rows)
    rates = {k: statistics.median(v) for k, v in timings.items()}
    report = {"rows": snap.rows, "files": len(snap.files), "columns": len(layout.columns),
              "batch_size": args.batch_size, "petastorm_workers": args.workers, "repeats": args.repeats,
              "rows_per_second": rates, "all_runs": timings,
              "ratio_petastorm_over_pyarrow": rates["petastorm"] / rates["pyarrow"], "target": 0.9,
              "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "loader.md").write_text(
        "| reader | rows/s (median) |\n|---|---|\n"
        f"| Petastorm make_batch_reader -> torch batches | {rates['petastorm']:,.0f} |\n"
        f"| pyarrow.parquet scan -> same torch batches | {rates['pyarrow']:,.0f} |\n\n"
        f"ratio {report['ratio_petastorm_over_pyarrow']:.2f} (target >= 0.9), {snap.rows:,} rows, "
        f"{len(snap.files)} files, {len(layout.columns)} columns\n")
    print(json.dumps({k: report[k] for k in ("rows", "rows_per_second", "ratio_petastorm_over_pyarrow")}, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
