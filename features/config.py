"""Load and validate the platform configuration (conf/*.yaml) in one place.

Every YAML file under conf/ contributes top-level sections; ``load_config`` merges them,
applies extra files (whole sections replaced) and ``--set key.path=value`` overrides, then
validates every section into frozen dataclasses. Unknown keys and bad values raise
``ConfigError`` naming the dotted key and the file it came from.
"""
from __future__ import annotations

import copy
import datetime as dt
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from features.slots import SLOT_INPUTS, Taxonomy, parse_taxonomy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF_DIR = Path(os.environ.get("CAMOE_CONF_DIR", PROJECT_ROOT / "conf"))
_MISSING = object()


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


class Section:
    """Reads one mapping of the config, remembering which keys were consumed."""

    def __init__(self, data: Any, path: str, source: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: '{path}' must be a mapping, got {type(data).__name__}")
        self.data, self.path, self.source = dict(data), path, source
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: '{self.key(name)}' {message}")

    def get(self, name: str, kind: Callable[[Any], Any] | type = str, default: Any = _MISSING,
            check: Callable[[Any], bool] | None = None, expect: str = "") -> Any:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise self.fail(name, "is required")
            return default
        raw = self.data[name]
        try:
            value = _coerce(raw, kind)
        except (TypeError, ValueError):
            raise self.fail(name, f"must be {expect or _kind_name(kind)}, got {raw!r}") from None
        if check is not None and not check(value):
            raise self.fail(name, f"must be {expect or 'valid'}, got {raw!r}")
        return value

    def sub(self, name: str, default: Any = _MISSING) -> Section:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise self.fail(name, "is required")
            return Section(default, self.key(name), self.source)
        return Section(self.data[name], self.key(name), self.source)

    def str_list(self, name: str, default: Any = _MISSING) -> tuple[str, ...]:
        self._seen.add(name)
        raw = self.data.get(name, default)
        if raw is _MISSING:
            raise self.fail(name, "is required")
        if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
            raise self.fail(name, f"must be a list of names, got {raw!r}")
        if len(set(raw)) != len(raw):
            raise self.fail(name, f"lists a name twice: {raw!r}")
        return tuple(raw)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise ConfigError(
                f"{self.source}: unknown key(s) {', '.join(repr(self.key(k)) for k in unknown)}"
                f" (allowed: {', '.join(sorted(self._seen))})")


def _kind_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _coerce(raw: Any, kind: Any) -> Any:
    if kind is bool:
        if not isinstance(raw, bool):
            raise TypeError
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise TypeError
        return raw
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise TypeError
        return float(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise TypeError
        return raw
    return kind(raw)


def _positive(v: float) -> bool:
    return v > 0


def _probability(v: float) -> bool:
    return 0.0 <= v <= 1.0


def _rate(v: float) -> bool:
    return 0.0 < v <= 1.0


def _date(raw: Any) -> dt.date:
    if isinstance(raw, dt.date):
        return raw
    return dt.date.fromisoformat(str(raw))


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class StorageSettings:
    warehouse_dir: Path
    metastore_dir: Path
    artifacts_dir: Path
    retain_days: float = 30.0               # Delta time travel kept by jobs/maintain.py (features.upkeep)
    zorder_by: tuple[str, ...] = ("slot",)  # OPTIMIZE ... ZORDER BY, where a table has the column


@dataclass(frozen=True)
class MlflowSettings:
    """MLflow tracking and registry (training/tracking.py); conf/base.yaml's ``mlflow:``."""
    enabled: bool = True
    tracking_uri: str | None = None         # None: sqlite under artifacts_dir/mlflow (MLFLOW_TRACKING_URI wins)
    experiment: str = "camoe"
    registered_model: str = "camoe"         # calibrate_evaluate registers the calibrated model under it
    alias: str = "champion"                 # ... and moves this alias to the version it registered


@dataclass(frozen=True)
class SparkSettings:
    app_name: str
    master: str
    shuffle_partitions: int
    packages: tuple[str, ...]
    conf: Mapping[str, str]


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
    validation_days: int
    test_days: int


@dataclass(frozen=True)
class SamplingSettings:
    seed: int
    rates: Mapping[tuple[str, int], float]   # (slot, label) -> keep probability

    def rate(self, slot: str, label: int) -> float:
        return self.rates[(slot, label)]


@dataclass(frozen=True)
class FeatureSettings:
    min_count: int
    history_days: int
    log1p_dense: tuple[str, ...]


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


MODEL_ARCHITECTURES = ("moe", "wide_deep")
TRAINING_BACKENDS = ("horovod", "torch_distributor")
# where TorchDistributor runs the worker processes: on the driver (local_mode=True), as barrier
# tasks on the executors (local_mode=False), or auto: the driver on a local[*] master, else executors
TORCH_DISTRIBUTOR_PLACES = ("auto", "driver", "executors")
ALM_NORMALIZATIONS = ("paper", "per_task")
SELECTION_METRICS = ("log_loss", "mean_slot_auc_pr")


@dataclass(frozen=True)
class ModelSettings:
    """One entry of conf/models.yaml, defaults applied."""
    name: str
    architecture: str
    grouping: str
    experts: int
    embedding_dim: int
    expert_hidden: tuple[int, ...]
    tower_hidden: tuple[int, ...]
    cross_layers: int
    cross_rank: int
    alm: bool
    task_weights: tuple[float, ...] | None
    train_modalities: tuple[str, ...] | None
    # slot taxonomy attributes fed to the model as categorical inputs (features.slots.SLOT_INPUTS)
    slot_features: tuple[str, ...] = ("slot",)
    alm_normalization: str = "paper"     # paper eq. 2-3 (1/N over examples) or per_task means


@dataclass(frozen=True)
class TrainingSettings:
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    early_stopping_patience: int
    seed: int
    num_proc: int
    backend: str
    reader_workers: int
    shuffle_buffer: int
    mixed_precision: bool
    use_sample_weight: bool
    selection_metric: str = "log_loss"   # best epoch / early stopping on corrected validation scores
    use_gpu: bool = False                 # one GPU per worker process (TorchDistributor's use_gpu)
    torch_distributor_on: str = "auto"    # driver (local_mode=True), executors, or auto (by the master)


@dataclass(frozen=True)
class EvaluationSettings:
    ece_bins: int
    baseline_model: str
    temperature_min: float
    temperature_max: float
    plots: bool


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

    def quick(self) -> ExperimentSettings:
        """``--quick``: the same models and report from two seeds, two epochs and 50 resamples
        (a smoke run of the whole suite; its intervals are wide and say so)."""
        return replace(self, seeds=self.seeds[:2], epochs=2, bootstrap_resamples=min(self.bootstrap_resamples, 50))


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


@dataclass(frozen=True)
class Config:
    project_root: Path
    database: str
    storage: StorageSettings
    spark: SparkSettings
    schema: RawLogSchema
    taxonomy: Taxonomy
    generator: GeneratorSettings | None      # only generate_logs needs it (synthetic logs)
    splits: SplitSettings
    sampling: SamplingSettings
    features: FeatureSettings
    quality: QualitySettings
    models: Mapping[str, ModelSettings]
    default_model: str
    training: TrainingSettings
    evaluation: EvaluationSettings
    experiments: ExperimentSettings | None   # only jobs/experiments.py needs it
    auction: AuctionSettings | None          # only jobs/replay_auction.py needs it
    ingest: IngestSettings                   # empty unless the raw log needs lookups/derived columns
    mlflow: MlflowSettings                   # defaults (the embedded store) unless conf has ``mlflow:``
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def require(self, section: str, job: str, why: str) -> Any:
        """The optional section ``section`` (generator, experiments, auction), or a ConfigError
        saying that ``job`` needs it, for ``why``, and where the default one is."""
        value = getattr(self, section)
        if value is None:
            raise ConfigError(
                f"{job} needs a '{section}:' section ({why}); the configuration read has none. "
                f"Copy the one of {PROJECT_ROOT / 'conf' / OPTIONAL_SECTION_FILES[section]} into your conf "
                "folder, or pass it with --conf FILE")
        return value

    def model(self, name: str | None = None) -> ModelSettings:
        name = name or self.default_model
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}; conf/models.yaml defines: {', '.join(self.models)}")
        return self.models[name]

    def table(self, name: str) -> str:
        """Fully qualified name of a platform table (see features/tables.py)."""
        return f"{self.database}.{name}"


# Sections a log's configuration may leave out: where the project's default one lives.
OPTIONAL_SECTION_FILES = {"generator": "data.yaml", "experiments": "evaluation.yaml",
                          "auction": "evaluation.yaml"}


# ----------------------------------------------------------------------------- loading
def load_config(conf_dir: str | Path | None = None, extra_files: Iterable[str | Path] = (),
                overrides: Iterable[str] = (), project_root: str | Path | None = None) -> Config:
    """Read every ``*.yaml`` in ``conf_dir``, then ``extra_files`` (each top-level section they
    name replaces the earlier one wholesale), then dotted ``key=value`` overrides (YAML values).
    """
    conf_dir = Path(conf_dir) if conf_dir else DEFAULT_CONF_DIR
    if not conf_dir.is_dir():
        raise ConfigError(f"config folder {conf_dir} does not exist (pass --conf-dir DIR or set CAMOE_CONF_DIR)")
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path in sorted(conf_dir.glob("*.yaml")) + [Path(p) for p in extra_files]:
        for key, value in _read_yaml(path).items():
            if key in merged and path.parent == conf_dir:
                raise ConfigError(f"{path}: section '{key}' is also defined in {sources[key]}")
            merged[key], sources[key] = value, str(path)
    for item in overrides:
        _apply_override(merged, sources, item)
    # relative storage paths resolve against the folder holding the conf folder: the checkout
    # for the default conf/, dist/ for a packaged dist/conf (the code may then be in a zip)
    root = Path(project_root) if project_root else conf_dir.resolve().parent
    return parse_config(merged, sources, root)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def _apply_override(merged: dict, sources: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    dotted, raw_value = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = merged
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: '{k}' is not a mapping")
    try:
        node[keys[-1]] = yaml.safe_load(raw_value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc.problem}); quote it, "
                          f"e.g. {dotted}='...'") from None
    sources[keys[0]] = f"{sources.get(keys[0], 'override')} (+ --set {dotted})"


def parse_config(merged: Mapping[str, Any], sources: Mapping[str, str], project_root: Path) -> Config:
    merged = copy.deepcopy(dict(merged))
    allowed = {"database", "storage", "spark", "schema", "slots", "groupings", "default_grouping",
               "generator", "splits", "sampling", "features", "quality", "models",
               "model_defaults", "default_model", "training", "evaluation", "experiments", "auction",
               "ingest", "mlflow"}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        where = "; ".join(f"'{k}' in {sources.get(k, '?')}" for k in unknown)
        raise ConfigError(f"unknown config section(s): {where} (allowed: {', '.join(sorted(allowed))})")

    def src(name: str) -> str:
        return sources.get(name, "conf")

    database = Section({"database": merged.get("database")}, "", src("database")).get(
        "database", check=lambda v: v.isidentifier(), expect="an identifier")
    storage = _parse_storage(Section(merged.get("storage"), "storage", src("storage")), project_root)
    spark = _parse_spark(Section(merged.get("spark"), "spark", src("spark")))
    schema = _parse_schema(Section(merged.get("schema"), "schema", src("schema")))
    taxonomy = parse_taxonomy(merged.get("slots"), merged.get("groupings"),
                              merged.get("default_grouping"), src("slots"), ConfigError)
    generator = None if merged.get("generator") is None else \
        _parse_generator(Section(merged["generator"], "generator", src("generator")), taxonomy)
    splits = _parse_splits(Section(merged.get("splits"), "splits", src("splits")))
    sampling = _parse_sampling(Section(merged.get("sampling"), "sampling", src("sampling")), taxonomy)
    features = _parse_features(Section(merged.get("features"), "features", src("features")), schema)
    quality = _parse_quality(Section(merged.get("quality"), "quality", src("quality")))
    models = _parse_models(merged.get("models"), merged.get("model_defaults"), taxonomy, src("models"))
    default_model = merged.get("default_model")
    if default_model not in models:
        raise ConfigError(f"{src('default_model')}: 'default_model' must be one of {list(models)}, "
                          f"got {default_model!r}")
    training = _parse_training(Section(merged.get("training"), "training", src("training")))
    evaluation = _parse_evaluation(Section(merged.get("evaluation"), "evaluation", src("evaluation")), models)
    experiments = None if merged.get("experiments") is None else _parse_experiments(
        Section(merged["experiments"], "experiments", src("experiments")), models, default_model)
    auction = None if merged.get("auction") is None else \
        _parse_auction(Section(merged["auction"], "auction", src("auction")), taxonomy, models)
    ingest = IngestSettings() if merged.get("ingest") is None else \
        _parse_ingest(Section(merged["ingest"], "ingest", src("ingest")), schema, project_root)
    mlflow = MlflowSettings() if merged.get("mlflow") is None else \
        _parse_mlflow(Section(merged["mlflow"], "mlflow", src("mlflow")))
    return Config(project_root, database, storage, spark, schema, taxonomy, generator, splits,
                  sampling, features, quality, models, default_model, training, evaluation, experiments,
                  auction, ingest, mlflow, raw=merged)


def _alias_name(value: str) -> bool:
    """MLflow's rule: an alias is not a version reference (v1, latest)."""
    return re.fullmatch(r"[A-Za-z_][\w-]*", value) is not None and value.lower() != "latest" and \
        re.fullmatch(r"[vV]\d+", value) is None


def _parse_mlflow(s: Section) -> MlflowSettings:
    def name(key: str, default):
        return s.get(key, default=default, check=lambda v: bool(v.strip()), expect="a non-empty name")
    out = MlflowSettings(s.get("enabled", bool, default=True), s.get("tracking_uri", default=None),
                         name("experiment", "camoe"), name("registered_model", "camoe"),
                         s.get("alias", default="champion", check=_alias_name,
                               expect="an alias name (letters, digits, _ or -; not 'latest' or a version like v1)"))
    s.done()
    return out


def _parse_storage(s: Section, root: Path) -> StorageSettings:
    def path(name: str) -> Path:
        p = Path(s.get(name))
        return p if p.is_absolute() else (root / p)
    out = StorageSettings(path("warehouse_dir"), path("metastore_dir"), path("artifacts_dir"),
                          s.get("retain_days", float, default=30.0, check=lambda v: v >= 0,
                                expect="a number of days >= 0"),
                          s.str_list("zorder_by", default=["slot"]))
    s.done()
    return out


def _parse_ingest(s: Section, schema: RawLogSchema, root: Path) -> IngestSettings:
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


def _parse_spark(s: Section) -> SparkSettings:
    conf = s.sub("conf", default={})
    out = SparkSettings(
        app_name=s.get("app_name"),
        master=s.get("master"),
        shuffle_partitions=s.get("shuffle_partitions", int, check=_positive, expect="a positive integer"),
        packages=s.str_list("packages", default=[]),
        conf={str(k): str(v) for k, v in conf.data.items()},
    )
    s.done()
    return out


def _parse_schema(s: Section) -> RawLogSchema:
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


def _parse_generator(s: Section, taxonomy: Taxonomy) -> GeneratorSettings:
    slots_section = s.sub("slots")
    slots: dict[str, SlotGeneratorSettings] = {}
    for slot in slots_section.data:
        if slot not in taxonomy.slots:
            raise slots_section.fail(slot, f"is not a slot of the taxonomy ({', '.join(taxonomy.slot_names)})")
        one = slots_section.sub(slot)
        slots[slot] = SlotGeneratorSettings(
            share=one.get("share", float, check=_positive, expect="a positive number"),
            base_ctr=one.get("base_ctr", float, check=lambda v: 0 < v < 1, expect="in (0, 1)"),
            in_focus_share=one.get("in_focus_share", float, check=_probability, expect="in [0, 1]"))
        one.done()
    slots_section.done()
    total = sum(v.share for v in slots.values())
    if abs(total - 1.0) > 1e-6:
        raise slots_section.fail("*.share", f"must sum to 1, got {total:.6f}")
    effects_section = s.sub("effects")
    effects = {name: effects_section.get(name, float) for name in GENERATOR_EFFECTS if name != "attention_share"}
    effects["attention_share"] = effects_section.get("attention_share", float, check=_probability,
                                                     expect="in [0, 1]")
    effects_section.done()
    pos_int = dict(kind=int, check=_positive, expect="a positive integer")
    out = GeneratorSettings(
        start_date=s.get("start_date", _date, expect="an ISO date (YYYY-MM-DD)"),
        days=s.get("days", **pos_int), rows_per_day=s.get("rows_per_day", **pos_int),
        seed=s.get("seed", int), num_users=s.get("num_users", **pos_int),
        num_ads=s.get("num_ads", **pos_int), num_advertisers=s.get("num_advertisers", **pos_int),
        num_advertiser_categories=s.get("num_advertiser_categories", **pos_int),
        slots=slots,
        in_focus_ctr_multiplier=s.get("in_focus_ctr_multiplier", float, check=_positive,
                                      expect="a positive number"),
        effects=effects)
    s.done()
    return out


def _parse_splits(s: Section) -> SplitSettings:
    out = SplitSettings(
        validation_days=s.get("validation_days", int, check=_positive, expect="a positive integer"),
        test_days=s.get("test_days", int, check=_positive, expect="a positive integer"))
    s.done()
    return out


def _parse_sampling(s: Section, taxonomy: Taxonomy) -> SamplingSettings:
    def label_rates(section: Section, base: Mapping[int, float]) -> dict[int, float]:
        rates = {
            1: section.get("positive", float, default=base.get(1), check=_rate, expect="in (0, 1]"),
            0: section.get("negative", float, default=base.get(0), check=_rate, expect="in (0, 1]"),
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


def _parse_features(s: Section, schema: RawLogSchema) -> FeatureSettings:
    out = FeatureSettings(
        min_count=s.get("min_count", int, check=_positive, expect="a positive integer"),
        history_days=s.get("history_days", int, check=_positive, expect="a positive integer"),
        log1p_dense=s.str_list("log1p_dense", default=[]))
    s.done()
    for name in out.log1p_dense:
        if name not in schema.dense:
            raise s.fail("log1p_dense", f"names {name!r}, which is not in schema.dense")
    return out


def _parse_quality(s: Section) -> QualitySettings:
    bounds = s.sub("positive_rate_bounds")
    lo = bounds.get("min", float, check=_probability, expect="in [0, 1]")
    hi = bounds.get("max", float, check=_probability, expect="in [0, 1]")
    bounds.done()
    if lo > hi:
        raise bounds.fail("min", f"({lo}) must not exceed max ({hi})")
    out = QualitySettings(
        raw_max_bad_fraction=s.get("raw_max_bad_fraction", float, check=_probability, expect="in [0, 1]"),
        min_rows_per_day=s.get("min_rows_per_day", int, check=lambda v: v >= 0, expect="a count >= 0"),
        positive_rate_min=lo, positive_rate_max=hi,
        dense_abs_max=s.get("dense_abs_max", float, check=_positive, expect="a positive number"))
    s.done()
    return out


def _int_list(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(i, int) and not isinstance(i, bool)
                                                   and i > 0 for i in v):
        raise ValueError
    return tuple(v)


def _rate_list(v: Any) -> tuple[float, ...]:
    if not isinstance(v, list) or not v or len(set(v)) != len(v) or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 1 for r in v):
        raise ValueError
    return tuple(float(r) for r in v)


def _parse_models(models: Any, defaults: Any, taxonomy: Taxonomy, source: str) -> dict[str, ModelSettings]:
    if not isinstance(models, Mapping) or not models:
        raise ConfigError(f"{source}: 'models' must be a non-empty mapping of name -> settings")
    defaults = Section(defaults or {}, "model_defaults", source)
    parsed = {}
    for name, overrides in models.items():
        merged = {**defaults.data, **(overrides or {})}
        s = Section(merged, f"models.{name}", source)
        pos = dict(kind=int, check=_positive, expect="a positive integer")
        arch = s.get("architecture", check=lambda v: v in MODEL_ARCHITECTURES,
                     expect=f"one of {list(MODEL_ARCHITECTURES)}")
        grouping = s.get("grouping", check=lambda v: v in taxonomy.groupings,
                         expect=f"a grouping of conf/slots.yaml ({', '.join(taxonomy.groupings)})")
        weights = s.get("task_weights", lambda v: tuple(float(x) for x in v), default=None,
                        expect="a list of numbers")
        modalities = s.get("train_modalities", lambda v: tuple(v), default=None, expect="a list")
        if modalities is not None and not set(modalities) <= set(taxonomy.modalities):
            raise s.fail("train_modalities", f"must be among {list(taxonomy.modalities)}, got {list(modalities)}")
        settings = ModelSettings(
            name=name, architecture=arch, grouping=grouping, experts=s.get("experts", **pos),
            embedding_dim=s.get("embedding_dim", **pos),
            expert_hidden=s.get("expert_hidden", _int_list, expect="a list of positive integers"),
            tower_hidden=s.get("tower_hidden", _int_list, expect="a list of positive integers"),
            cross_layers=s.get("cross_layers", int, check=lambda v: v >= 0, expect="an integer >= 0"),
            cross_rank=s.get("cross_rank", **pos), alm=s.get("alm", bool),
            task_weights=weights, train_modalities=modalities,
            slot_features=s.str_list("slot_features", default=["slot"]),
            alm_normalization=s.get("alm_normalization", default="paper",
                                    check=lambda v: v in ALM_NORMALIZATIONS,
                                    expect=f"one of {list(ALM_NORMALIZATIONS)}"))
        bad = [f for f in settings.slot_features if f not in SLOT_INPUTS]
        if bad:
            raise s.fail("slot_features", f"names {bad}; allowed: {list(SLOT_INPUTS)}")
        s.done()
        tasks = taxonomy.grouping(grouping).num_tasks
        if weights is not None and len(weights) != tasks:
            raise s.fail("task_weights", f"needs {tasks} weights for grouping {grouping!r}, got {len(weights)}")
        parsed[name] = settings
    return parsed


def _parse_training(s: Section) -> TrainingSettings:
    pos = dict(kind=int, check=_positive, expect="a positive integer")
    out = TrainingSettings(
        batch_size=s.get("batch_size", **pos), epochs=s.get("epochs", **pos),
        learning_rate=s.get("learning_rate", float, check=_positive, expect="a positive number"),
        weight_decay=s.get("weight_decay", float, check=lambda v: v >= 0, expect="a number >= 0"),
        warmup_steps=s.get("warmup_steps", int, check=lambda v: v >= 0, expect="an integer >= 0"),
        min_lr_ratio=s.get("min_lr_ratio", float, check=_probability, expect="in [0, 1]"),
        early_stopping_patience=s.get("early_stopping_patience", **pos),
        seed=s.get("seed", int), num_proc=s.get("num_proc", **pos),
        backend=s.get("backend", check=lambda v: v in TRAINING_BACKENDS,
                      expect=f"one of {list(TRAINING_BACKENDS)}"),
        reader_workers=s.get("reader_workers", **pos),
        shuffle_buffer=s.get("shuffle_buffer", int, check=lambda v: v >= 0, expect="an integer >= 0"),
        mixed_precision=s.get("mixed_precision", bool),
        use_sample_weight=s.get("use_sample_weight", bool),
        selection_metric=s.get("selection_metric", default="log_loss", check=lambda v: v in SELECTION_METRICS,
                               expect=f"one of {list(SELECTION_METRICS)}"),
        use_gpu=s.get("use_gpu", bool, default=False),
        torch_distributor_on=s.get("torch_distributor_on", default="auto",
                                   check=lambda v: v in TORCH_DISTRIBUTOR_PLACES,
                                   expect=f"one of {list(TORCH_DISTRIBUTOR_PLACES)}"))
    s.done()
    return out


def _model_name(models: Mapping[str, ModelSettings]) -> dict:
    return dict(check=lambda v: v in models, expect=f"a model of conf/models.yaml ({', '.join(models)})")


def _parse_evaluation(s: Section, models: Mapping[str, ModelSettings]) -> EvaluationSettings:
    positive = dict(kind=float, check=_positive, expect="a positive number")
    out = EvaluationSettings(
        ece_bins=s.get("ece_bins", int, check=lambda v: v >= 2, expect="an integer >= 2"),
        baseline_model=s.get("baseline_model", **_model_name(models)),
        temperature_min=s.get("temperature_min", **positive), temperature_max=s.get("temperature_max", **positive),
        plots=s.get("plots", bool))
    s.done()
    if out.temperature_min >= out.temperature_max:
        raise s.fail("temperature_min", f"must be below temperature_max ({out.temperature_max})")
    return out


def _parse_experiments(s: Section, models: Mapping[str, ModelSettings], default_model: str) -> ExperimentSettings:
    names = s.str_list("models")
    unknown = [n for n in names if n not in models]
    if unknown:
        raise s.fail("models", f"names unknown model(s) {unknown}; conf/models.yaml defines {list(models)}")
    out = ExperimentSettings(
        models=names, baseline=s.get("baseline", **_model_name(models)),
        backend=s.get("backend", check=lambda v: v in TRAINING_BACKENDS + ("local",),
                      expect=f"one of {list(TRAINING_BACKENDS) + ['local']}"),
        num_proc=s.get("num_proc", int, check=_positive, expect="a positive integer"),
        epochs=s.get("epochs", int, default=None, check=_positive, expect="a positive integer or null"),
        seeds=s.get("seeds", _int_list, default=None, check=lambda v: len(set(v)) == len(v),
                    expect="a list of distinct positive integers"),
        bootstrap_resamples=s.get("bootstrap_resamples", int, default=200, check=lambda v: v >= 20,
                                  expect="an integer >= 20"),
        sampling_ablation_floors=s.get("sampling_ablation_floors", _rate_list, default=(1.0,),
                                       expect="a non-empty list of distinct rates in (0, 1]"),
        target_model=s.get("target_model", default=default_model, **_model_name(models)))
    s.done()
    if out.baseline not in out.models:
        raise s.fail("baseline", f"must be one of experiments.models {list(out.models)}")
    if out.target_model not in out.models:
        raise s.fail("target_model", f"({out.target_model!r}, default: default_model) must be one of "
                                     f"experiments.models {list(out.models)}")
    return out


def _parse_auction(s: Section, taxonomy: Taxonomy, models: Mapping[str, ModelSettings]) -> AuctionSettings:
    def per_modality(name: str, kind, check, expect: str) -> dict:
        sub = s.sub(name)
        values = {m: sub.get(m, kind, check=check, expect=expect) for m in taxonomy.modalities}
        sub.done()
        return values

    pos_int = dict(kind=int, check=_positive, expect="a positive integer")
    non_negative = dict(kind=float, check=lambda v: v >= 0, expect="a number >= 0")
    out = AuctionSettings(
        seed=s.get("seed", int), focus_column=s.get("focus_column"),
        serve_focus=per_modality("serve_focus", str, None, "a focus value"),
        break_seconds=s.get("break_seconds", **pos_int),
        candidates_per_break=s.get("candidates_per_break", int, check=lambda v: v >= 2, expect="an integer >= 2"),
        positions=per_modality("positions", int, _positive, "a positive integer"),
        max_bid_median=s.get("max_bid_median", float, check=_positive, expect="a positive number"),
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
