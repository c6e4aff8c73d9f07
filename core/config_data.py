"""The data sections of the configuration (conf/schema.yaml, conf/data.yaml, the optional
``ingest:``): read by features/ (generator, build, quality gate, ingest)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.slots import Taxonomy
from core.validation import Section, iso_date, positive, probability, rate


@dataclass(frozen=True)
class RawLogSchema:
    """Which raw-log column plays which role; see conf/schema.yaml."""
    id: str
    timestamp: str
    date: str
    slot: str
    label: str
    user: str
    ad: str
    categorical: tuple[str, ...]
    dense: tuple[str, ...]
    passthrough: tuple[str, ...]
    allow_extra_columns: bool

    @property
    def required_columns(self) -> tuple[str, ...]:
        roles = (self.id, self.timestamp, self.date, self.slot, self.label, self.user, self.ad)
        return tuple(dict.fromkeys(roles + self.categorical + self.dense))


@dataclass(frozen=True)
class SlotGeneratorSettings:
    share: float
    base_ctr: float
    in_focus_share: float


@dataclass(frozen=True)
class GeneratorSettings:
    start_date: dt.date
    days: int
    rows_per_day: int
    seed: int
    num_users: int
    num_ads: int
    num_advertisers: int
    num_advertiser_categories: int
    slots: Mapping[str, SlotGeneratorSettings]
    in_focus_ctr_multiplier: float
    effects: Mapping[str, float]


GENERATOR_EFFECTS = ("headphones_audio", "headphones_video", "big_screen_audio", "big_screen_video",
                     "evening_audio", "evening_video", "audio_cross", "video_cross", "user_category_affinity",
                     "content_podcast", "ad_quality_sd", "session_fatigue", "attention", "attention_share")


@dataclass(frozen=True)
class SplitSettings:
    """A training window's days, counted back from its end date (core.training_sets.TrainingWindow)."""
    train_days: int
    validation_days: int
    test_days: int


@dataclass(frozen=True)
class SamplingSettings:
    seed: int
    rates: Mapping[tuple[str, int], float]   # (slot, label) -> keep probability

    def rate(self, slot: str, label: int) -> float:
        return self.rates[(slot, label)]


MAX_CATEGORICAL_ID = 2 ** 31 - 1          # the feature table's cat_* ids are ints


@dataclass(frozen=True)
class FeatureSettings:
    min_count: int
    history_days: int
    log1p_dense: tuple[str, ...]
    # categorical column -> (capacity, hash_buckets): features/vocabulary.py's own ids, then buckets
    vocabulary_caps: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class QualitySettings:
    raw_max_bad_fraction: float
    min_rows_per_day: int
    positive_rate_min: float
    positive_rate_max: float
    dense_abs_max: float


RAW_SOURCE_FORMATS = ("parquet", "csv", "json", "delta")     # what jobs/ingest.py reads


@dataclass(frozen=True)
class Lookup:
    """A dimension table jobs/ingest.py joins to the raw rows by ``key`` before typing them (ad
    metadata, user attributes): a path (resolved like storage paths) or, for delta, a table name."""
    name: str
    location: str
    format: str
    options: Mapping[str, str]
    key: tuple[str, ...]            # YAML reads a key named "on" as true


@dataclass(frozen=True)
class IngestSettings:
    """How jobs/ingest.py turns a raw log into the schema's columns (the optional ``ingest:``).

    ``derived`` maps a schema column to a Spark SQL expression over the raw (and looked-up)
    columns, evaluated in order (a later one may use an earlier one). When either is set, the
    ingest keeps exactly the schema's columns: the source's others were inputs."""
    lookups: tuple[Lookup, ...] = ()
    derived: Mapping[str, str] = field(default_factory=dict)
    source: str = "conf"                      # the file it came from, for error messages

    @property
    def reshapes(self) -> bool:
        return bool(self.lookups or self.derived)


def parse_schema(s: Section) -> RawLogSchema:
    out = RawLogSchema(
        id=s.get("id"), timestamp=s.get("timestamp"), date=s.get("date"), slot=s.get("slot"),
        label=s.get("label"), user=s.get("user"), ad=s.get("ad"),
        categorical=s.str_list("categorical"), dense=s.str_list("dense", default=[]),
        passthrough=s.str_list("passthrough", default=[]),
        allow_extra_columns=s.get("allow_extra_columns", bool, default=False),
    )
    s.done()
    roles = {"id": out.id, "timestamp": out.timestamp, "date": out.date, "slot": out.slot,
             "label": out.label}
    for name, column in roles.items():
        if column in out.categorical or column in out.dense:
            raise s.fail(name, f"column {column!r} cannot also be a categorical or dense feature")
    both = set(out.categorical) & set(out.dense)
    if both:
        raise s.fail("dense", f"lists column(s) {sorted(both)} that are also categorical")
    return out


def parse_generator(s: Section, taxonomy: Taxonomy) -> GeneratorSettings:
    slots_section = s.sub("slots")
    slots: dict[str, SlotGeneratorSettings] = {}
    for slot in slots_section.data:
        if slot not in taxonomy.slots:
            raise slots_section.fail(slot, f"is not a slot of the taxonomy ({', '.join(taxonomy.slot_names)})")
        one = slots_section.sub(slot)
        slots[slot] = SlotGeneratorSettings(
            share=one.get("share", float, check=positive, expect="a positive number"),
            base_ctr=one.get("base_ctr", float, check=lambda v: 0 < v < 1, expect="in (0, 1)"),
            in_focus_share=one.get("in_focus_share", float, check=probability, expect="in [0, 1]"))
        one.done()
    slots_section.done()
    total = sum(v.share for v in slots.values())
    if abs(total - 1.0) > 1e-6:
        raise slots_section.fail("*.share", f"must sum to 1, got {total:.6f}")
    effects_section = s.sub("effects")
    effects = {name: effects_section.get(name, float) for name in GENERATOR_EFFECTS if name != "attention_share"}
    effects["attention_share"] = effects_section.get("attention_share", float, check=probability,
                                                     expect="in [0, 1]")
    effects_section.done()
    pos_int = dict(kind=int, check=positive, expect="a positive integer")
    out = GeneratorSettings(
        start_date=s.get("start_date", iso_date, expect="an ISO date (YYYY-MM-DD)"),
        days=s.get("days", **pos_int), rows_per_day=s.get("rows_per_day", **pos_int),
        seed=s.get("seed", int), num_users=s.get("num_users", **pos_int),
        num_ads=s.get("num_ads", **pos_int), num_advertisers=s.get("num_advertisers", **pos_int),
        num_advertiser_categories=s.get("num_advertiser_categories", **pos_int),
        slots=slots,
        in_focus_ctr_multiplier=s.get("in_focus_ctr_multiplier", float, check=positive,
                                      expect="a positive number"),
        effects=effects)
    s.done()
    return out


def parse_splits(s: Section) -> SplitSettings:
    out = SplitSettings(
        train_days=s.get("train_days", int, check=positive, expect="a positive integer"),
        validation_days=s.get("validation_days", int, check=positive, expect="a positive integer"),
        test_days=s.get("test_days", int, check=positive, expect="a positive integer"))
    s.done()
    return out


def parse_sampling(s: Section, taxonomy: Taxonomy) -> SamplingSettings:
    def label_rates(section: Section, base: Mapping[int, float]) -> dict[int, float]:
        rates = {
            1: section.get("positive", float, default=base.get(1), check=rate, expect="in (0, 1]"),
            0: section.get("negative", float, default=base.get(0), check=rate, expect="in (0, 1]"),
        }
        section.done()
        return rates

    default = label_rates(s.sub("default"), {})
    per_slot = s.sub("slots", default={})
    rates: dict[tuple[str, int], float] = {}
    for slot in per_slot.data:
        if slot not in taxonomy.slots:
            raise per_slot.fail(slot, f"is not a slot of the taxonomy ({', '.join(taxonomy.slot_names)})")
    for slot in taxonomy.slot_names:
        slot_rates = label_rates(per_slot.sub(slot, default={}), default) if slot in per_slot.data \
            else default
        per_slot._seen.add(slot)
        rates.update({(slot, label): rate for label, rate in slot_rates.items()})
    per_slot.done()
    out = SamplingSettings(seed=s.get("seed", int), rates=rates)
    s.done()
    return out


def parse_features(s: Section, schema: RawLogSchema) -> FeatureSettings:
    out = FeatureSettings(
        min_count=s.get("min_count", int, check=positive, expect="a positive integer"),
        history_days=s.get("history_days", int, check=positive, expect="a positive integer"),
        log1p_dense=s.str_list("log1p_dense", default=[]),
        vocabulary_caps=_parse_vocabulary_caps(s.sub("vocabulary_caps", default={}), schema))
    s.done()
    for name in out.log1p_dense:
        if name not in schema.dense:
            raise s.fail("log1p_dense", f"names {name!r}, which is not in schema.dense")
    return out


def _parse_vocabulary_caps(s: Section, schema: RawLogSchema) -> dict[str, tuple[int, int]]:
    caps = {}
    pos_int = dict(kind=int, check=positive, expect="a positive integer")
    for name in s.data:
        if name not in schema.categorical:
            raise s.fail(str(name), f"is not a categorical column of the schema ({', '.join(schema.categorical)})")
        one = s.sub(name)
        caps[name] = (one.get("capacity", **pos_int), one.get("hash_buckets", **pos_int))
        one.done()
        if sum(caps[name]) > MAX_CATEGORICAL_ID:
            raise one.fail("capacity", f"+ hash_buckets must be at most 2^31 - 1 (ids are ints), got {caps[name]}")
    s.done()
    return caps


def parse_quality(s: Section) -> QualitySettings:
    bounds = s.sub("positive_rate_bounds")
    lo = bounds.get("min", float, check=probability, expect="in [0, 1]")
    hi = bounds.get("max", float, check=probability, expect="in [0, 1]")
    bounds.done()
    if lo > hi:
        raise bounds.fail("min", f"({lo}) must not exceed max ({hi})")
    out = QualitySettings(
        raw_max_bad_fraction=s.get("raw_max_bad_fraction", float, check=probability, expect="in [0, 1]"),
        min_rows_per_day=s.get("min_rows_per_day", int, check=lambda v: v >= 0, expect="a count >= 0"),
        positive_rate_min=lo, positive_rate_max=hi,
        dense_abs_max=s.get("dense_abs_max", float, check=positive, expect="a positive number"))
    s.done()
    return out


def parse_ingest(s: Section, schema: RawLogSchema, root: Path) -> IngestSettings:
    lookups = []
    for name, raw in s.sub("lookups", default={}).data.items():
        ls = Section(raw, s.key(f"lookups.{name}"), s.source)
        fmt = ls.get("format", check=lambda v: v in RAW_SOURCE_FORMATS, expect=f"one of {RAW_SOURCE_FORMATS}")
        location = ls.get("source")
        is_table = fmt == "delta" and "/" not in location
        if not (is_table or "://" in location or Path(location).is_absolute()):
            location = str(root / location)
        options = {str(k): str(v) for k, v in ls.sub("options", default={}).data.items()}
        lookups.append(Lookup(str(name), location, fmt, options, ls.str_list("key")))
        ls.done()
    derived = s.sub("derived", default={})
    for column, expression in derived.data.items():
        if not isinstance(expression, str) or not expression.strip():
            raise derived.fail(str(column), f"must be a Spark SQL expression, got {expression!r}")
    declared = set(schema.required_columns) | set(schema.passthrough)
    unknown = sorted(set(derived.data) - declared)
    if unknown:
        raise derived.fail(unknown[0], "is not a column of the schema (derived columns must be "
                                       "schema columns: the ingest keeps only those)")
    out = IngestSettings(tuple(lookups), dict(derived.data), s.source)
    s.done()
    return out
