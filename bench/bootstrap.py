"""Paired-bootstrap speed: seconds for one metric change with its CI (calibration.bootstrap).

    python bench/bootstrap.py [--rows 500000] [--resamples 200]

Synthetic rows (true_ctr ~ Beta(0.6, 40), CTR ~1.5%, labels drawn from it) and two scorers
(logit noise sd 1.0 and 0.8), then per metric: paired_bootstrap(metric, baseline, candidate)
wall and CPU seconds, one seed per model and, for AUC-PR, 3 seeds per model. The row-count
draws alone (one per resample, shared by both models) are timed too: they are the floor of
every metric. The 1-minute load average is recorded before and after (shared machine).
Results: bench/results/bootstrap.json / .md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's calibration package

from calibration.bootstrap import _row_counts, paired_bootstrap  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    n, b = args.rows, args.resamples
    rng = np.random.default_rng(0)
    t = rng.beta(0.6, 40, n)
    y = (rng.random(n) < t).astype(np.int8)
    logit = np.log(t) - np.log1p(-t)

    def scorer(sd: float, seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).normal(0, sd, n)
        return 1 / (1 + np.exp(-(logit + noise)))

    baseline, candidate = scorer(1.0, 1), scorer(0.8, 2)
    load_before = os.getloadavg()[0]
    rows = []
    _, wall, cpu = timed(lambda: [_row_counts(rng, n) for _ in range(b)])
    rows.append({"case": "row-count draws alone", "wall_s": wall, "cpu_s": cpu})
    cases = [("auc_pr", 1), ("auc_pr", 3), ("excess_log_loss", 1), ("true_calibration_ratio", 1),
             ("oracle_ece", 1), ("roc_auc", 1)]
    for metric, seeds in cases:
        base = baseline if seeds == 1 else [scorer(1.0, 10 + s) for s in range(seeds)]
        cand = candidate if seeds == 1 else [scorer(0.8, 20 + s) for s in range(seeds)]
        change, wall, cpu = timed(lambda metric=metric, base=base, cand=cand: paired_bootstrap(
            metric, base, cand, labels=y, true_ctr=t, resamples=b))
        rows.append({"case": f"{metric}, {seeds} seed(s) per model", "wall_s": wall, "cpu_s": cpu,
                     "relative_change": round(change.relative.estimate, 4),
                     "relative_ci": [round(change.relative.lo, 4), round(change.relative.hi, 4)]})
        print(rows[-1], flush=True)
    result = {"rows": n, "positives": int(y.sum()), "resamples": b, "cores": os.cpu_count(),
              "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0], "cases": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bootstrap.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Paired bootstrap speed: {n:,} rows ({result['positives']:,} clicks) x {b} resamples",
             "", f"{os.cpu_count()} cores, 1-minute load {load_before:.1f} before, "
             f"{result['load_1min_after']:.1f} after (shared machine: wall time moves with it; CPU "
             "time is the process's own).", "", "| case | wall s | CPU s | relative change [95% CI] |",
             "|---|---:|---:|---|"]
    for r in rows:
        ci = f"{r['relative_change']:+.4f} [{r['relative_ci'][0]:+.4f}, {r['relative_ci'][1]:+.4f}]" \
            if "relative_ci" in r else ""
        lines.append(f"| {r['case']} | {r['wall_s']} | {r['cpu_s']} | {ci} |")
    (RESULTS / "bootstrap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
