"""Temperature scaling and the down-sampling correction, on synthetic logits with known truth."""
from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.temperature import apply_temperatures, fit_temperatures
from core.metrics import average_precision, expected_calibration_error
from features.sampling import downsampling_logit_shift


def _logits_with_temperature(temperatures, n=150_000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(-4.0, 1.5, n)
    task = rng.integers(0, len(temperatures), n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z / np.asarray(temperatures)[task]))).astype(float)
    return z, y, task


def test_fit_recovers_known_temperatures():
    z, y, task = _logits_with_temperature([2.0, 0.6, 1.0])
    fitted = fit_temperatures(z, y, task, 3)
    np.testing.assert_allclose(fitted, [2.0, 0.6, 1.0], rtol=0.05)


def test_scaling_keeps_auc_pr_per_task_and_lowers_ece_of_a_miscalibrated_model():
    z, y, task = _logits_with_temperature([2.5, 0.5], seed=1)
    before = apply_temperatures(z, task, np.ones(2))
    after = apply_temperatures(z, task, fit_temperatures(z, y, task, 2))
    for t in range(2):
        sel = task == t
        assert average_precision(y[sel], after[sel]) == pytest.approx(average_precision(y[sel], before[sel]))
        for scheme in ("equal_mass", "equal_width"):
            ece_before = expected_calibration_error(y[sel], before[sel], 15, scheme)
            assert expected_calibration_error(y[sel], after[sel], 15, scheme) < 0.5 * ece_before


def test_tasks_without_both_classes_keep_temperature_one_and_bad_input_is_named():
    z, y, task = _logits_with_temperature([2.0, 1.0], n=20_000)
    y[task == 1] = 0.0
    fitted = fit_temperatures(z, y, task, 3)             # task 1: one class; task 2: no rows
    assert fitted[1] == 1.0 and fitted[2] == 1.0 and fitted[0] == pytest.approx(2.0, rel=0.1)
    z[3] = np.nan
    with pytest.raises(ValueError, match="1 non-finite logits"):
        fit_temperatures(z, y, task, 3)


def test_downsampling_correction_restores_the_traffic_click_rate():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 200, 400_000)                        # true pCTR on real traffic
    y = rng.random(p.size) < p
    keep_negative = 0.1
    kept = y | (rng.random(p.size) < keep_negative)
    # the best model of the down-sampled data predicts odds inflated by 1 / keep_negative
    sampled_logit = np.log(p / (1 - p)) - math.log(keep_negative)
    shift = downsampling_logit_shift({("stream_audio", 0): keep_negative, ("stream_audio", 1): 1.0},
                                     ("stream_audio",))["stream_audio"]
    corrected = 1 / (1 + np.exp(-(sampled_logit + shift)))
    np.testing.assert_allclose(corrected, p, rtol=1e-9)
    # and the inflated rate is what the sampled rows show
    sampled_rate = 1 / (1 + np.exp(-sampled_logit))
    assert y[kept].mean() == pytest.approx(sampled_rate[kept].mean(), rel=0.03)
    assert y.mean() == pytest.approx(corrected.mean(), rel=0.03)


