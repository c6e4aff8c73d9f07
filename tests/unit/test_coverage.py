"""The 95% intervals of calibration/bootstrap.py hold their coverage (calibration/coverage.py's
simulation: a known true change, row and seed noise mixed in three proportions, k = 3 and 5
seeds, AUC-PR and log-loss differences; 1,000 simulated test sets and seed sets per case), and
the percentile bootstrap they replaced does not where the seeds dominate. No JVM; the simulations take
minutes, so they are marked slow (make test runs them, make test-unit does not; bench/coverage.py
writes the same numbers to bench/results/coverage.json)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from calibration.coverage import CASES, CoverageCase, run_case
from calibration.student_t import student_t_quantile

TRIALS = 1000
RESAMPLES = 200                 # the experiments' default (conf evaluation.yaml bootstrap_resamples)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_95_percent_interval_covers_the_true_change_93_to_97_percent_of_the_time(case):
    result = run_case(case, TRIALS, RESAMPLES)
    assert 0.93 <= result.coverage <= 0.97, f"{case.name}: covered {result.covered} of {TRIALS}"
    if case.name.startswith(("auc_pr seeds", "log_loss seeds")):
        assert result.seed_variance_share > 0.7          # the case is what its name says
    if "rows" in case.name:
        assert result.seed_variance_share == 0.0


@pytest.mark.slow
def test_the_percentile_bootstrap_over_three_seeds_under_covers_where_the_seeds_dominate():
    """What the seed-t interval replaced: three seeds drawn with replacement, percentiles read."""
    case = next(c for c in CASES if c.name == "auc_pr seeds k=3")
    assert run_case(case, TRIALS, RESAMPLES, method="percentile").coverage < 0.90


def test_the_t_quantile_is_students():
    for df in (1, 2, 2.5, 4, 30):
        assert student_t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
        assert student_t_quantile(0.1, df) == pytest.approx(stats.t.ppf(0.1, df), rel=1e-9)
    assert student_t_quantile(0.975, float("inf")) == pytest.approx(1.959964, rel=1e-6)


@pytest.mark.slow
def test_the_degrees_of_freedom_rule_covers_95_percent_at_every_row_share():
    """The normal model exactly: estimate - truth ~ N(0, R + sigma^2 / k), R known (the rows'
    part), the seed part estimated from k values; the rule of calibration/bootstrap.py's docstring
    at row shares from 5% to 90% (Welch-Satterthwaite's covers 0.92 at k = 3, row share 0.1)."""
    from calibration.bootstrap import _Group, _seed_t_interval

    rng = np.random.default_rng(7)
    for k in (3, 5):
        for row_share in (0.05, 0.1, 0.3, 0.5, 0.7, 0.9):
            covered = 0
            for _ in range(4000):
                seed_sd = np.sqrt((1 - row_share) * k)
                units = rng.normal(0, seed_sd, k)
                common = rng.normal(0, np.sqrt(row_share))
                # replicates whose between-unit covariance is exactly the rows' part R
                reps = rng.normal(0, np.sqrt(row_share), (400, 1)) + np.zeros((400, k))
                estimate = common + units.mean()
                interval = _seed_t_interval(estimate, [_Group(1.0, units - units.mean() + estimate, reps)], 0.95)
                covered += interval.covers(0.0)
            assert 0.93 <= covered / 4000 <= 0.97, (k, row_share, covered / 4000)


def test_a_case_without_seed_noise_is_the_row_bootstrap_alone():
    case = CoverageCase("identical seeds", "log_loss", 3, tau=0.0, rho=0.0)
    result = run_case(case, 20, 50)
    assert result.seed_variance_share == 0.0 and result.trials == 20
