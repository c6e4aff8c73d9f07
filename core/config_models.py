"""The model and training sections of the configuration (conf/models.yaml, conf/training.yaml):
read by training/."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.slots import SLOT_INPUTS, Taxonomy
from core.validation import ConfigError, Section, int_list, positive, probability

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
    # slot taxonomy attributes fed to the model as categorical inputs (core.slots.SLOT_INPUTS)
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


def parse_models(models: Any, defaults: Any, taxonomy: Taxonomy, source: str) -> dict[str, ModelSettings]:
    if not isinstance(models, Mapping) or not models:
        raise ConfigError(f"{source}: 'models' must be a non-empty mapping of name -> settings")
    defaults = Section(defaults or {}, "model_defaults", source)
    parsed = {}
    for name, overrides in models.items():
        merged = {**defaults.data, **(overrides or {})}
        s = Section(merged, f"models.{name}", source)
        pos = dict(kind=int, check=positive, expect="a positive integer")
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
            expert_hidden=s.get("expert_hidden", int_list, expect="a list of positive integers"),
            tower_hidden=s.get("tower_hidden", int_list, expect="a list of positive integers"),
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


def parse_training(s: Section) -> TrainingSettings:
    pos = dict(kind=int, check=positive, expect="a positive integer")
    out = TrainingSettings(
        batch_size=s.get("batch_size", **pos), epochs=s.get("epochs", **pos),
        learning_rate=s.get("learning_rate", float, check=positive, expect="a positive number"),
        weight_decay=s.get("weight_decay", float, check=lambda v: v >= 0, expect="a number >= 0"),
        warmup_steps=s.get("warmup_steps", int, check=lambda v: v >= 0, expect="an integer >= 0"),
        min_lr_ratio=s.get("min_lr_ratio", float, check=probability, expect="in [0, 1]"),
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


def model_name(models: Mapping[str, ModelSettings]) -> dict:
    return dict(check=lambda v: v in models, expect=f"a model of conf/models.yaml ({', '.join(models)})")
