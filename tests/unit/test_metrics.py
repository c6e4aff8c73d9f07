"""Metric definitions agree with scikit-learn's on random and tied inputs; weighted metrics equal
the metrics of repeated rows; label-free metrics against true_ctr; bootstrap intervals."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

from calibration.bootstrap import BootstrapInterval, bootstrap_metric, paired_bootstrap
from core.metrics import (
    ECE_SCHEMES,
    average_precision,
    bin_edges,
    calibration_ratio,
    excess_log_loss,
    expected_calibration_error,
    expected_log_loss,
    log_loss,
    normalized_entropy,
    oracle_ece,
    reliability_bins,
    roc_auc,
    score_metrics,
    signal_fraction,
    signal_gain,
    true_calibration_ratio,
    truth_summary,
    wilson_interval,
)


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
    assert np.isnan(normalized_entropy(np.zeros(5), np.full(5, 0.1)))


def test_normalized_entropy_is_one_for_the_base_rate_and_weights_repeat_rows():
    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.03).astype(int)
    assert normalized_entropy(y, np.full(y.size, y.mean())) == pytest.approx(1.0, rel=1e-9)
    p = np.clip(0.02 + 0.3 * y * rng.random(y.size), 0, 1)          # informative: below 1
    assert normalized_entropy(y, p) < 0.9
    w = rng.integers(1, 4, y.size)
    rep = np.repeat(np.arange(y.size), w)
    assert normalized_entropy(y, p, sample_weight=w) == pytest.approx(normalized_entropy(y[rep], p[rep]), rel=1e-12)


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


# ----------------------------------------------------------------------------- per segment, on executors
def test_score_metrics_and_truth_summary_are_the_metric_definitions():
    rng = np.random.default_rng(5)
    t = rng.beta(1, 30, 4000)
    t[:3] = 0.0                                                  # 0 log 0 terms
    y = (rng.random(t.size) < t + 0.05).astype(int)
    p = np.round(np.clip(t + rng.normal(0, 0.01, t.size) + 0.04 * y, 1e-4, 1), 3)     # ties on purpose
    rated, bins = score_metrics(y, p, 7)
    assert rated["rows"] == y.size and rated["positives"] == y.sum() and rated["ctr"] == pytest.approx(y.mean())
    assert rated["auc_pr"] == pytest.approx(sklearn_metrics.average_precision_score(y, p))
    assert rated["roc_auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, p))
    assert rated["log_loss"] == pytest.approx(sklearn_metrics.log_loss(y, p), rel=1e-6)
    assert rated["normalized_entropy"] == normalized_entropy(y, p)
    assert rated["mean_pred"] == pytest.approx(p.mean()) and rated["calibration_ratio"] == calibration_ratio(y, p)
    for scheme in ECE_SCHEMES:
        assert rated[f"ece_{scheme}"] == pytest.approx(expected_calibration_error(y, p, 7, scheme), rel=1e-12)
        assert [{k: v for k, v in b.items() if k != "scheme"} for b in bins if b["scheme"] == scheme] == \
            reliability_bins(y, p, 7, scheme)
    silent, _ = score_metrics(np.zeros(50), p[:50], 7)                  # no clicks: undefined, not an error
    assert all(np.isnan(silent[m]) for m in ("auc_pr", "roc_auc", "normalized_entropy", "calibration_ratio"))

    ceiling = np.clip(t * rng.uniform(0.8, 1.2, t.size), 1e-6, 1)
    base = np.full(t.size, t.mean())
    truth = truth_summary(t, p, base, ceiling)
    assert truth == {"excess_log_loss": excess_log_loss(t, p), "true_calibration_ratio": true_calibration_ratio(t, p),
                     "signal_gain": signal_gain(t, p, base),
                     "signal_fraction_of_oracle": signal_fraction(t, p, t, base),
                     "signal_fraction_of_ceiling": signal_fraction(t, p, ceiling, base)}
    assert np.isnan(truth_summary(t, p, base)["signal_fraction_of_ceiling"])


@pytest.mark.parametrize("clicked", [1.0, 0.0])
def test_a_slot_of_one_class_gets_its_documented_metrics_without_a_warning(clicked):
    """A slot whose test rows all clicked (or none did; calibration.slot_tables notes both):
    ROC-AUC and normalized entropy are NaN; AUC-PR is 1 with only clicks (precision 1 at every
    threshold) and NaN with none; the calibration ratio is sum p / clicks (the mean pCTR with
    only clicks, NaN with none); log loss, ECE (the mean |y - p|: a bin's rows share their
    label) and the debiased calibration error stay defined. No 0/0 along the way: warnings are
    errors. Breakage caught: 0 in place of NaN for AUC-PR or the calibration ratio without
    clicks (or inf), a dropped guard that divides by zero classes (ROC-AUC, normalized entropy)."""
    p = np.array([0.1, 0.2, 0.2, 0.4, 0.9])
    y = np.full(p.size, clicked)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rated, bins = score_metrics(y, p, 3)
    assert (rated["rows"], rated["positives"], rated["ctr"]) == (5, int(5 * clicked), clicked)
    assert np.isnan(rated["roc_auc"]) and np.isnan(rated["normalized_entropy"])
    if clicked:
        assert rated["auc_pr"] == 1.0 and rated["calibration_ratio"] == pytest.approx(p.mean())
    else:
        assert np.isnan(rated["auc_pr"]) and np.isnan(rated["calibration_ratio"])
    assert rated["log_loss"] == pytest.approx(sklearn_metrics.log_loss(y, p, labels=[0, 1]))
    for scheme in ECE_SCHEMES:
        assert rated[f"ece_{scheme}"] == pytest.approx(np.mean(np.abs(y - p)))
    assert np.isfinite(rated["rms_ce_debiased"]) and rated["rms_ce_debiased"] > 0
    assert all(b["sum_label"] == clicked * b["rows"] for b in bins)


# ----------------------------------------------------------------------------- sample weights
def _tied_sample(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    t = rng.beta(1, 15, n)
    y = (rng.random(n) < t).astype(int)
    p = np.clip(np.round(t + rng.normal(0, 0.02, n), 3), 1e-3, 1)           # ties on purpose
    return rng, t, y, p


@pytest.mark.parametrize("seed", [0, 1])
def test_integer_weights_equal_the_metrics_of_the_repeated_rows(seed):
    rng, t, y, p = _tied_sample(seed)
    w = rng.integers(0, 4, p.size)                                          # zeros drop rows
    rep = np.repeat(np.arange(p.size), w)
    assert average_precision(y, p, w) == pytest.approx(average_precision(y[rep], p[rep]), rel=1e-12)
    assert roc_auc(y, p, w) == pytest.approx(roc_auc(y[rep], p[rep]), rel=1e-12)
    assert log_loss(y, p, sample_weight=w) == pytest.approx(log_loss(y[rep], p[rep]), rel=1e-12)
    assert excess_log_loss(t, p, sample_weight=w) == pytest.approx(excess_log_loss(t[rep], p[rep]), rel=1e-12)
    assert calibration_ratio(y, p, w) == pytest.approx(calibration_ratio(y[rep], p[rep]), rel=1e-12)
    for scheme in ECE_SCHEMES:
        np.testing.assert_array_equal(bin_edges(p, 10, scheme, w), bin_edges(p[rep], 10, scheme))
        assert expected_calibration_error(y, p, 10, scheme, w) == pytest.approx(
            expected_calibration_error(y[rep], p[rep], 10, scheme), rel=1e-12)
        assert oracle_ece(t, p, 10, scheme, w) == pytest.approx(oracle_ece(t[rep], p[rep], 10, scheme), rel=1e-12)
        weighted = reliability_bins(y, p, 10, scheme, w)
        repeated = reliability_bins(y[rep], p[rep], 10, scheme)
        assert [(b["bin"], b["rows"], b["min_pred"], b["max_pred"]) for b in weighted] == \
            [(b["bin"], b["rows"], b["min_pred"], b["max_pred"]) for b in repeated]


def test_real_valued_weights_match_scikit_learn():
    rng, _, y, p = _tied_sample(2)
    w = rng.gamma(2.0, 1.0, p.size)
    assert average_precision(y, p, w) == pytest.approx(sklearn_metrics.average_precision_score(y, p, sample_weight=w))
    assert roc_auc(y, p, w) == pytest.approx(sklearn_metrics.roc_auc_score(y, p, sample_weight=w))
    assert log_loss(y, p, sample_weight=w) == pytest.approx(sklearn_metrics.log_loss(y, p, sample_weight=w), rel=1e-6)


# ----------------------------------------------------------------------------- label-free metrics
def _kl(t, p):
    return np.mean(t * np.log(t / p) + (1 - t) * np.log((1 - t) / (1 - p)))


def test_excess_log_loss_is_zero_for_the_oracle_and_the_kl_divergence_otherwise():
    rng = np.random.default_rng(6)
    t = rng.beta(1, 30, 20_000)
    perturbed = np.clip(t * np.exp(rng.normal(0, 0.3, t.size)), 1e-6, 0.999)
    assert excess_log_loss(t, t) == pytest.approx(0.0, abs=1e-15)
    assert excess_log_loss(t, perturbed) > 1e-4
    assert excess_log_loss(t, perturbed) == pytest.approx(_kl(t, perturbed), rel=1e-9)
    # expected log loss = entropy of the labels (the oracle's) + excess
    assert expected_log_loss(t, perturbed) == pytest.approx(expected_log_loss(t, t) + excess_log_loss(t, perturbed))
    # and it is what log loss on labels drawn from true_ctr averages to
    draws = [log_loss(rng.random(t.size) < t, perturbed) for _ in range(30)]
    assert np.mean(draws) == pytest.approx(expected_log_loss(t, perturbed), rel=0.02)
    # a true_ctr of exactly 0 or 1 contributes 0 log 0 = 0, not NaN
    assert excess_log_loss(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == pytest.approx(0.0, abs=1e-6)


def test_signal_gain_and_fraction_against_a_base_rate():
    rng = np.random.default_rng(7)
    slot = rng.integers(0, 2, 30_000)
    t = np.where(slot == 0, rng.beta(1, 60, slot.size), rng.beta(1, 10, slot.size))
    per_slot_base = np.array([t[slot == k].mean() for k in (0, 1)])[slot]
    noisy = np.clip(t * np.exp(rng.normal(0, 0.5, t.size)), 1e-6, 0.999)
    oracle_gain = signal_gain(t, t, per_slot_base)
    assert oracle_gain == pytest.approx(expected_log_loss(t, per_slot_base) - expected_log_loss(t, t))
    assert 0 < signal_gain(t, noisy, per_slot_base) < oracle_gain
    assert signal_gain(t, per_slot_base, per_slot_base) == 0.0
    # a gain difference is an expected-log-loss difference: the base rate cancels
    assert signal_gain(t, t, 0.05) - signal_gain(t, noisy, 0.05) == pytest.approx(excess_log_loss(t, noisy))
    assert signal_fraction(t, t, t, per_slot_base) == pytest.approx(1.0)
    assert signal_fraction(t, noisy, t, per_slot_base) == pytest.approx(
        signal_gain(t, noisy, per_slot_base) / oracle_gain)


def test_true_calibration_ratio_and_oracle_ece():
    t = np.array([0.01, 0.02, 0.05, 0.10, 0.20, 0.40])
    assert true_calibration_ratio(t, 2 * t) == pytest.approx(2.0)
    assert oracle_ece(t, t, 3) == pytest.approx(0.0, abs=1e-15)
    p = np.array([0.02, 0.02, 0.04, 0.10, 0.30, 0.30])
    # equal-mass, 3 bins: edges are the 2nd and 4th smallest predictions (.02, .10)
    expected = (abs(0.03 - 0.04) + abs(0.15 - 0.14) + abs(0.60 - 0.60)) / 6
    assert oracle_ece(t, p, 3, "equal_mass") == pytest.approx(expected)
    # no label noise: a calibrated scorer's oracle ECE is 0 where its label ECE is not
    rng = np.random.default_rng(8)
    q = rng.beta(1, 40, 20_000)
    y = rng.random(q.size) < q
    assert oracle_ece(q, q) == pytest.approx(0.0, abs=1e-15)
    assert expected_calibration_error(y, q) > 1e-3


def test_wilson_interval_known_values():
    lo, hi = wilson_interval([0, 5, 1, 81], [10, 10, 10, 263])
    np.testing.assert_allclose(lo, [0.0, 0.2366, 0.0179, 0.2553], atol=1e-4)
    np.testing.assert_allclose(hi, [0.2775, 0.7634, 0.4042, 0.3662], atol=1e-4)
    lo99, hi99 = wilson_interval(5, 10, confidence=0.99)
    assert lo99 < lo[1] and hi99 > hi[1]
    assert np.isnan(wilson_interval(0, 0)[0])


# ----------------------------------------------------------------------------- bootstrap
def _scorers(seed: int, n: int, base_rate_a: float = 1, base_rate_b: float = 12):
    """true_ctr, labels and two noisy scorers (logit noise sd 1.0 and 0.4: the second is better)."""
    rng = np.random.default_rng(seed)
    t = rng.beta(base_rate_a, base_rate_b, n)
    logit = np.log(t) - np.log1p(-t)
    worse = 1 / (1 + np.exp(-(logit + rng.normal(0, 1.0, n))))
    better = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.4, n))))
    return rng, t, (rng.random(n) < t).astype(int), worse, better


def test_identical_scorers_differ_by_exactly_zero():
    _, t, y, worse, _ = _scorers(9, 5000)
    change = paired_bootstrap("auc_pr", worse, worse.copy(), labels=y, resamples=50)
    assert change.absolute.estimate == 0 and change.absolute.lo == 0 and change.absolute.hi == 0
    assert not change.excludes_zero and change.absolute.resamples == 50


def test_a_clearly_better_scorer_is_resolved_and_a_label_free_metric_resolves_more():
    _, t, y, worse, better = _scorers(10, 20_000)
    auc = paired_bootstrap("auc_pr", worse, better, labels=y, resamples=100)
    assert auc.excludes_zero and auc.absolute.lo > 0
    assert paired_bootstrap(average_precision, worse, better, labels=y, resamples=100) == auc
    assert auc.absolute.estimate == pytest.approx(average_precision(y, better) - average_precision(y, worse))
    assert auc.relative.estimate == pytest.approx(auc.candidate / auc.baseline - 1)
    assert auc.absolute.lo <= auc.absolute.estimate <= auc.absolute.hi
    excess = paired_bootstrap("excess_log_loss", worse, better, true_ctr=t, resamples=100)
    assert excess.absolute.hi < 0                            # lower is better
    # no label noise: the relative interval is far narrower than AUC-PR's
    assert excess.relative.half_width < auc.relative.half_width / 3
    # paired beats unpaired: the change's interval is narrower than either model's own
    own = bootstrap_metric("auc_pr", better, labels=y, resamples=100)
    assert auc.absolute.half_width < own.half_width


@pytest.mark.parametrize("name", ["auc_pr", "roc_auc", "ece_equal_mass", "squared_ce_debiased", "oracle_ece",
                                  "excess_log_loss",
                                  "log_loss", "true_calibration_ratio", "calibration_ratio", "signal_gain"])
def test_fast_paths_equal_the_metric_definitions(name):
    """Named metrics take precomputed shortcuts; a callable gets the plain weighted definition."""
    from calibration.bootstrap_scorers import METRICS

    _, t, y, worse, better = _scorers(11, 4000)
    worse = np.round(worse, 3)                               # ties
    aligned = {"base_rate": np.full(t.size, t.mean())} if name == "signal_gain" else None
    definition = METRICS[name]
    kwargs = dict(labels=y, true_ctr=t, resamples=30, seed=3, aligned=aligned)
    fast = paired_bootstrap(name, worse, better, **kwargs)
    plain = paired_bootstrap(lambda *args, **kw: definition(*args, **kw), worse, better, **kwargs)
    for got, want in ((fast.absolute, plain.absolute), (fast.relative, plain.relative)):
        assert (got.estimate, got.lo, got.hi) == pytest.approx((want.estimate, want.lo, want.hi), rel=1e-9, abs=1e-15)


def test_seeds_are_averaged_and_their_spread_widens_the_interval():
    rng, t, y, worse, better = _scorers(12, 5000)
    logit = np.log(better) - np.log1p(-better)
    # three candidate seeds that disagree a lot (seed variance), one baseline seed
    seeds = np.stack([1 / (1 + np.exp(-(logit + rng.normal(0, sd, t.size)))) for sd in (0.1, 1.0, 2.0)])
    pooled = paired_bootstrap("excess_log_loss", worse, seeds, true_ctr=t, resamples=100)
    assert pooled.candidate == pytest.approx(np.mean([excess_log_loss(t, s) for s in seeds]))
    assert pooled.baseline == pytest.approx(excess_log_loss(t, worse))
    rows_only = paired_bootstrap("excess_log_loss", worse, seeds[:1], true_ctr=t, resamples=100)
    assert rows_only.absolute.seeds == 1 and pooled.absolute.seeds == 3
    assert pooled.absolute.half_width > 2 * rows_only.absolute.half_width
    # the seed part: the three seeds' spread on 2 degrees of freedom (t = 4.30 at 95%)
    per_seed = np.array([excess_log_loss(t, s) for s in seeds])
    assert pooled.absolute.standard_error >= np.std(per_seed, ddof=1) / np.sqrt(3)
    assert 2 <= pooled.absolute.degrees_of_freedom < 3
    with pytest.raises(ValueError, match="paired seeds need as many"):
        paired_bootstrap("excess_log_loss", worse, seeds, true_ctr=t, paired_seeds=True)
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap("excess_log_loss", worse, seeds[:, :10], true_ctr=t)
    with pytest.raises(ValueError, match="needs true_ctr"):
        paired_bootstrap("excess_log_loss", worse, better, labels=y)


def test_one_sample_interval_is_seeded_and_brackets_the_estimate():
    _, t, y, worse, _ = _scorers(13, 5000)
    first = bootstrap_metric("auc_pr", worse, labels=y, resamples=80, seed=1)
    assert isinstance(first, BootstrapInterval)
    assert first == bootstrap_metric("auc_pr", worse, labels=y, resamples=80, seed=1)
    assert first != bootstrap_metric("auc_pr", worse, labels=y, resamples=80, seed=2)
    assert first.estimate == pytest.approx(average_precision(y, worse))
    assert first.lo < first.estimate < first.hi and first.excludes_zero


def test_interval_for_the_auc_pr_change_covers_the_true_change_about_95_percent_of_the_time():
    """100 test sets of 1500 rows (~210 clicks) drawn from one population; the true change is the
    population's (AP on a large sample with labels replaced by true_ctr: expected clicks). An
    unpaired or a too-narrow interval falls outside [88, 99]; seeded, so it is deterministic."""
    rng = np.random.default_rng(14)

    def population(size):
        t = rng.beta(2, 12, size)
        logit = np.log(t) - np.log1p(-t)
        worse = 1 / (1 + np.exp(-(logit + rng.normal(0, 1.0, size))))
        better = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.7, size))))
        return t, worse, better

    t, worse, better = population(500_000)
    true_change = average_precision(t, better) - average_precision(t, worse)
    covered, widths = 0, []
    for _ in range(100):
        t, worse, better = population(1500)
        y = (rng.random(t.size) < t).astype(int)
        change = paired_bootstrap("auc_pr", worse, better, labels=y, resamples=100,
                                  seed=int(rng.integers(1 << 31))).absolute
        covered += change.lo <= true_change <= change.hi
        widths.append(change.half_width)
    assert 0 < true_change < np.mean(widths)                    # a change too small to resolve here
    assert 88 <= covered <= 99
