"""Metric definitions agree with scikit-learn's on random and tied inputs."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.metrics import (ECE_SCHEMES, average_precision, bin_edges, calibration_ratio,
                                 expected_calibration_error, log_loss, reliability_bins, roc_auc,
                                 segment_metrics)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(5000) < 0.05).astype(int)
    p = np.clip(rng.random(5000) * 0.2 + y * 0.05, 0, 1)
    p_tied = np.round(p, 2)                                   # many ties
    for scores in (p, p_tied):
        assert average_precision(y, scores) == pytest.approx(sklearn_metrics.average_precision_score(y, scores))
        assert roc_auc(y, scores) == pytest.approx(sklearn_metrics.roc_auc_score(y, scores))
    assert log_loss(y, p) == pytest.approx(sklearn_metrics.log_loss(y, p), rel=1e-6)


def test_degenerate_inputs_give_nan_not_errors():
    assert np.isnan(average_precision(np.zeros(5), np.arange(5)))
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


# ----------------------------------------------------------------------------- ECE, calibration
def test_ece_by_hand_equal_width():
    y = np.array([0, 1, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    # 2 bins [0, .5], (.5, 1]: |1 - .6| + |2 - 2.2| over 6 rows
    assert expected_calibration_error(y, p, 2, "equal_width") == pytest.approx((0.4 + 0.2) / 6)
    # equal-mass with 3 bins: edges are the 2nd and 4th smallest predictions (.2, .6)
    edges = bin_edges(p, 3, "equal_mass")
    np.testing.assert_allclose(edges, [0.2, 0.6])
    assert expected_calibration_error(y, p, 3, "equal_mass") == pytest.approx(
        (abs(1 - 0.3) + abs(0 - 0.9) + abs(2 - 1.6)) / 6)
    assert calibration_ratio(y, p) == pytest.approx(2.8 / 3)


def test_equal_mass_bins_hold_equal_counts_where_equal_width_does_not():
    rng = np.random.default_rng(3)
    p = rng.beta(1, 80, 10_000)                                # CTR-like: crowded near 0
    y = rng.random(p.size) < p
    mass = [b["rows"] for b in reliability_bins(y, p, 10, "equal_mass")]
    width = [b["rows"] for b in reliability_bins(y, p, 10, "equal_width")]
    assert max(mass) - min(mass) <= 1 and len(mass) == 10
    assert width[0] > 0.95 * p.size


def test_ece_is_small_when_calibrated_and_grows_when_not():
    rng = np.random.default_rng(4)
    p = rng.beta(1, 40, 200_000)
    y = rng.random(p.size) < p
    for scheme in ECE_SCHEMES:
        calibrated = expected_calibration_error(y, p, 15, scheme)
        assert calibrated < 0.002                              # sampling noise only
        assert expected_calibration_error(y, np.clip(3 * p, 0, 1), 15, scheme) > 10 * calibrated


# ----------------------------------------------------------------------------- Spark == numpy
def test_spark_segment_metrics_equal_the_numpy_definitions(spark):
    rng = np.random.default_rng(5)
    n = 6000
    segment = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    y = (rng.random(n) < 0.08).astype(int)
    p = np.round(np.clip(rng.random(n) * 0.3 + y * 0.1, 1e-4, 1), 3)     # ties on purpose
    frame = spark.createDataFrame([(str(s), int(a), float(b)) for s, a, b in zip(segment, y, p)],
                                  "segment string, label int, score double")
    metrics, bins = segment_metrics(frame, ["segment"], "label", "score", bins=7)
    got = {r.segment: r for r in metrics.collect()}
    assert set(got) == {"a", "b", "c"}
    for name, r in got.items():
        sel = segment == name
        ys, ps = y[sel], p[sel]
        assert r.rows == sel.sum() and r.positives == ys.sum()
        assert r.ctr == pytest.approx(ys.mean()) and r.mean_pred == pytest.approx(ps.mean())
        assert r.auc_pr == pytest.approx(sklearn_metrics.average_precision_score(ys, ps))
        assert r.roc_auc == pytest.approx(sklearn_metrics.roc_auc_score(ys, ps))
        assert r.log_loss == pytest.approx(sklearn_metrics.log_loss(ys, ps), rel=1e-6)
        assert r.calibration_ratio == pytest.approx(calibration_ratio(ys, ps))
        for scheme in ECE_SCHEMES:
            assert getattr(r, f"ece_{scheme}") == pytest.approx(expected_calibration_error(ys, ps, 7, scheme))
            spark_bins = sorted((b.bin, b.rows) for b in bins.collect() if b.segment == name and b.scheme == scheme)
            assert spark_bins == [(b["bin"], b["rows"]) for b in reliability_bins(ys, ps, 7, scheme)]
