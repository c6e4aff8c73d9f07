"""The per-segment slot tables Spark computes equal the numpy metric definitions
(core/metrics.py; those are checked against scikit-learn in tests/unit/test_metrics.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.metrics import ECE_SCHEMES, excess_log_loss, reliability_bins, score_metrics, signal_fraction


def test_slot_tables_rate_each_segment_with_the_numpy_definitions(spark):
    from calibration.slot_tables import NO_POSITIVES_NOTE, expert_mask_tables, slot_tables

    rng = np.random.default_rng(6)
    n = 3000
    slot = rng.choice(["s1", "s2", "s3"], n, p=[0.6, 0.3, 0.1])
    task = np.where(slot == "s1", "audio", "video")
    t = rng.beta(1, 20, n)
    y = ((rng.random(n) < t) & (slot != "s3")).astype(int)           # s3: no clicks
    raw = np.round(np.clip(t + rng.normal(0, 0.02, n), 1e-4, 1), 3)    # ties
    cal = np.clip(raw * 0.9, 1e-4, 1)
    ceiling = np.where(rng.random(n) < 0.1, np.nan, np.clip(t * 1.1, 0, 1))   # some rows without one
    masked = np.clip(raw[:, None] * rng.uniform(0.5, 1.5, (n, 2)), 1e-4, 1)
    frame = pd.DataFrame({"slot": slot, "task": task, "label": y, "pctr_raw": raw, "pctr": cal, "true_ctr": t,
                          "ceiling_ctr": ceiling, "masked_pctr": list(masked)})
    scored = spark.createDataFrame(frame)
    metrics, bins = slot_tables(scored, 5, with_oracle=True, with_ceiling=True)
    got = {(r.level, r.slot, r.calibrated): r for r in metrics.collect()}
    bin_rows = bins.collect()
    base = pd.Series(t).groupby(slot).transform("mean").to_numpy()
    segments = {("slot", s): slot == s for s in ("s1", "s2", "s3")} | {
        ("task", k): task == k for k in ("audio", "video")} | {("all", "all"): np.ones(n, bool)}
    assert set(got) == {(*k, c) for k in segments for c in (False, True)}
    for (level, name), sel in segments.items():
        for calibrated, scores in ((False, raw), (True, cal)):
            r = got[(level, name, calibrated)]
            rated, _ = score_metrics(y[sel], scores[sel], 5)
            assert r.rows == sel.sum() and r.positives == y[sel].sum() and r.ece_bins == 5
            for m in ("auc_pr", "normalized_entropy", "ece_equal_mass", "ece_equal_width"):
                assert (getattr(r, m) is None) if np.isnan(rated[m]) else getattr(r, m) == pytest.approx(rated[m])
            assert r.mean_pctr == pytest.approx(scores[sel].mean())
            oracle, _ = score_metrics(y[sel], t[sel], 5, ("equal_mass",))
            assert (r.oracle_auc_pr is None) if np.isnan(oracle["auc_pr"]) else \
                r.oracle_auc_pr == pytest.approx(oracle["auc_pr"])
            known = sel & ~np.isnan(ceiling)
            assert r.excess_log_loss == pytest.approx(excess_log_loss(t[sel], scores[sel]), rel=1e-9)
            assert r.signal_fraction_of_oracle == pytest.approx(signal_fraction(t[sel], scores[sel], t[sel], base[sel]))
            assert r.signal_fraction_of_ceiling == pytest.approx(
                signal_fraction(t[known], scores[known], ceiling[known], base[known]), nan_ok=True)
            assert sorted((b.scheme, b.bin, b.rows) for b in bin_rows if (b.level, b.slot, b.calibrated) ==
                          (level, name, calibrated)) == sorted(
                (s, b["bin"], b["rows"]) for s in ECE_SCHEMES for b in reliability_bins(y[sel], scores[sel], 5, s))
    assert got[("slot", "s3", True)].note == NO_POSITIVES_NOTE and got[("slot", "s1", True)].note is None

    masks = {(r.level, r.slot, r.masked_expert): r for r in expert_mask_tables(scored, 2, 5).collect()}
    sel = slot == "s1"
    full, _ = score_metrics(y[sel], cal[sel], 5, ("equal_mass",))
    second, _ = score_metrics(y[sel], masked[sel, 1], 5, ("equal_mass",))
    assert masks[("slot", "s1", -1)].auc_pr == pytest.approx(full["auc_pr"])
    assert masks[("slot", "s1", 1)].auc_pr == pytest.approx(second["auc_pr"])
    assert masks[("slot", "s1", 1)].auc_pr_change_pct == pytest.approx(100 * (second["auc_pr"] / full["auc_pr"] - 1))
    assert masks[("all", "all", 0)].experts == 2 and len(masks) == 6 * 3


