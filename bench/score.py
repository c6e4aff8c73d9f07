"""Batch-scoring benchmark: rows/s of the Spark inference path (jobs/score.py) on local[*].

    python bench/score.py [--rows-per-day 100000] [--days 6] [--repeats 2]

Builds a synthetic feature table in a temporary warehouse, trains CAMoE for one epoch (local
backend), then times, over every row of the table:
  (a) scan only: the same columns read by Spark and discarded (the floor);
  (b) score: training.table_scoring.score_table, the path jobs/score.py and the evaluation use (the
      Python tasks read the snapshot's Parquet files with pyarrow, score them and hand back only
      the keep and score columns through mapInArrow) into Spark's noop sink;
  (c) score + write: as jobs/score.py does, into a Delta predictions table;
  (d) score via Spark's Arrow: training.inference.score_dataframe, the rows read by Spark and
      converted to Arrow for the Python worker (the previous path, still the fallback);
  (e) no-op mapInArrow: (d)'s input (keep columns + packed model inputs) through a Python
      function that returns the keep columns: Spark's Arrow round trip alone, the ceiling of
      (d);
  (f) forward only: the scorer (model + corrections) on the same rows already in numpy, one
      thread, in this process, times the cores: the model's compute alone, without Spark, the
      ceiling of (b) (which adds pyarrow's read of the files).
score_over_scan = median score rows/s / median scan rows/s (the design's bar: >= 0.5). Each
job also pays fixed costs (planning, the file list, the model broadcast, task start-up) that
weigh on a table this small, so (a) and (b) are also timed on the first day alone: the marginal
rows/s between the two sizes (fixed costs cancel) and their ratio, marginal_score_over_scan,
are what a large table would see. The 1-minute load average is recorded before and after: on a shared
machine the ratio moves with it.
Results: bench/results/score.json / .md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from calibration.slot_tables import prediction_rows
    from core import tables
    from core.config import load_config
    from core.session import build_spark
    from features.pipeline import build_features
    from features.synthetic import generate_impressions
    from training.inference import Scorer, _settle_worker, model_inputs, score_dataframe
    from training.runner import train
    from training.table_scoring import RowSelection, score_table

    tmp = Path(tempfile.mkdtemp(prefix="camoe-bench-score-"))
    cfg = load_config(overrides=[f"storage.warehouse_dir={tmp}/warehouse", f"storage.metastore_dir={tmp}/metastore",
                                 f"storage.artifacts_dir={tmp}/artifacts", "database=bench_score",
                                 "spark.shuffle_partitions=4"])
    spark = build_spark(cfg, app_name="bench-score")
    start = dt.date(2026, 1, 1)
    end = start + dt.timedelta(days=args.days - 1)
    logs = generate_impressions(spark, cfg.generator, cfg.taxonomy, start_date=start, days=args.days,
                                rows_per_day=args.rows_per_day)
    tables.replace_log_range(logs, cfg, start, end)
    build_features(spark, cfg, start, end, "bench")
    _, trained, artifact = train(spark, cfg, "bench-score", backend="local", num_proc=1, epochs=1)
    features = tables.read_table(spark, cfg.table(tables.FEATURES), trained.features_version)
    rows = features.count()
    from training.artifact import load_artifact
    model, trained = load_artifact(artifact)
    shift = {s: 0.0 for s in trained.layout.slots}
    temperatures = {t: 1.0 for t in trained.tasks}
    needed = [*trained.input_columns, "impression_id", "event_date", "slot"]

    def scan():
        features.select(*needed).write.format("noop").mode("overwrite").save()

    keep = ["impression_id", "event_date", "slot"]

    def scored(selection: RowSelection | None = None):
        selection = RowSelection() if selection is None else selection
        table = tables.table_files(spark, cfg.table(tables.FEATURES), trained.features_version)
        return score_table(spark, table, artifact, shift, temperatures, keep, selection)

    def score_only():
        scored().write.format("noop").mode("overwrite").save()

    first_day = RowSelection(start=start, end=start)
    first_day_rows = first_day.where(features).count()

    def scan_first_day():
        first_day.where(features).select(*needed).write.format("noop").mode("overwrite").save()

    def score_first_day():
        scored(first_day).write.format("noop").mode("overwrite").save()

    def score_arrow():
        score_dataframe(features, artifact, shift, temperatures, keep).write.format("noop").mode("overwrite").save()

    def noop_arrow():
        inputs = model_inputs(features, trained.layout, ["impression_id", "event_date", "slot"])
        inputs.mapInArrow(_passthrough, inputs.select("impression_id", "event_date", "slot").schema) \
            .write.format("noop").mode("overwrite").save()

    def _passthrough(batches):
        import pyarrow as pa

        _settle_worker()                  # the scorer's worker settings, so only the round trip differs
        for batch in batches:
            yield pa.RecordBatch.from_arrays(batch.columns[:3], names=batch.schema.names[:3])

    local = features.select(*needed).toPandas()
    scorer = Scorer.build(model, trained, [0.0] * len(trained.layout.slots), [1.0] * len(trained.tasks))
    slot_ids = local["slot_id"].to_numpy()

    def forward_only():
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)          # as in a Spark Python worker (training.inference._model)
        try:
            scorer.score(slot_ids, lambda c, dtype: local[c].to_numpy(dtype), len(local))
        finally:
            torch.set_num_threads(threads)

    def score_and_write():
        tables.replace_run_rows(prediction_rows(scored(), "bench", "camoe", "bench-score", 0),
                                cfg.table(tables.PREDICTIONS), "bench")

    load_before = os.getloadavg()[0]
    timings = {"scan": [], "noop_arrow": [], "score": [], "score_arrow": [], "score_and_write": [],
               "forward_only": []}
    seconds = {"scan": [], "score": [], "scan_first_day": [], "score_first_day": []}
    for _ in range(args.repeats):          # interleaved so machine noise hits all alike
        for name, fn in (("scan", scan), ("noop_arrow", noop_arrow), ("score", score_only),
                         ("score_arrow", score_arrow), ("score_and_write", score_and_write),
                         ("forward_only", forward_only), ("scan_first_day", scan_first_day),
                         ("score_first_day", score_first_day)):
            t = time.perf_counter()
            fn()
            if name in seconds:
                seconds[name].append(time.perf_counter() - t)
            if name not in timings:
                continue
            # forward_only runs on one core: times the cores, the rate if every core ran it
            per = os.cpu_count() if name == "forward_only" else 1
            timings[name].append(per * rows / (time.perf_counter() - t))
    rates = {k: statistics.median(v) for k, v in timings.items()}
    median_s = {k: statistics.median(v) for k, v in seconds.items()}
    marginal = {p: (rows - first_day_rows) / (median_s[p] - median_s[f"{p}_first_day"]) for p in ("scan", "score")}
    report = {"rows": rows, "cores": os.cpu_count(), "master": cfg.spark.master, "repeats": args.repeats,
              "model": "camoe", "rows_per_second": rates, "all_runs": timings,
              "score_over_scan": rates["score"] / rates["scan"],
              "score_arrow_over_scan": rates["score_arrow"] / rates["scan"],
              "noop_arrow_over_scan": rates["noop_arrow"] / rates["scan"],
              "forward_only_over_scan": rates["forward_only"] / rates["scan"],
              "first_day_rows": first_day_rows, "seconds": seconds, "marginal_rows_per_second": marginal,
              "marginal_score_over_scan": marginal["score"] / marginal["scan"],
              "forward_only_over_marginal_scan": rates["forward_only"] / marginal["scan"],
              "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0],
              "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "score.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "score.md").write_text(
        "| path | rows/s (median) |\n|---|---|\n"
        f"| Spark scan of the model's columns (floor) | {rates['scan']:,.0f} |\n"
        f"| score_table (Python tasks read the Delta files, CAMoE; jobs/score.py) -> noop | {rates['score']:,.0f} |\n"
        f"| score_dataframe (Spark's rows as Arrow into mapInArrow, CAMoE; the fallback) -> noop | "
        f"{rates['score_arrow']:,.0f} |\n"
        f"| no-op mapInArrow over score_dataframe's input (its ceiling) | {rates['noop_arrow']:,.0f} |\n"
        f"| score + write Delta predictions (jobs/score.py) | {rates['score_and_write']:,.0f} |\n"
        f"| forward only: the scorer on in-memory rows, 1 thread x {os.cpu_count()} cores, no Spark | "
        f"{rates['forward_only']:,.0f} |\n\n"
        f"score / scan = {report['score_over_scan']:.2f}, score_dataframe / scan = "
        f"{report['score_arrow_over_scan']:.2f}, no-op mapInArrow / scan = "
        f"{report['noop_arrow_over_scan']:.2f}, forward only / scan = {report['forward_only_over_scan']:.2f}; "
        f"{rows:,} rows, {cfg.spark.master} on "
        f"{os.cpu_count()} cores, 1-min load {load_before:.1f} before, {report['load_1min_after']:.1f} after\n\n"
        f"Marginal rows/s between the first day ({first_day_rows:,} rows) and all {rows:,} rows (fixed costs "
        f"cancel): scan {marginal['scan']:,.0f}, score_table {marginal['score']:,.0f}, ratio "
        f"{report['marginal_score_over_scan']:.2f}; forward only / marginal scan = "
        f"{report['forward_only_over_marginal_scan']:.2f}\n")
    print(json.dumps({k: report[k] for k in ("rows", "rows_per_second", "score_over_scan", "score_arrow_over_scan",
                                             "noop_arrow_over_scan", "marginal_rows_per_second",
                                             "marginal_score_over_scan", "forward_only_over_marginal_scan",
                                             "forward_only_over_scan", "load_1min_before",
                                             "load_1min_after")}, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
