"""How often an interval of ``calibration.bootstrap`` covers the truth: a simulation in which the
true change is known, with row noise and seed noise mixed in chosen proportions.

The generating process (one case = one ``CoverageCase``):

- Impressions: x, w ~ N(0, 1) independent; the true click probability p = sigmoid(mu + x); a
  click y ~ Bernoulli(p). A test set is ``rows`` fresh impressions (row noise: which rows, which
  clicks).
- Model M (baseline A, candidate B) trained with seed s scores
  ``sigmoid(mu + (gamma_M + c_Ms) x + eta w + rho e_Msi)``: gamma_M its signal (B's is larger),
  c_Ms ~ N(0, tau^2) the seed's own effect on its quality (seed noise that survives any number of
  test rows), e_Msi ~ N(0, 1) per row and seed (scores that move row by row from seed to seed).
  A and B share ``shared`` of the variance of c and e with the same seed (the same data order),
  so pairing by seed removes that part.
- The truth: the seed-averaged population metric, E_c[metric_population(M, c)], by Gauss-Hermite
  quadrature over c on one large sample scored with labels replaced by p (AUC-PR's population
  value), or as the expectation over the label (log losses, squared calibration error).

``run_case`` draws ``trials`` test sets and seed sets and counts how often the 95% interval holds
the true change (or, for one model, the true value); ``tests/unit/test_coverage.py`` holds it
to [0.93, 0.97], ``bench/coverage.py`` writes ``bench/results/coverage.json``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from calibration.bootstrap import bootstrap_metric, paired_bootstrap
from core import metrics as m


@dataclass(frozen=True)
class CoverageCase:
    name: str
    metric: str                  # a calibration.bootstrap_scorers name
    seeds: int                   # k per model
    tau: float                   # seed effect on the signal weight (sd)
    rho: float = 0.0             # per-row, per-seed score noise (sd)
    rows: int = 2000
    base_rate: float = 0.05
    gamma_baseline: float = 0.6
    gamma_candidate: float = 0.75
    eta: float = 0.6             # weight of the irrelevant feature w
    shared: float = 0.5          # share of c and e variance the two models share per seed
    paired_seeds: bool = True
    one_model: bool = False      # the interval of the candidate's metric alone (no baseline)
    intercept: float = 0.0       # the candidate's logit offset (miscalibration), 0: calibrated at gamma = 1
    calibrated_candidate: bool = False   # the candidate scores p itself (gamma, tau, rho unused for it)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _population(metric: str, p: np.ndarray, q: np.ndarray) -> float:
    """The metric's population value on a large sample scored q whose truth is p."""
    if metric == "auc_pr":
        return m.average_precision(p, q)               # expected clicks as soft labels
    if metric == "log_loss":
        return float(m.cross_entropy_terms(p, q).mean())
    if metric == "excess_log_loss":
        return float(m.kl_terms(p, q).mean())
    if metric == "squared_ce_debiased":
        # population squared gap per equal-mass bin: the truth in place of the labels, no noise left
        index = np.searchsorted(m.bin_edges(q, 15, "equal_mass"), q, side="left")
        rows = np.bincount(index, minlength=15)
        gap = np.bincount(index, weights=p - q, minlength=15)
        return float(np.sum(np.where(rows > 0, gap * gap / np.maximum(rows, 1), 0.0)) / q.size)
    raise ValueError(f"no population value for metric {metric!r}")


class Simulation:
    """One case's generating process; ``truth`` is computed once (quadrature on a large sample)."""

    def __init__(self, case: CoverageCase, population_rows: int = 400_000, nodes: int = 12):
        self.case = case
        self.mu = float(np.log(case.base_rate) - np.log1p(-case.base_rate))
        rng = np.random.default_rng(12345)
        x, w, v = (rng.standard_normal(population_rows) for _ in range(3))
        p = _sigmoid(self.mu + x)
        noise = case.eta * w + case.rho * v          # e is a fresh draw per row: in the population, more noise
        nodes_x, weights = np.polynomial.hermite_e.hermegauss(nodes)          # E over c ~ N(0, tau^2)
        weights = weights / weights.sum()

        def expected(gamma: float, intercept: float = 0.0) -> float:
            if case.tau == 0:
                return _population(case.metric, p, _sigmoid(self.mu + intercept + gamma * x + noise))
            return float(sum(wt * _population(case.metric, p, _sigmoid(self.mu + intercept + (gamma + case.tau * c) * x
                                                                          + noise))
                             for c, wt in zip(nodes_x, weights)))

        candidate = (_population(case.metric, p, p) if case.calibrated_candidate
                     else expected(case.gamma_candidate, case.intercept))
        self.truth = candidate if case.one_model else candidate - expected(case.gamma_baseline)

    def draw(self, rng: np.random.Generator):
        """One test set and one set of seeds: (labels, true p, baseline (k, n), candidate (k, n))."""
        case, n, k = self.case, self.case.rows, self.case.seeds
        x, w = rng.standard_normal(n), rng.standard_normal(n)
        p = _sigmoid(self.mu + x)
        y = (rng.random(n) < p).astype(np.float64)
        root_shared, root_own = np.sqrt(case.shared), np.sqrt(1.0 - case.shared)
        common_c = rng.standard_normal(k)
        common_e = rng.standard_normal((k, n)) if case.rho else 0.0

        def scores(gamma: float, intercept: float = 0.0) -> np.ndarray:
            c = case.tau * (root_shared * common_c + root_own * rng.standard_normal(k))
            e = case.rho * (root_shared * common_e + root_own * rng.standard_normal((k, n))) if case.rho else 0.0
            return _sigmoid(self.mu + intercept + (gamma + c[:, None]) * x + case.eta * w + e)

        candidate = (np.tile(p, (k, 1)) if case.calibrated_candidate
                     else scores(case.gamma_candidate, case.intercept))
        return y, p, scores(case.gamma_baseline), candidate


@dataclass(frozen=True)
class CoverageResult:
    case: CoverageCase
    method: str
    trials: int
    covered: int
    truth: float
    mean_half_width: float
    seed_variance_share: float      # mean over trials of the seed part / total variance (seed-t only)

    @property
    def coverage(self) -> float:
        return self.covered / self.trials

    def as_dict(self) -> dict:
        return {**asdict(self.case), "method": self.method, "trials": self.trials, "covered": self.covered,
                "coverage": self.coverage, "truth": self.truth, "mean_half_width": self.mean_half_width,
                "seed_variance_share": self.seed_variance_share}


def run_case(case: CoverageCase, trials: int, resamples: int = 100, method: str = "seed-t", seed: int = 0,
             simulation: Simulation | None = None) -> CoverageResult:
    """``trials`` draws of a test set and seeds; how many 95% intervals (``method``) hold the truth."""
    simulation = simulation or Simulation(case)
    rng = np.random.default_rng(seed)
    covered, widths, shares = 0, [], []
    for _ in range(trials):
        y, p, baseline, candidate = simulation.draw(rng)
        kwargs = dict(labels=y, true_ctr=p, resamples=resamples, seed=int(rng.integers(1 << 31)), method=method)
        if case.one_model:
            interval = bootstrap_metric(case.metric, candidate, **kwargs)
        else:
            interval = paired_bootstrap(case.metric, baseline, candidate, paired_seeds=case.paired_seeds,
                                        **kwargs).absolute
        covered += interval.covers(simulation.truth)
        widths.append(interval.half_width)
        if method == "seed-t":
            shares.append(interval.seed_share)
    return CoverageResult(case, method, trials, covered, simulation.truth, float(np.mean(widths)),
                          float(np.mean(shares)) if shares else float("nan"))



# The cases the test and the benchmark run: row noise only, mixed, seed noise dominating (the
# shares measured per case are in bench/results/coverage.json), for k = 3 and 5 seeds, on an
# AUC-PR and a log-loss difference. The seed-dominated cases keep the seed effect small against the models' signal, so
# that a seed's metric moves about linearly with it (the t interval's normal seeds).
PROPORTIONS = {"rows": dict(tau=0.0, rho=0.0), "mixed": dict(tau=0.05, rho=0.3),
               "seeds": dict(tau=0.1, rho=0.0, gamma_baseline=0.7)}
CASES = tuple(
    CoverageCase(f"{metric} {name} k={k}", metric, k, **noise)
    for metric in ("auc_pr", "log_loss") for k in (3, 5) for name, noise in PROPORTIONS.items()
)
# Measured, not held to [0.93, 0.97] (bench/coverage.py reports them): two models whose seeds are
# independent (not paired; measured conservative, 0.98); seed effects large enough
# to bend the metric (skewed per-seed values, which a t interval on 2 degrees of freedom does not
# survive), and the debiased squared calibration error of a calibrated and a miscalibrated scorer
# (at a true value of 0 the bootstrap of a squared mean is inconsistent: it over-covers).
LIMITS = (
    CoverageCase("auc_pr mixed k=3 unpaired", "auc_pr", 3, tau=0.05, rho=0.3, shared=0.0, paired_seeds=False),
    CoverageCase("auc_pr skewed seeds k=3", "auc_pr", 3, tau=0.2, rho=0.3),
    CoverageCase("log_loss skewed seeds k=3", "log_loss", 3, tau=0.2, rho=0.3),
    CoverageCase("squared_ce_debiased calibrated k=3", "squared_ce_debiased", 3, tau=0.0, one_model=True,
                 calibrated_candidate=True),
    CoverageCase("squared_ce_debiased miscalibrated k=3", "squared_ce_debiased", 3, tau=0.1, rho=0.3,
                 one_model=True, intercept=0.3),
    CoverageCase("squared_ce_debiased change k=3", "squared_ce_debiased", 3, tau=0.1, rho=0.3, intercept=0.3),
)
