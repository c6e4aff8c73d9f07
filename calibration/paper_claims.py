"""The paper's claims, stated by the part each model plays (conf ``experiments.claims.roles``),
resolved into ``calibration.power.Claim``s for the models an experiment ran, with the reason
for each claim it cannot judge. The paper's own numbers (Table 7) are shown beside ours.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from calibration.power import ALL, MASKED, Claim, ScoredRows, is_masked_variant, masked_variant


@dataclass(frozen=True)
class RoleClaim:
    """A claim stated by roles (``core.config_evaluation.CLAIM_ROLES``); segments: ``main`` (all
    and the main slots), ``video`` (the video modality's slots) or ``all+video``."""

    claim: str
    source: str
    candidate: str
    reference: str
    segments: str
    metric: str = "auc_pr"


PAPER_CLAIMS = (
    RoleClaim("CAMoE beats the production baseline", "Table 2", "camoe", "baseline", "main"),
    RoleClaim("{tasks} beat one task", "Table 2", "camoe", "one_task", "main"),
    RoleClaim("{tasks} beat one task per slot", "Table 2", "camoe", "per_slot_tasks", "main"),
    RoleClaim("{tasks} beat tasks by content", "Table 3", "camoe", "content_tasks", "main"),
    RoleClaim("adaptive loss masking helps the {video} slots", "Table 4", "camoe", "no_alm", "video"),
    RoleClaim("adaptive loss masking improves calibration", "Table 4", "camoe", "no_alm", "all+video",
              "squared_ce_debiased"),
    RoleClaim("DCN-v2 cross experts beat MLP experts (MMoE)", "Table 5", "camoe", "mlp_experts", "main"),
)
# Paper app. A.2, Table 7: % change of AUC-PR with expert 1 / expert 2 masked at inference, per
# video slot (the paper's slot names, which the default taxonomy shares)
PAPER_TABLE_7 = {"stream_video": (6.6, 6.5), "podcast_video": (1.6, -3.0), "embedded_music": (68.0, 122.0)}


@dataclass(frozen=True)
class NotJudged:
    claim: str
    source: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _task_phrase(model_settings, taxonomy) -> str:
    grouping = taxonomy.grouping(model_settings.grouping)
    return f"{grouping.num_tasks} tasks ({'/'.join(grouping.tasks)})"


def resolve_claims(rows: ScoredRows, settings, taxonomy, models) -> tuple[list[Claim], list[NotJudged]]:
    """The paper's claims for this experiment's models: ``settings`` (core ClaimSettings) maps
    roles to models; ``models``: conf model name -> ModelSettings. Returns the claims whose
    models ran, and the others with the reason. The expert-masking claims (``masking_claims``)
    come with them when the camoe model's masked scores were recorded."""
    roles = dict(settings.roles)
    video = settings.video_modality
    video_slots = tuple(s for s in taxonomy.slots_of_modality(video) if (rows.slot == s).any()) if video else ()
    main = (ALL, *[s for s in settings.main_slots if (rows.slot == s).any()])
    claims, skipped = [], []
    camoe = roles.get("camoe")
    tasks = _task_phrase(models[camoe], taxonomy) if camoe in models else "its tasks"
    for spec in PAPER_CLAIMS:
        text = spec.claim.format(tasks=tasks, video=video or "video")
        missing = [r for r in (spec.candidate, spec.reference) if r not in roles]
        if missing:
            skipped.append(NotJudged(text, spec.source, "no model plays " + " or ".join(repr(r) for r in missing)
                                     + " (experiments.claims.roles)"))
            continue
        candidate, reference = roles[spec.candidate], roles[spec.reference]
        absent = [m for m in (candidate, reference) if m not in rows.scores]
        if absent:
            skipped.append(NotJudged(text, spec.source, f"{' and '.join(absent)} did not run in this experiment"))
            continue
        if spec.segments != "main" and not video_slots:
            skipped.append(NotJudged(text, spec.source, "no video modality among the scored slots "
                                                        "(experiments.claims.video_modality)"))
            continue
        segments = {"main": main, "video": video_slots, "all+video": (ALL, *video_slots)}[spec.segments]
        claims.append(Claim(text, spec.source, candidate, reference, segments, spec.metric))
    if camoe in rows.scores:
        masking = masking_claims(rows, camoe, video_slots)
        if not masking:
            reason = ("no video modality among the scored slots (experiments.claims.video_modality)" if not video_slots
                      else f"{camoe}'s masked-expert scores were not recorded (one expert, or not the target model)")
            skipped.append(NotJudged("masking one expert at inference raises video AUC-PR", "App. A.2, Table 7",
                                     reason))
        claims += masking
    return claims, skipped


def masking_claims(rows: ScoredRows, model: str, video_slots: Sequence[str]) -> list[Claim]:
    """Paper app. A.2 as the paper states it: zeroing one expert of ``model`` at inference raises
    AUC-PR on the video slots (its Table 7). One claim per expert whose masked scores were
    recorded, judged per video slot, the paper's number beside ours."""
    if not video_slots:
        return []
    experts = sorted(int(name.rsplit(MASKED, 1)[1]) for name in rows.scores
                     if is_masked_variant(name) and name.startswith(model + MASKED))
    return [Claim(f"masking expert {k + 1} at inference raises video AUC-PR", "App. A.2, Table 7",
                  masked_variant(model, k), model, tuple(video_slots),
                  paper=tuple((slot, PAPER_TABLE_7[slot][k]) for slot in video_slots
                              if slot in PAPER_TABLE_7 and k < len(PAPER_TABLE_7[slot])))
            for k in experts]


def label_free(claims: Sequence[Claim]) -> list[Claim]:
    """Each AUC-PR claim again on excess log loss against true_ctr (lower is better): no label
    noise, so it resolves differences AUC-PR cannot; judged only where the log has true_ctr."""
    return [replace(c, metric="excess_log_loss", paper=()) for c in claims if c.metric == "auc_pr"]
