"""Load and validate the platform configuration (conf/*.yaml) in one place.

Every YAML file under conf/ contributes top-level sections; ``load_config`` merges them,
applies extra files (whole sections replaced) and ``--set key.path=value`` overrides, then
validates every section into frozen dataclasses. Unknown keys and bad values raise
``ConfigError`` naming the dotted key and the file it came from (core/validation.py).

The sections live with their consumers' concerns: the platform's (storage, Spark, MLflow) here,
the data sections in core/config_data.py, models and training in core/config_models.py,
evaluation, experiments and the auction in core/config_evaluation.py.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config_data import (
    FeatureSettings,
    GeneratorSettings,
    IngestSettings,
    QualitySettings,
    RawLogSchema,
    SamplingSettings,
    SplitSettings,
    parse_features,
    parse_generator,
    parse_ingest,
    parse_quality,
    parse_sampling,
    parse_schema,
    parse_splits,
)
from core.config_evaluation import (
    AuctionSettings,
    EvaluationSettings,
    ExperimentSettings,
    parse_auction,
    parse_evaluation,
    parse_experiments,
)
from core.config_models import ModelSettings, TrainingSettings, parse_models, parse_training
from core.slots import Taxonomy, parse_taxonomy
from core.validation import ConfigError, Section, positive

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF_DIR = Path(os.environ.get("CAMOE_CONF_DIR", PROJECT_ROOT / "conf"))


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
        """Fully qualified name of a platform table (see core/tables.py)."""
        return f"{self.database}.{name}"


# Sections a log's configuration may leave out: where the project's default one lives.
OPTIONAL_SECTION_FILES = {"generator": "data.yaml", "experiments": "evaluation.yaml",
                          "auction": "evaluation.yaml"}


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


# Mappings whose keys are dotted names (Spark's settings): ``--set spark.conf.spark.sql.x=1``
# sets the key ``spark.sql.x`` of ``spark.conf``, not a nested ``spark: {sql: {x: 1}}``
FLAT_KEY_MAPPINGS = (("spark", "conf"),)


def _apply_override(merged: dict, sources: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    dotted, raw_value = item.split("=", 1)
    keys = dotted.strip().split(".")
    for section in FLAT_KEY_MAPPINGS:                  # their keys hold dots: the rest is one key
        if tuple(keys[:len(section)]) == section and len(keys) > len(section):
            keys = [*section, ".".join(keys[len(section):])]
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
    schema = parse_schema(Section(merged.get("schema"), "schema", src("schema")))
    taxonomy = parse_taxonomy(merged.get("slots"), merged.get("groupings"),
                              merged.get("default_grouping"), src("slots"), ConfigError)
    generator = None if merged.get("generator") is None else \
        parse_generator(Section(merged["generator"], "generator", src("generator")), taxonomy)
    splits = parse_splits(Section(merged.get("splits"), "splits", src("splits")))
    sampling = parse_sampling(Section(merged.get("sampling"), "sampling", src("sampling")), taxonomy)
    features = parse_features(Section(merged.get("features"), "features", src("features")), schema)
    quality = parse_quality(Section(merged.get("quality"), "quality", src("quality")))
    models = parse_models(merged.get("models"), merged.get("model_defaults"), taxonomy, src("models"))
    default_model = merged.get("default_model")
    if default_model not in models:
        raise ConfigError(f"{src('default_model')}: 'default_model' must be one of {list(models)}, "
                          f"got {default_model!r}")
    training = parse_training(Section(merged.get("training"), "training", src("training")))
    evaluation = parse_evaluation(Section(merged.get("evaluation"), "evaluation", src("evaluation")), models)
    experiments = None if merged.get("experiments") is None else parse_experiments(
        Section(merged["experiments"], "experiments", src("experiments")), models, default_model, taxonomy)
    auction = None if merged.get("auction") is None else \
        parse_auction(Section(merged["auction"], "auction", src("auction")), taxonomy, models)
    ingest = IngestSettings() if merged.get("ingest") is None else \
        parse_ingest(Section(merged["ingest"], "ingest", src("ingest")), schema, project_root)
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


def _parse_spark(s: Section) -> SparkSettings:
    conf = s.sub("conf", default={})
    for key, value in conf.data.items():
        if isinstance(value, (dict, list)) or value is None:
            raise conf.fail(str(key), f"must be one Spark setting's value (a string or number), got {value!r}: "
                                      "write the setting's name whole, e.g. spark.sql.shuffle.partitions: 400")
    out = SparkSettings(
        app_name=s.get("app_name"),
        master=s.get("master"),
        shuffle_partitions=s.get("shuffle_partitions", int, check=positive, expect="a positive integer"),
        packages=s.str_list("packages", default=[]),
        conf={str(k): str(v) for k, v in conf.data.items()},
    )
    s.done()
    return out
