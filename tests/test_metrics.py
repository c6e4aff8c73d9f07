"""Metric definitions agree with scikit-learn's on random and tied inputs."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.metrics import average_precision, log_loss, roc_auc

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
