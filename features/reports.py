"""SQL the platform's users run against its tables (printed by jobs, shown in the README)."""
from __future__ import annotations

from collections.abc import Sequence

from core import tables
from core.config import Config


def latest_run_sql(cfg: Config, job: str) -> str:
    return (f"(SELECT run_id FROM {cfg.table(tables.RUNS)} WHERE job = '{job}' "
            f"AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1)")


def slot_summary_sql(cfg: Config, build_run_id: str | None = None) -> str:
    """Per slot: rows, positives, CTR as stored, CTR re-weighted for down-sampling, rates."""
    run = f"'{build_run_id}'" if build_run_id else latest_run_sql(cfg, "build_features")
    return f"""WITH f AS (
  SELECT * FROM {cfg.table(tables.FEATURES)} WHERE build_run_id = {run}
), r AS (
  SELECT slot, MAX(CASE WHEN label = 0 THEN rate END) AS negative_rate,
         MAX(CASE WHEN label = 1 THEN rate END) AS positive_rate
  FROM {cfg.table(tables.SAMPLING_RATES)} WHERE run_id = {run} GROUP BY slot
)
SELECT f.slot, FIRST(f.modality) AS modality, COUNT(*) AS rows, SUM(f.label) AS positives,
       ROUND(AVG(f.label), 5) AS ctr_stored,
       ROUND(SUM(f.label * f.sample_weight) / SUM(f.sample_weight), 5) AS ctr_reweighted,
       r.negative_rate, r.positive_rate
FROM f JOIN r ON f.slot = r.slot
GROUP BY f.slot, r.negative_rate, r.positive_rate
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
