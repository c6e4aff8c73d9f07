"""Seeds and confidence intervals for the experiments: each model's change vs a reference per slot,
and the paper's claims read from those changes as confirmed, refuted or unresolved.

Input: the test rows every (model, seed) scored, as one long pandas frame (model, seed,
impression_id, slot, label, pctr, and true_ctr / ceiling_ctr where the log has them). Output:
typed results (``Comparison``, ``ClaimVerdict``) that the experiments report and
``experiments.json`` are written from. Intervals are paired bootstraps over test impressions and
training seeds (``calibration.bootstrap.paired_bootstrap``): both models are scored on the same
resampled rows, and each model's seeds are resampled too. Everything here is numpy/pandas.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from calibration.bootstrap import MetricChange, paired_bootstrap

ALL = "all"
# metric -> which direction is better; label-free ones need true_ctr
LABEL_METRICS = {"auc_pr": "higher", "ece_equal_mass": "lower"}
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


def compare(rows: ScoredRows, candidate: str, reference: str, segments: Iterable[str],
            metrics: Sequence[str], resamples: int = 200, seed: int = 0) -> list[Comparison]:
    """Paired-bootstrap changes of ``candidate`` vs ``reference`` per segment and metric.

    A segment without a positive (label metrics) gives NaN intervals, not an error."""
    for model in (candidate, reference):
        if model not in rows.scores:
            raise ValueError(f"model {model!r} has no scored rows (models: {sorted(rows.scores)})")
    out = []
    for segment in segments:
        sel = rows.select(segment)
        if not sel.any():
            continue
        truth = None if rows.true_ctr is None else rows.true_ctr[sel]
        for metric in available_metrics(rows, metrics):
            change = paired_bootstrap(metric, rows.scores[reference][:, sel], rows.scores[candidate][:, sel],
                                      labels=rows.label[sel], true_ctr=truth, resamples=resamples, seed=seed)
            out.append(Comparison(candidate, reference, segment, metric, int(sel.sum()),
                                  int(rows.label[sel].sum()), change))
    return out


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, as a comparison: ``candidate`` does better than ``reference``."""

    claim: str
    source: str
    candidate: str
    reference: str
    segments: tuple[str, ...]
    metric: str = "auc_pr"


VIDEO = ("stream_video", "embedded_music", "podcast_video")
MAIN = (ALL, "stream_audio", "stream_video")
CLAIMS = (
    Claim("CAMoE (t=2) beats the production baseline Wide&Deep", "Table 2", "camoe", "wide_deep", MAIN),
    Claim("two tasks (audio/video) beat one task", "Table 3", "camoe", "camoe_t1", MAIN),
    Claim("two tasks beat one task per slot (t=7)", "Table 3", "camoe", "camoe_t7", MAIN),
    Claim("grouping by modality beats grouping by content", "Table 3", "camoe", "camoe_music_podcast", MAIN),
    Claim("adaptive loss masking helps the video slots", "Table 4", "camoe", "camoe_no_alm", VIDEO),
    Claim("adaptive loss masking improves calibration", "Table 4", "camoe", "camoe_no_alm", (ALL, *VIDEO),
          "ece_equal_mass"),
    Claim("DCN-v2 cross experts beat MLP experts (MMoE)", "Table 5", "camoe", "mmoe", MAIN),
)


def masking_claims(rows: ScoredRows, model: str = "camoe") -> list[Claim]:
    """Paper app. A.2, as we read it: every expert of ``model`` carries signal, so zeroing it at
    scoring time lowers AUC-PR. One claim per expert whose masked scores were recorded."""
    experts = sorted(int(name.rsplit(MASKED, 1)[1]) for name in rows.scores
                     if is_masked_variant(name) and name.startswith(model + MASKED))
    return [Claim(f"expert {k} carries signal: zeroing it at scoring time lowers AUC-PR", "App. A.2", model,
                  masked_variant(model, k), MAIN) for k in experts]


def label_free(claims: Sequence[Claim]) -> list[Claim]:
    """Each AUC-PR claim again on excess log loss against true_ctr (lower is better): no label
    noise, so it resolves differences AUC-PR cannot; judged only where the log has true_ctr."""
    return [replace(c, metric="excess_log_loss") for c in claims if c.metric == "auc_pr"]


@dataclass(frozen=True)
class ClaimVerdict:
    claim: Claim
    segment: str
    verdict: str                 # confirmed | refuted | unresolved
    comparison: Comparison

    def as_dict(self) -> dict:
        return {"claim": self.claim.claim, "source": self.claim.source, "segment": self.segment,
                "metric": self.claim.metric, "verdict": self.verdict,
                **{k: v for k, v in self.comparison.as_dict().items() if k not in ("segment", "metric")}}


def verdict(comparison: Comparison, better: str) -> str:
    """confirmed when the interval of the change lies wholly on the better side of 0, refuted
    when wholly on the worse side, unresolved when it covers 0 (or could not be computed)."""
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


def judge_claims(rows: ScoredRows, claims: Sequence[Claim] = CLAIMS, resamples: int = 200,
                 seed: int = 0) -> list[ClaimVerdict]:
    """Every claim whose two models were run, per segment. Claims on other models are skipped."""
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
