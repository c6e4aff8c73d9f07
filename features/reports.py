"""SQL the platform's users run against its tables (printed by jobs, shown in the README)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from core import tables
from core.config import Config


def latest_run_sql(cfg: Config, job: str) -> str:
    return (f"(SELECT run_id FROM {cfg.table(tables.RUNS)} WHERE job = '{job}' "
            f"AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1)")


def slot_summary_sql(cfg: Config, start: dt.date | None = None, end: dt.date | None = None) -> str:
    """Per slot of the features table's days in [start, end] (None: no bound): rows, clicks,
    CTR and days. The daily store holds every accepted row (nothing down-sampled), so the CTR
    is the log's; the down-sampling of a training set is its own (``sampling_rates`` by set_id)."""
    bounds = [f"event_date >= DATE'{start.isoformat()}'" if start else "",
              f"event_date <= DATE'{end.isoformat()}'" if end else ""]
    where = " AND ".join(b for b in bounds if b)
    return f"""SELECT slot, FIRST(modality) AS modality, COUNT(*) AS rows, SUM(label) AS clicks,
       ROUND(AVG(label), 5) AS ctr, COUNT(DISTINCT event_date) AS days,
       MIN(event_date) AS first_day, MAX(event_date) AS last_day
FROM {cfg.table(tables.FEATURES)}{f"{chr(10)}WHERE {where}" if where else ""}
GROUP BY slot
ORDER BY rows DESC"""


# (column of slot_metrics, rounding, name in the printed table): shown only where the table has it
# (the oracle and ceiling columns exist only for logs that carry true_ctr / ceiling_ctr)
REFERENCE_COLUMNS = (("auc_pr_oracle_fraction", 3, "auc_pr_of_oracle"),
                     ("auc_pr_ceiling_fraction", 3, "auc_pr_of_ceiling"),
                     ("signal_fraction_of_ceiling", 3, "signal_of_ceiling"),
                     ("true_calibration_ratio", 3, "calib_vs_true"))


def slot_metrics_sql(cfg: Config, run_id: str, columns: Sequence[str] | None = None) -> str:
    """The per-slot evaluation table of one run: metrics after temperature, ECE before/after.

    ``columns``: those of the slot_metrics table (None: assume every optional one exists)."""
    m = cfg.table(tables.SLOT_METRICS)
    references = "".join(f"ROUND(a.{column}, {digits}) AS {alias}, " for column, digits, alias in REFERENCE_COLUMNS
                         if columns is None or column in columns)
    note = ", a.note" if columns is None or "note" in columns else ""
    # normalized entropy: log loss over the entropy of the segment's CTR (tables before it: absent)
    entropy = "ROUND(a.normalized_entropy, 4) AS ne, " if columns is None or "normalized_entropy" in columns else ""
    return f"""SELECT a.level, a.slot, a.rows, a.positives, ROUND(a.auc_pr, 4) AS auc_pr,
       {references}ROUND(a.roc_auc, 4) AS roc_auc, {entropy}
       ROUND(b.ece_equal_mass, 5) AS ece_before, ROUND(a.ece_equal_mass, 5) AS ece_after,
       ROUND(a.ece_equal_width, 5) AS ece_width_after, ROUND(a.calibration_ratio, 3) AS calib_ratio,
       ROUND(a.auc_pr_change_pct, 2) AS auc_pr_change_pct{note}
FROM {m} a JOIN {m} b ON a.run_id = b.run_id AND a.level = b.level AND a.slot = b.slot
WHERE a.run_id = '{run_id}' AND a.calibrated AND NOT b.calibrated
ORDER BY CASE a.level WHEN 'slot' THEN 0 WHEN 'task' THEN 1 ELSE 2 END, a.rows DESC"""
