"""Seeds and confidence intervals for the experiments: each model's change vs a reference per slot,
and the paper's claims read from those changes as confirmed, refuted or unresolved.

Input: the test rows every (model, seed) scored, as one long pandas frame (model, seed,
impression_id, slot, label, pctr, and true_ctr / ceiling_ctr where the log has them). Output:
typed results (``Comparison``, ``ClaimVerdict``) that the experiments report and
``experiments.json`` are written from. Intervals are ``calibration.bootstrap.paired_bootstrap``'s:
both models scored on the same resampled rows, the seed-to-seed spread on k - 1 degrees of
freedom, and seed s of one model paired with seed s of the other when both ran the same seeds
(the same seed gives the same data order and initialisation draws; a masked variant is the same
network). Which claims an experiment's models allow: ``calibration.paper_claims``. Everything
here is numpy/pandas.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from calibration.bootstrap import MetricChange, paired_bootstrap

ALL = "all"
# metric -> which direction is better; label-free ones need true_ctr. A calibration ratio is
# better closer to 1: its change says nothing by its sign, so no claim is judged on it.
LABEL_METRICS = {"auc_pr": "higher", "squared_ce_debiased": "lower"}
TRUTH_METRICS = {"excess_log_loss": "lower", "true_calibration_ratio": "closer to 1"}
BETTER = {**LABEL_METRICS, **TRUTH_METRICS}           # metric -> which direction of change is better


# <model>/masked-expert-<k>: the model with expert k zeroed at scoring time (paper app. A.2), from
# the predictions' masked_pctr; it takes part in the masking claims only
MASKED = "/masked-expert-"


def masked_variant(model: str, expert: int) -> str:
    return f"{model}{MASKED}{expert}"


def is_masked_variant(name: str) -> bool:
    return MASKED in name


@dataclass(frozen=True)
class ScoredRows:
    """The test rows in one order; ``scores[model]`` is (seeds, n) calibrated pCTR."""

    impression_id: np.ndarray
    slot: np.ndarray
    label: np.ndarray
    true_ctr: np.ndarray | None
    ceiling_ctr: np.ndarray | None
    scores: dict[str, np.ndarray]
    seeds: dict[str, list[int]]

    @property
    def rows(self) -> int:
        return self.impression_id.size

    def select(self, segment: str) -> np.ndarray:
        return np.ones(self.rows, bool) if segment == ALL else self.slot == segment


def scored_rows(frame: pd.DataFrame) -> ScoredRows:
    """Align every (model, seed)'s scores on the same impressions (sorted by impression_id).

    ``frame``: one row per (model, seed, impression) with impression_id, slot, label, pctr and
    optionally true_ctr, ceiling_ctr, masked_pctr. Every (model, seed) must have scored exactly
    the same impressions, once each; otherwise a ValueError names the first one that differs."""
    needed = {"model", "seed", "impression_id", "slot", "label", "pctr"}
    missing = needed - set(frame.columns)
    if missing:
        raise ValueError(f"scored rows lack column(s) {sorted(missing)}")
    runs = list(frame.groupby(["model", "seed"], sort=True))
    return align_scores(runs[0][1], runs)


def align_scores(reference: pd.DataFrame, runs) -> ScoredRows:
    """``scored_rows`` one run at a time, so the (model, seed) x impression long format never
    has to exist at once (24 runs x 720k impressions did not fit Spark's 1 GiB driver result).

    reference: the impressions (impression_id, slot, label; optionally true_ctr, ceiling_ctr);
    runs: ((model, seed), frame with impression_id, pctr and optionally masked_pctr) pairs."""
    reference = reference.drop_duplicates("impression_id").sort_values("impression_id")
    ids = reference["impression_id"].to_numpy()
    scores: dict[str, list[np.ndarray]] = {}
    seeds: dict[str, list[int]] = {}
    first_key = None
    for (model, seed), rows in runs:
        first_key = first_key or (model, seed)
        if len(rows) != len(ids) or rows["impression_id"].duplicated().any():
            raise ValueError(f"{model} seed {seed} scored {len(rows)} rows, {first_key[0]} seed {first_key[1]} "
                             f"{len(ids)}: every model must score the same test rows once")
        ordered = rows.set_index("impression_id").reindex(ids)
        if ordered["pctr"].isna().any():
            absent = ordered.index[ordered["pctr"].isna()][:3].tolist()
            raise ValueError(f"{model} seed {seed} has no score for impression(s) {absent}")
        scores.setdefault(model, []).append(ordered["pctr"].to_numpy(dtype=np.float64))
        seeds.setdefault(model, []).append(int(seed))
        masked = ordered["masked_pctr"] if "masked_pctr" in ordered.columns else None
        if masked is not None and masked.notna().all() and len(masked.iloc[0]) > 0:
            by_expert = np.vstack(masked.to_numpy()).astype(np.float64)        # (n, experts)
            for k in range(by_expert.shape[1]):
                scores.setdefault(masked_variant(model, k), []).append(by_expert[:, k])
                seeds.setdefault(masked_variant(model, k), []).append(int(seed))

    def optional(column: str) -> np.ndarray | None:
        if column not in reference.columns or reference[column].isna().any():
            return None
        return reference[column].to_numpy(dtype=np.float64)

    return ScoredRows(impression_id=ids, slot=reference["slot"].to_numpy().astype(str),
                      label=reference["label"].to_numpy(dtype=np.float64), true_ctr=optional("true_ctr"),
                      ceiling_ctr=optional("ceiling_ctr"),
                      scores={m: np.vstack(s) for m, s in scores.items()}, seeds=seeds)


@dataclass(frozen=True)
class Comparison:
    """candidate vs reference on one segment (a slot or ``all``) for one metric."""

    candidate: str
    reference: str
    segment: str
    metric: str
    rows: int
    positives: int
    change: MetricChange

    def as_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "change"}
        c = self.change
        out.update(reference_value=c.baseline, candidate_value=c.candidate,
                   absolute=_interval_dict(c.absolute), relative=_interval_dict(c.relative),
                   excludes_zero=c.excludes_zero)
        return out


def _interval_dict(interval) -> dict:
    return {"estimate": interval.estimate, "lo": interval.lo, "hi": interval.hi,
            "half_width": interval.half_width, "resamples": interval.resamples,
            "confidence": interval.confidence}


def available_metrics(rows: ScoredRows, metrics: Sequence[str]) -> list[str]:
    """The metrics that can be computed on these rows (label-free ones need true_ctr)."""
    unknown = [m for m in metrics if m not in BETTER]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(BETTER)}")
    return [m for m in metrics if m in LABEL_METRICS or rows.true_ctr is not None]


def seeds_paired(rows: ScoredRows, candidate: str, reference: str) -> bool:
    """Seed s of the two is one unit when both ran the same seeds (module docstring)."""
    return rows.seeds[candidate] == rows.seeds[reference] and len(rows.seeds[candidate]) > 1


def compare(rows: ScoredRows, candidate: str, reference: str, segments: Iterable[str],
            metrics: Sequence[str], resamples: int = 200, seed: int = 0) -> list[Comparison]:
    """Paired-bootstrap changes of ``candidate`` vs ``reference`` per segment and metric.

    A segment without a positive (label metrics) gives NaN intervals, not an error."""
    for model in (candidate, reference):
        if model not in rows.scores:
            raise ValueError(f"model {model!r} has no scored rows (models: {sorted(rows.scores)})")
    paired = seeds_paired(rows, candidate, reference)
    out = []
    for segment in segments:
        sel = rows.select(segment)
        if not sel.any():
            continue
        truth = None if rows.true_ctr is None else rows.true_ctr[sel]
        for metric in available_metrics(rows, metrics):
            change = paired_bootstrap(metric, rows.scores[reference][:, sel], rows.scores[candidate][:, sel],
                                      labels=rows.label[sel], true_ctr=truth, resamples=resamples, seed=seed,
                                      paired_seeds=paired)
            out.append(Comparison(candidate, reference, segment, metric, int(sel.sum()),
                                  int(rows.label[sel].sum()), change))
    return out


# ----------------------------------------------------------------------------- the paper's claims
@dataclass(frozen=True)
class Claim:
    """One claim of the paper, as a comparison: ``candidate`` does better than ``reference``.

    paper: segment -> the paper's own % change for it, where it reports one (shown beside ours)."""

    claim: str
    source: str
    candidate: str
    reference: str
    segments: tuple[str, ...]
    metric: str = "auc_pr"
    paper: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ClaimVerdict:
    claim: Claim
    segment: str
    verdict: str                 # confirmed | refuted | unresolved
    comparison: Comparison

    def as_dict(self) -> dict:
        paper = dict(self.claim.paper).get(self.segment)
        return {"claim": self.claim.claim, "source": self.claim.source, "segment": self.segment,
                "metric": self.claim.metric, "verdict": self.verdict, "paper_change_pct": paper,
                "paired_seeds": self.comparison.change.paired_seeds,
                **{k: v for k, v in self.comparison.as_dict().items() if k not in ("segment", "metric")}}


def verdict(comparison: Comparison, better: str) -> str:
    """confirmed when the interval of the change lies wholly on the better side of 0, refuted
    when wholly on the worse side, unresolved when it covers 0 (or could not be computed).
    ``better``: "higher" or "lower" (a metric better closer to a target has no sign to read)."""
    if better not in ("higher", "lower"):
        raise ValueError(f"a claim needs a metric that is better higher or lower, not {better!r}")
    lo, hi = comparison.change.absolute.lo, comparison.change.absolute.hi
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "unresolved"
    sign = 1.0 if better == "higher" else -1.0
    lo, hi = sorted((sign * lo, sign * hi))
    if lo > 0:
        return "confirmed"
    if hi < 0:
        return "refuted"
    return "unresolved"


def judge_claims(rows: ScoredRows, claims: Sequence[Claim], resamples: int = 200,
                 seed: int = 0) -> list[ClaimVerdict]:
    """Every claim whose two models were run, per segment (claims on other models are skipped:
    ``resolve_claims`` says which and why)."""
    out = []
    for claim in claims:
        if claim.candidate not in rows.scores or claim.reference not in rows.scores:
            continue
        better = BETTER[claim.metric]
        segments = [s for s in claim.segments if s == ALL or (rows.slot == s).any()]
        for comparison in compare(rows, claim.candidate, claim.reference, segments, [claim.metric],
                                  resamples, seed):
            out.append(ClaimVerdict(claim, comparison.segment, verdict(comparison, better), comparison))
    return out
