"""Reliability diagrams carry each bin's count and a Wilson interval (pure pandas + matplotlib, no Spark)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from calibration.plots import bin_intervals, reliability_diagrams
from core.metrics import reliability_bins, wilson_interval


def _calibration_bins(seed: int = 0) -> pd.DataFrame:
    """calibration_bins-shaped rows for two slots, before (over-predicting) and after temperature."""
    rng = np.random.default_rng(seed)
    rows = []
    for slot, n in (("stream_audio", 50_000), ("podcast_video", 800)):      # the second: a handful of clicks per bin
        t = rng.beta(1, 40, n)
        y = rng.random(n) < t
        for calibrated, p in ((False, np.clip(1.5 * t, 0, 1)), (True, t)):
            for b in reliability_bins(y, p, 15, "equal_mass"):
                rows.append(dict(level="slot", slot=slot, calibrated=calibrated, scheme="equal_mass", bin=b["bin"],
                                 rows=b["rows"], sum_pred=b["sum_pred"], sum_label=b["sum_label"],
                                 mean_pctr=b["sum_pred"] / b["rows"], observed_ctr=b["sum_label"] / b["rows"]))
    return pd.DataFrame(rows)


def test_bin_intervals_are_wilson_intervals_around_the_observed_rate():
    frame = _calibration_bins()
    got = bin_intervals(frame)
    lo, hi = wilson_interval(frame["sum_label"], frame["rows"])
    np.testing.assert_allclose(got["lo"], lo)
    np.testing.assert_allclose(got["hi"], hi)
    assert ((got["lo"] <= frame["observed_ctr"]) & (frame["observed_ctr"] <= got["hi"])).all()
    # no click / every row clicked: the rate is an end of the interval, never outside it by
    # rounding (a real log's empty bin made the reliability diagram's error bars negative)
    trials = np.arange(1, 5000, dtype=float)
    for clicks in (np.zeros_like(trials), trials):
        lo, hi = wilson_interval(clicks, trials)
        assert (lo <= clicks / trials).all() and (clicks / trials <= hi).all()
    # without sum_label (older calibration_bins rows) clicks come from observed_ctr x rows
    again = bin_intervals(frame.drop(columns=["sum_label"]))
    np.testing.assert_allclose(again["hi"], got["hi"])
    np.testing.assert_allclose(again["clicks"], frame["sum_label"])
    # small bins: wide intervals (the podcast_video zig-zag is noise)
    small = got[frame["slot"] == "podcast_video"]
    large = got[frame["slot"] == "stream_audio"]
    assert (small["hi"] - small["lo"]).median() > 5 * (large["hi"] - large["lo"]).median()


def test_reliability_diagrams_keep_their_call_signature(tmp_path):
    frame = _calibration_bins()
    out = reliability_diagrams(frame, tmp_path / "reliability.png")
    assert out.stat().st_size > 1000
    assert reliability_diagrams(frame.drop(columns=["sum_label"]), tmp_path / "r2.png", "equal_mass").exists()
