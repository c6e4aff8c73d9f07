"""The evaluation sections of the configuration (conf/evaluation.yaml: evaluation, experiments,
auction): read by calibration/ and the experiment and auction jobs."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from core.config_models import TRAINING_BACKENDS, ModelSettings, model_name
from core.slots import Taxonomy
from core.validation import Section, int_list, positive, rate_list


@dataclass(frozen=True)
class EvaluationSettings:
    ece_bins: int
    baseline_model: str
    temperature_min: float
    temperature_max: float
    plots: bool


# The parts models play in the paper's claims (calibration/power.py states each claim by them).
CLAIM_ROLES = {
    "camoe": "the CAMoE network the claims are about (its own tasks, ALM, DCN-v2 experts)",
    "baseline": "the production baseline (the paper's Wide&Deep)",
    "one_task": "the same network with one task (t=1)",
    "per_slot_tasks": "the same network with one task per slot",
    "content_tasks": "the same network with tasks by content instead of modality",
    "no_alm": "the same network without adaptive loss masking",
    "mlp_experts": "the same network with MLP experts instead of DCN-v2 cross experts (MMoE)",
}


@dataclass(frozen=True)
class ClaimSettings:
    """experiments.claims: which model plays which role, and which slots the claims are read on."""

    roles: Mapping[str, str]            # role (CLAIM_ROLES) -> model; a role left out: its claims are not judged
    main_slots: tuple[str, ...]         # the slots every comparison is judged on, beside all
    video_modality: str | None          # the modality the ALM and expert-masking claims are about


@dataclass(frozen=True)
class ExperimentSettings:
    models: tuple[str, ...]
    baseline: str
    backend: str
    num_proc: int
    epochs: int | None
    seeds: tuple[int, ...]              # training seeds: every model is trained once per seed
    bootstrap_resamples: int            # paired-bootstrap resamples per interval
    # --sampling-ablation: per floor, a snapshot where every slot keeps at least that share of its
    # negatives (1.0: no down-sampling), the masking-claims model retrained on it per seed
    sampling_ablation_floors: tuple[float, ...] = (1.0,)
    # the model the report's per-slot targets, expert-masking claims and sampling ablation are about
    target_model: str = "camoe"
    claims: ClaimSettings | None = None

    def quick(self) -> ExperimentSettings:
        """``--quick``: the same models and report from two seeds, at most two epochs and 50
        resamples (a smoke run of the whole suite; its intervals are wide and say so)."""
        return replace(self, seeds=self.seeds[:2], epochs=min(self.epochs or 2, 2),
                       bootstrap_resamples=min(self.bootstrap_resamples, 50))


@dataclass(frozen=True)
class AuctionSettings:
    seed: int
    focus_column: str
    serve_focus: Mapping[str, str]      # modality -> focus_state value served
    break_seconds: int
    candidates_per_break: int
    positions: Mapping[str, int]        # modality -> ads served per pod
    max_bid_median: float
    max_bid_sd: float
    pacing_max: float
    trailing_ctr_hours: int
    trailing_ctr_prior: float
    reserve_price: float
    models: tuple[str, ...]
    campaign_column: str = "campaign_id"  # raw-log column the max bid and pacing are drawn per


def parse_evaluation(s: Section, models: Mapping[str, ModelSettings]) -> EvaluationSettings:
    a_positive_number = dict(kind=float, check=positive, expect="a positive number")
    out = EvaluationSettings(
        ece_bins=s.get("ece_bins", int, check=lambda v: v >= 2, expect="an integer >= 2"),
        baseline_model=s.get("baseline_model", **model_name(models)),
        temperature_min=s.get("temperature_min", **a_positive_number),
        temperature_max=s.get("temperature_max", **a_positive_number),
        plots=s.get("plots", bool))
    s.done()
    if out.temperature_min >= out.temperature_max:
        raise s.fail("temperature_min", f"must be below temperature_max ({out.temperature_max})")
    return out


def parse_experiments(s: Section, models: Mapping[str, ModelSettings], default_model: str,
                      taxonomy: Taxonomy) -> ExperimentSettings:
    names = s.str_list("models")
    unknown = [n for n in names if n not in models]
    if unknown:
        raise s.fail("models", f"names unknown model(s) {unknown}; conf/models.yaml defines {list(models)}")
    out = ExperimentSettings(
        models=names, baseline=s.get("baseline", **model_name(models)),
        backend=s.get("backend", check=lambda v: v in TRAINING_BACKENDS + ("local",),
                      expect=f"one of {list(TRAINING_BACKENDS) + ['local']}"),
        num_proc=s.get("num_proc", int, check=positive, expect="a positive integer"),
        epochs=s.get("epochs", int, default=None, check=positive, expect="a positive integer or null"),
        seeds=s.get("seeds", int_list, default=None, check=lambda v: len(set(v)) == len(v),
                    expect="a list of distinct positive integers"),
        bootstrap_resamples=s.get("bootstrap_resamples", int, default=200, check=lambda v: v >= 20,
                                  expect="an integer >= 20"),
        sampling_ablation_floors=s.get("sampling_ablation_floors", rate_list, default=(1.0,),
                                       expect="a non-empty list of distinct rates in (0, 1]"),
        target_model=s.get("target_model", default=default_model, **model_name(models)))
    claims = parse_claims(s.sub("claims", default={}), names, out.baseline, out.target_model, taxonomy)
    s.done()
    if out.baseline not in out.models:
        raise s.fail("baseline", f"must be one of experiments.models {list(out.models)}")
    if out.target_model not in out.models:
        raise s.fail("target_model", f"({out.target_model!r}, default: default_model) must be one of "
                                     f"experiments.models {list(out.models)}")
    return replace(out, claims=claims)


def parse_claims(s: Section, models: tuple[str, ...], baseline: str, target_model: str,
                 taxonomy: Taxonomy) -> ClaimSettings:
    """experiments.claims; without it the target model plays camoe and the baseline baseline,
    the main slots are each modality's first slot and the video modality is ``video`` if any."""
    roles_section = s.sub("roles", default={"camoe": target_model, "baseline": baseline})
    roles = {}
    for role in roles_section.data:
        if role not in CLAIM_ROLES:
            raise roles_section.fail(role, f"is not a claim role; roles: {', '.join(CLAIM_ROLES)}")
        roles[role] = roles_section.get(role, check=lambda v: v in models,
                                        expect=f"one of experiments.models {list(models)}")
    roles_section.done()
    first_of_modality = tuple(taxonomy.slots_of_modality(m)[0] for m in taxonomy.modalities)
    main_slots = s.str_list("main_slots", default=list(first_of_modality))
    unknown = [slot for slot in main_slots if slot not in taxonomy.slots]
    if unknown:
        raise s.fail("main_slots", f"names unknown slot(s) {unknown}; slots.yaml defines {list(taxonomy.slot_names)}")
    default_video = "video" if "video" in taxonomy.modalities else None
    video = s.get("video_modality", default=default_video,
                  check=lambda v: v in taxonomy.modalities, expect=f"one of the modalities {list(taxonomy.modalities)}")
    s.done()
    return ClaimSettings(roles=roles, main_slots=main_slots, video_modality=video)


def parse_auction(s: Section, taxonomy: Taxonomy, models: Mapping[str, ModelSettings]) -> AuctionSettings:
    def per_modality(name: str, kind, check, expect: str) -> dict:
        sub = s.sub(name)
        values = {m: sub.get(m, kind, check=check, expect=expect) for m in taxonomy.modalities}
        sub.done()
        return values

    pos_int = dict(kind=int, check=positive, expect="a positive integer")
    non_negative = dict(kind=float, check=lambda v: v >= 0, expect="a number >= 0")
    out = AuctionSettings(
        seed=s.get("seed", int), focus_column=s.get("focus_column"),
        serve_focus=per_modality("serve_focus", str, None, "a focus value"),
        break_seconds=s.get("break_seconds", **pos_int),
        candidates_per_break=s.get("candidates_per_break", int, check=lambda v: v >= 2, expect="an integer >= 2"),
        positions=per_modality("positions", int, positive, "a positive integer"),
        max_bid_median=s.get("max_bid_median", float, check=positive, expect="a positive number"),
        max_bid_sd=s.get("max_bid_sd", **non_negative), pacing_max=s.get("pacing_max", **non_negative),
        trailing_ctr_hours=s.get("trailing_ctr_hours", **pos_int),
        trailing_ctr_prior=s.get("trailing_ctr_prior", **non_negative),
        reserve_price=s.get("reserve_price", **non_negative),
        models=s.str_list("models"), campaign_column=s.get("campaign_column", default="campaign_id"))
    s.done()
    unknown = [n for n in out.models if n not in models]
    if len(out.models) != 2 or unknown:
        raise s.fail("models", f"must name two models of conf/models.yaml, got {list(out.models)}")
    too_many = {m: n for m, n in out.positions.items() if n >= out.candidates_per_break}
    if too_many:
        raise s.fail("positions", f"must be below candidates_per_break ({out.candidates_per_break}), got {too_many}")
    return out
