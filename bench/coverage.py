"""Coverage of the 95% intervals (calibration/coverage.py's simulation): every case of
``calibration.coverage.CASES`` (and the measured limits, ``LIMITS``) with the seed-t interval and
the percentile bootstrap it replaced, 1,000 trials each; writes bench/results/coverage.{json,md}.

    .venv/bin/python bench/coverage.py [--trials 1000] [--resamples 200]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.coverage import CASES, LIMITS, Simulation, run_case  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=200)      # the experiments' default
    args = parser.parse_args()
    started, load = time.time(), os.getloadavg()
    out = []
    for case in (*CASES, *LIMITS):
        simulation = Simulation(case)
        pair = {}
        for method in ("seed-t", "percentile"):
            t = time.time()
            result = run_case(case, args.trials, args.resamples, method, simulation=simulation)
            pair[method] = result
            print(f"{case.name:40s} {method:10s} coverage {result.coverage:.3f}  half-width "
                  f"{result.mean_half_width:.5f}  ({time.time() - t:.0f} s)", flush=True)
        row = pair["seed-t"].as_dict()
        row["percentile"] = {"coverage": pair["percentile"].coverage,
                             "mean_half_width": pair["percentile"].mean_half_width}
        row["held_to_bounds"] = case in CASES
        row["width_ratio_vs_percentile"] = pair["seed-t"].mean_half_width / pair["percentile"].mean_half_width
        out.append(row)
    document = {"command": "python bench/coverage.py" + (f" --trials {args.trials}" if args.trials != 1000 else "")
                               + (f" --resamples {args.resamples}" if args.resamples != 200 else ""),
                "trials": args.trials, "resamples": args.resamples, "confidence": 0.95,
                "load_average_at_start": load, "seconds": round(time.time() - started, 1), "cases": out}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coverage.json").write_text(json.dumps(document, indent=1))
    lines = [f"# Coverage of the 95% intervals ({args.trials} simulated test sets and seed sets per case)", "",
             f"`{document['command']}`; {args.resamples} row resamples per interval; load average at start "
             f"{load[0]:.2f}. Seed share: the seed part's share of the interval's variance (mean over trials).", "",
             "| case | held to [0.93, 0.97] | seed share | seed-t coverage | percentile coverage "
             "| seed-t half-width | percentile half-width |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in out:
        lines.append(f"| {r['name']} | {'yes' if r['held_to_bounds'] else 'no'} | {r['seed_variance_share']:.2f} "
                     f"| {r['coverage']:.3f} | "
                     f"{r['percentile']['coverage']:.3f} | {r['mean_half_width']:.5f} | "
                     f"{r['percentile']['mean_half_width']:.5f} |")
    (RESULTS / "coverage.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
